package index

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"fhirbucket/fhirstore"
	"fhirbucket/internal/layout"
	"fhirbucket/storage"
)

// ProblemStaleEntry is the fhirstore.Problem kind of an index entry that
// names a version which is not the visible current version of its
// resource, or which that version does not carry.
const ProblemStaleEntry = "stale-index-entry"

// Check walks the tenant's identifier index and reports every stale
// entry; with repair it deletes them. An entry is stale when its version
// exists (it is at most the resource's highest version) and is not the
// visible current one — an older version, a deleted resource, a version
// of an aborted transaction — or is the current one but not among the
// keys its content needs. An entry of a version above the highest one is
// left alone: it may belong to a write in flight, whose entries are
// written before its version claim lands; lookups verify it away
// meanwhile. Stale entries never make a lookup answer wrongly (every
// candidate is verified); they cost a GET per lookup until removed.
//
// Cost: 1 LIST per 1,000 index objects, 1 GET per distinct resource named
// (plus hidden versions), 1 DELETE per stale entry repaired.
func (ix *Index) Check(ctx context.Context, tenant string, repair bool) ([]fhirstore.Problem, error) {
	b, err := ix.store.TenantBucket(tenant)
	if err != nil {
		return nil, err
	}
	type resource struct{ typ, id string }
	byRes := map[resource][]layout.IdentifierEntry{}
	var order []resource
	for a, err := range storage.Walk(ctx, b, storage.ListOptions{Prefix: layout.IdentifierPrefix}) {
		if err != nil {
			return nil, fmt.Errorf("index: listing %s: %w", layout.IdentifierPrefix, err)
		}
		e, ok := layout.ParseIdentifierEntry(a.Key)
		if !ok {
			continue // claims and markers
		}
		r := resource{e.Type, e.ID}
		if _, seen := byRes[r]; !seen {
			order = append(order, r)
		}
		byRes[r] = append(byRes[r], e)
	}
	var mu sync.Mutex
	var out []fhirstore.Problem
	err = forEach(ctx, ix.par, len(order), func(ctx context.Context, i int) error {
		r := order[i]
		h, err := ix.store.Head(ctx, tenant, r.typ, r.id)
		if err != nil {
			return fmt.Errorf("index: reading %s/%s: %w", r.typ, r.id, err)
		}
		var want []string
		if h.Visible != nil && !h.Visible.Deleted() {
			want = entryKeys(r.typ, r.id, h.Visible.Version, Identifiers(h.Visible.Content))
		}
		for _, e := range byRes[r] {
			if e.Version > h.Base {
				continue // a write in flight, or one that never claimed its version
			}
			current := h.Visible != nil && e.Version == h.Visible.Version
			if current && slices.Contains(want, e.Key()) {
				continue
			}
			p := fhirstore.Problem{Kind: ProblemStaleEntry, Key: e.Key()}
			switch {
			case h.Visible == nil:
				p.Detail = fmt.Sprintf("%s/%s has no visible version (version %d is hidden)", r.typ, r.id, e.Version)
			case h.Visible.Deleted():
				p.Detail = fmt.Sprintf("%s/%s is deleted (version %d); the entry names version %d", r.typ, r.id, h.Visible.Version, e.Version)
			case current:
				p.Detail = fmt.Sprintf("version %d of %s/%s does not carry this identifier", e.Version, r.typ, r.id)
			default:
				p.Detail = fmt.Sprintf("the entry names version %d of %s/%s; the current version is %d", e.Version, r.typ, r.id, h.Visible.Version)
			}
			if repair {
				if err := b.Delete(ctx, e.Key()); err != nil {
					p.Detail += fmt.Sprintf("; deleting it failed: %v", err)
				} else {
					p.Repaired = true
				}
			}
			mu.Lock()
			out = append(out, p)
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b fhirstore.Problem) int {
		if a.Key < b.Key {
			return -1
		}
		if a.Key > b.Key {
			return 1
		}
		return 0
	})
	return out, nil
}

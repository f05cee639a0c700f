package fhirstore

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"fhirbucket/fhir"
	"fhirbucket/internal/layout"
	"fhirbucket/storage"
)

// Read returns the current version of typ/id: what current.json holds, the
// last fully written version (a version claimed by a writer that has not
// yet moved current.json is not returned; VRead returns it). Unknown ->
// ErrNotFound. A tombstone -> the tombstone AND an error wrapping ErrGone,
// so the caller can send the tombstone's ETag with its 410. Cost: 1 GET.
func (s *Store) Read(ctx context.Context, tenant, typ, id string) (*Resource, error) {
	sc, err := s.checkTarget(tenant, typ, id, true)
	if err != nil {
		return nil, err
	}
	res, err := s.readVisible(ctx, sc, typ, id)
	if err != nil {
		return nil, err
	}
	if res == nil {
		return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, typ, id)
	}
	if res.Deleted() {
		return res, fmt.Errorf("%w: %s/%s was deleted at version %d", ErrGone, typ, id, res.Version)
	}
	return res, nil
}

// readVisible returns the version of typ/id readers see (nil: none):
// current.json, or the version below it that a transaction which has not
// committed hides (tx.go).
func (s *Store) readVisible(ctx context.Context, sc scope, typ, id string) (*Resource, error) {
	cur, err := s.readCurrent(ctx, sc, typ, id)
	if err != nil {
		return nil, err
	}
	return s.visible(ctx, sc, cur.res)
}

// VRead returns one version of typ/id; version is the URL segment, and a
// segment that is not a version number (or names no stored version) ->
// ErrNotFound. A claimed version whose writer has not finished is returned:
// it is durable and will never change. A tombstone version -> the tombstone
// AND an error wrapping ErrGone. Cost: 1 GET.
func (s *Store) VRead(ctx context.Context, tenant, typ, id, version string) (*Resource, error) {
	sc, err := s.checkTarget(tenant, typ, id, true)
	if err != nil {
		return nil, err
	}
	v, err := strconv.Atoi(version)
	if err != nil || v < 1 || strconv.Itoa(v) != version {
		return nil, fmt.Errorf("%w: %s/%s has no version %q", ErrNotFound, typ, id, version)
	}
	res, err := s.readVersion(ctx, sc, typ, id, v)
	if err != nil {
		return nil, err
	}
	if ok, err := s.committed(ctx, sc, res); err != nil || !ok {
		if err == nil {
			err = fmt.Errorf("%w: %s/%s has no version %d", ErrNotFound, typ, id, v)
		}
		return nil, err
	}
	if res.Deleted() {
		return res, fmt.Errorf("%w: %s/%s version %d is a deletion", ErrGone, typ, id, v)
	}
	return res, nil
}

func (s *Store) readVersion(ctx context.Context, sc scope, typ, id string, v int) (*Resource, error) {
	data, _, err := storage.ReadAll(ctx, sc.b, layout.VersionKey(typ, id, v))
	if errors.Is(err, storage.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s/%s version %d", ErrNotFound, typ, id, v)
	}
	if err != nil {
		return nil, fmt.Errorf("fhirstore: reading %s/%s version %d: %w", typ, id, v, err)
	}
	res, err := decodeEnvelope(data, sc.tenant, typ, id, v)
	if err != nil {
		return nil, fmt.Errorf("fhirstore: %s: %w", layout.VersionKey(typ, id, v), err)
	}
	return res, nil
}

// Versions lists the stored version numbers of typ/id in ascending order,
// including a claimed version whose writer has not finished (ErrNotFound if
// there are none). Cost: one LIST per 1,000 versions.
func (s *Store) Versions(ctx context.Context, tenant, typ, id string) ([]int, error) {
	sc, err := s.checkTarget(tenant, typ, id, true)
	if err != nil {
		return nil, err
	}
	var out []int
	prefix := layout.VersionsPrefix(typ, id)
	for a, err := range storage.Walk(ctx, sc.b, storage.ListOptions{Prefix: prefix}) {
		if err != nil {
			return nil, fmt.Errorf("fhirstore: listing versions of %s/%s: %w", typ, id, err)
		}
		v, ok := layout.ParseVersion(strings.TrimPrefix(a.Key, prefix))
		if !ok {
			continue // not a version object; Verify reports it
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, typ, id)
	}
	slices.Sort(out) // keys sort as text: 10 before 9
	return out, nil
}

// ListQuery selects a page of List.
type ListQuery struct {
	// Count is the page size: <= 0 means DefaultListCount, at most MaxCount.
	Count int
	// Cursor is ListPage.Next of the previous page ("" = first page).
	Cursor string
	// IDs, when non-empty, is an _id filter: each id is read directly (one
	// GET each) and the result is one page, in id order, without Next.
	IDs []string
}

// ListPage is one page of current, non-deleted resources.
type ListPage struct {
	Resources []*Resource // in id (key) order
	Next      string      // "" when there are no more
}

const listCursorPrefix = "l1:"

// List returns current, non-deleted resources of type typ in key (id)
// order. It lists resources/{type}/ with delimiter "/" (ids come back as
// common prefixes) and GETs each current.json in parallel (bounded by
// Config.Parallelism). Tombstones and ids whose version 1 is claimed but not
// yet current are skipped; the page is filled from further listings, so a
// page holds Count resources unless the type is exhausted. Cost: about
// one LIST plus one GET per id listed. A bad cursor -> ErrInvalid.
func (s *Store) List(ctx context.Context, tenant, typ string, q ListQuery) (*ListPage, error) {
	sc, err := s.checkTarget(tenant, typ, "", false)
	if err != nil {
		return nil, err
	}
	count := q.Count
	if count <= 0 {
		count = DefaultListCount
	}
	count = min(count, MaxCount)
	if len(q.IDs) > 0 {
		return s.listIDs(ctx, sc, typ, q.IDs, count)
	}
	after := ""
	if q.Cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(q.Cursor)
		id, ok := strings.CutPrefix(string(raw), listCursorPrefix)
		if err != nil || !ok || !fhir.ValidID(id) {
			return nil, fmt.Errorf("%w: bad list cursor %q", ErrInvalid, q.Cursor)
		}
		after = id
	}
	prefix := layout.TypePrefix(typ)
	page := &ListPage{}
	for {
		opts := storage.ListOptions{Prefix: prefix, Delimiter: "/", MaxKeys: count - len(page.Resources)}
		if after != "" {
			opts.StartAfter = storage.AfterPrefix(prefix + after + "/")
		}
		lp, err := sc.b.List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("fhirstore: listing %s: %w", typ, err)
		}
		ids := idsOf(lp.Prefixes, prefix)
		got, err := s.readCurrents(ctx, sc, typ, ids)
		if err != nil {
			return nil, err
		}
		for _, r := range got {
			if r != nil && !r.Deleted() {
				page.Resources = append(page.Resources, r)
			}
		}
		if len(ids) > 0 {
			after = ids[len(ids)-1]
		}
		more := lp.Next != ""
		if !more {
			return page, nil
		}
		if len(page.Resources) >= count {
			page.Next = base64.RawURLEncoding.EncodeToString([]byte(listCursorPrefix + after))
			return page, nil
		}
	}
}

// idsOf turns common prefixes resources/{type}/{id}/ into ids, dropping
// anything that is not a valid id.
func idsOf(prefixes []string, prefix string) []string {
	ids := make([]string, 0, len(prefixes))
	for _, p := range prefixes {
		id := strings.TrimSuffix(strings.TrimPrefix(p, prefix), "/")
		if fhir.ValidID(id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// readCurrents reads the visible version of every id in parallel; a
// missing one is nil in the result.
func (s *Store) readCurrents(ctx context.Context, sc scope, typ string, ids []string) ([]*Resource, error) {
	out := make([]*Resource, len(ids))
	err := s.forEach(ctx, len(ids), func(ctx context.Context, i int) error {
		res, err := s.readVisible(ctx, sc, typ, ids[i])
		out[i] = res
		return err
	})
	return out, err
}

func (s *Store) listIDs(ctx context.Context, sc scope, typ string, ids []string, count int) (*ListPage, error) {
	// An _id that is not a valid id cannot exist: it matches nothing and
	// is not an error.
	uniq := slices.Clone(ids)
	uniq = slices.DeleteFunc(uniq, func(id string) bool { return !fhir.ValidID(id) })
	slices.Sort(uniq)
	uniq = slices.Compact(uniq)
	got, err := s.readCurrents(ctx, sc, typ, uniq)
	if err != nil {
		return nil, err
	}
	page := &ListPage{}
	for _, r := range got {
		if r != nil && !r.Deleted() && len(page.Resources) < count {
			page.Resources = append(page.Resources, r)
		}
	}
	return page, nil
}

// Count returns the number of current, non-deleted resources of typ. Its
// cost is that of listing the whole type: one LIST per 1,000 ids plus one
// GET per id (to leave out tombstones), with bounded parallelism; the
// server should only call it for _summary=count or _total.
func (s *Store) Count(ctx context.Context, tenant, typ string) (int, error) {
	sc, err := s.checkTarget(tenant, typ, "", false)
	if err != nil {
		return 0, err
	}
	prefix := layout.TypePrefix(typ)
	opts := storage.ListOptions{Prefix: prefix, Delimiter: "/"}
	n := 0
	for {
		lp, err := sc.b.List(ctx, opts)
		if err != nil {
			return 0, fmt.Errorf("fhirstore: listing %s: %w", typ, err)
		}
		got, err := s.readCurrents(ctx, sc, typ, idsOf(lp.Prefixes, prefix))
		if err != nil {
			return 0, err
		}
		for _, r := range got {
			if r != nil && !r.Deleted() {
				n++
			}
		}
		if lp.Next == "" {
			return n, nil
		}
		opts.StartAfter = lp.Next
	}
}

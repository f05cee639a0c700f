package fhirstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"fhirbucket/fhir"
	"fhirbucket/internal/layout"
	"fhirbucket/storage"
)

// Problem kinds reported by Verify.
const (
	ProblemClaimedVersion = "claimed-version"  // a version newer than current.json (an unfinished write); repair rolls it forward
	ProblemMissingEvent   = "missing-event"    // a version without its type or system event; repair writes it
	ProblemVersionGap     = "version-gap"      // versions are not dense 1..N
	ProblemCurrentBehind  = "current-mismatch" // current.json is not byte-identical to its version object, or ahead of the versions
	ProblemBadEnvelope    = "bad-envelope"     // an object that does not parse or disagrees with its key
	ProblemBadKey         = "bad-key"          // a key under resources/ or history/ that the layout does not define
	ProblemOrphanEvent    = "orphan-event"     // an event naming a version that does not exist, or with a wrong timestamp or suffix
	ProblemMissingCurrent = "missing-current"  // versions without current.json beyond a claimable version 1
)

// Problem is one broken invariant found by Verify.
type Problem struct {
	Kind     string // one of the Problem* constants
	Key      string // the object concerned
	Detail   string
	Repaired bool
}

// Report is the result of Verify.
type Report struct {
	Resources int // resources (type/id) seen
	Versions  int // version objects seen
	Events    int // event objects seen (type and system)
	Problems  []Problem
}

// Verify walks a tenant's keyspace and checks the invariants of the object
// layout: current.json is byte-identical to the highest version object,
// versions are dense 1..N, every version has both events (and every event
// names an existing version with the right timestamp and suffix), and every
// envelope parses and agrees with its key. With repair it completes
// unfinished writes exactly as a writer would: it rolls a claimed version
// forward (current.json := the version object, If-Match the old ETag) and
// writes missing events. Problems it cannot explain are reported, never
// "fixed" by deleting or rewriting history.
//
// Cost: a LIST per 1,000 keys of the tenant and a GET of every version
// object (to check it and to know its timestamp), with bounded parallelism.
// It is an operator command (fsck), not part of serving.
func (s *Store) Verify(ctx context.Context, tenant string, repair bool) (*Report, error) {
	b, err := s.TenantBucket(tenant)
	if err != nil {
		return nil, err
	}
	sc := scope{b: b, tenant: tenant}
	rep := &Report{}
	var mu sync.Mutex
	add := func(p Problem) {
		mu.Lock()
		rep.Problems = append(rep.Problems, p)
		mu.Unlock()
	}

	// Events first, as a set of keys: a version then checks its two keys.
	events := map[string]bool{}
	for _, prefix := range []string{layout.TypeEventsPrefix, layout.SystemEventsPrefix} {
		for a, err := range storage.Walk(ctx, b, storage.ListOptions{Prefix: prefix}) {
			if err != nil {
				return nil, fmt.Errorf("fhirstore: verify: listing %s: %w", prefix, err)
			}
			events[a.Key] = false // true once a version claims it
			rep.Events++
		}
	}

	// Resources: keys of one resource are adjacent in listing order.
	type res struct {
		typ, id  string
		versions []int
		current  bool
	}
	var all []*res
	var last *res
	for a, err := range storage.Walk(ctx, b, storage.ListOptions{Prefix: layout.ResourcesPrefix}) {
		if err != nil {
			return nil, fmt.Errorf("fhirstore: verify: listing %s: %w", layout.ResourcesPrefix, err)
		}
		k, ok := layout.ParseResourceKey(a.Key)
		if !ok || !fhir.IsResourceType(k.Type) || !fhir.ValidID(k.ID) {
			add(Problem{Kind: ProblemBadKey, Key: a.Key, Detail: "not a key of the object layout"})
			continue
		}
		if last == nil || last.typ != k.Type || last.id != k.ID {
			last = &res{typ: k.Type, id: k.ID}
			all = append(all, last)
		}
		if k.Version == 0 {
			last.current = true
		} else {
			last.versions = append(last.versions, k.Version)
			rep.Versions++
		}
	}
	rep.Resources = len(all)

	err = s.forEach(ctx, len(all), func(ctx context.Context, i int) error {
		r := all[i]
		slices.Sort(r.versions)
		return s.verifyResource(ctx, sc, r.typ, r.id, r.versions, r.current, repair, events, &mu, add)
	})
	if err != nil {
		return nil, err
	}
	for k, seen := range events {
		if !seen {
			add(Problem{Kind: ProblemOrphanEvent, Key: k, Detail: "names no existing version, or its timestamp or suffix is wrong"})
		}
	}
	slices.SortFunc(rep.Problems, func(a, b Problem) int {
		return strings.Compare(a.Key+"\x00"+a.Kind, b.Key+"\x00"+b.Kind)
	})
	return rep, nil
}

func (s *Store) verifyResource(ctx context.Context, sc scope, typ, id string, versions []int, hasCurrent, repair bool,
	events map[string]bool, mu *sync.Mutex, add func(Problem)) error {
	// Every version object: parse, check, and check its events.
	byVersion := map[int][]byte{}
	resOf := map[int]*Resource{}
	for _, v := range versions {
		key := layout.VersionKey(typ, id, v)
		data, _, err := storage.ReadAll(ctx, sc.b, key)
		if err != nil {
			return fmt.Errorf("fhirstore: verify: %s: %w", key, err)
		}
		r, err := decodeEnvelope(data, sc.tenant, typ, id, v)
		if err != nil {
			add(Problem{Kind: ProblemBadEnvelope, Key: key, Detail: err.Error()})
			continue
		}
		byVersion[v], resOf[v] = data, r
	}
	for i, v := range versions {
		if v != i+1 {
			add(Problem{Kind: ProblemVersionGap, Key: layout.VersionsPrefix(typ, id),
				Detail: fmt.Sprintf("versions are %v, not dense from 1", versions)})
			break
		}
	}
	top := 0
	if len(versions) > 0 {
		top = versions[len(versions)-1]
	}

	// current.json against the highest version.
	ck := layout.CurrentKey(typ, id)
	cur := &current{}
	if hasCurrent {
		data, attrs, err := storage.ReadAll(ctx, sc.b, ck)
		if err != nil && !errors.Is(err, storage.ErrNotExist) {
			return fmt.Errorf("fhirstore: verify: %s: %w", ck, err)
		}
		if err == nil {
			r, derr := decodeEnvelope(data, sc.tenant, typ, id, 0)
			switch {
			case derr != nil:
				add(Problem{Kind: ProblemBadEnvelope, Key: ck, Detail: derr.Error()})
				return nil
			case resOf[r.Version] == nil || !bytes.Equal(byVersion[r.Version], data):
				add(Problem{Kind: ProblemCurrentBehind, Key: ck,
					Detail: fmt.Sprintf("current.json holds version %d, which is not byte-identical to its version object", r.Version)})
				return nil
			}
			cur = &current{res: r, etag: attrs.ETag}
		}
	}
	switch {
	case cur.version() == top:
	case cur.version() == top-1 && resOf[top] != nil:
		// An unfinished write: the claimed version is committed.
		p := Problem{Kind: ProblemClaimedVersion, Key: layout.VersionKey(typ, id, top),
			Detail: fmt.Sprintf("version %d is claimed but current.json is at version %d", top, cur.version())}
		if repair {
			if err := s.finish(ctx, sc, typ, id, cur, resOf[top], byVersion[top], indexWork{put: s.indexKeys(resOf[top])}); err != nil {
				p.Detail += "; roll-forward failed: " + err.Error()
			} else {
				p.Repaired = true
				s.notifyRollForward()
				// finish wrote both events of the version too.
				mu.Lock()
				events[layout.TypeEventKey(sc.tenant, typ, id, top, resOf[top].LastModified)] = true
				events[layout.SystemEventKey(sc.tenant, typ, id, top, resOf[top].LastModified)] = true
				mu.Unlock()
			}
		}
		add(p)
	case cur.res == nil:
		add(Problem{Kind: ProblemMissingCurrent, Key: ck, Detail: fmt.Sprintf("no current.json but versions up to %d", top)})
	default:
		add(Problem{Kind: ProblemCurrentBehind, Key: ck,
			Detail: fmt.Sprintf("current.json is at version %d but the highest version is %d", cur.version(), top)})
	}

	// Events of every version.
	for _, v := range versions {
		r := resOf[v]
		if r == nil {
			continue
		}
		ev := encodeEvent(r)
		for _, key := range []string{
			layout.TypeEventKey(sc.tenant, typ, id, v, r.LastModified),
			layout.SystemEventKey(sc.tenant, typ, id, v, r.LastModified),
		} {
			mu.Lock()
			_, ok := events[key]
			events[key] = true
			mu.Unlock()
			if ok {
				continue
			}
			p := Problem{Kind: ProblemMissingEvent, Key: key, Detail: fmt.Sprintf("the event of %s/%s version %d is missing", typ, id, v)}
			if repair {
				if err := s.putEvent(ctx, sc.b, key, ev); err != nil {
					p.Detail += "; writing it failed: " + err.Error()
				} else {
					p.Repaired = true
				}
			}
			add(p)
		}
	}
	return nil
}

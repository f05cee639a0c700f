package fhirstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sync"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/internal/layout"
	"fhirbucket/storage"
)

// current is what a writer knows of current.json: the version it holds
// (res == nil: the object does not exist) and its storage ETag, the
// precondition of the next pointer move.
type current struct {
	res  *Resource
	etag string
}

func (c *current) version() int {
	if c.res == nil {
		return 0
	}
	return c.res.Version
}

// readCurrent GETs current.json (1 GET).
func (s *Store) readCurrent(ctx context.Context, sc scope, typ, id string) (*current, error) {
	data, attrs, err := storage.ReadAll(ctx, sc.b, layout.CurrentKey(typ, id))
	if errors.Is(err, storage.ErrNotExist) {
		return &current{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fhirstore: reading %s/%s: %w", typ, id, err)
	}
	res, err := decodeEnvelope(data, sc.tenant, typ, id, 0)
	if err != nil {
		return nil, fmt.Errorf("fhirstore: %s: %w", layout.CurrentKey(typ, id), err)
	}
	return &current{res: res, etag: attrs.ETag}, nil
}

// errIDTaken reports that a server-assigned id was already claimed; Create
// draws another one.
var errIDTaken = errors.New("fhirstore: id already in use")

// buildFunc computes version (the number it will be stored as) from the
// visible current one (nil: no resource). version can be more than
// cur.Version+1: a version hidden by an aborted transaction keeps its
// number. Returning (nil, nil) means there is nothing to write.
type buildFunc func(cur *Resource, version int, lastUpdated time.Time) (*Resource, error)

// writeReq is one write of one resource (see write).
type writeReq struct {
	typ, id string
	// known, when non-nil, is the current state the caller already knows,
	// which saves the GET of the first attempt. With assumed it was not
	// read but inferred: a write of version 1 (base 0) needs no read,
	// since winning the claim of version 1 proves there was none.
	known   *current
	assumed bool
	// fresh marks a server-assigned id just drawn: a lost claim means the
	// id is taken (errIDTaken), and Create draws another.
	fresh bool
	// base is the version the write replaces (0: the resource must not
	// exist); with anyBase the write builds on whatever is current and
	// retries lost races.
	base    int
	anyBase bool
	ifMatch *Match // nil = none
	build   buildFunc
}

// write runs the write protocol of the package doc for one resource: it
// reads the current version N (unless known), checks the preconditions,
// builds N+1, claims it and finishes it. A lost claim rolls N+1 forward
// and then fails with ErrPreconditionFailed when the write was
// conditional (ifMatch, or !anyBase), or retries otherwise.
func (s *Store) write(ctx context.Context, sc scope, w writeReq) (*Resource, error) {
	typ, id := w.typ, w.id
	s.prepareIndex(ctx, sc)
	for attempt := 0; ; attempt++ {
		cur, assumed := w.known, w.assumed
		w.known, w.assumed = nil, false
		if cur == nil {
			var err error
			if cur, err = s.readCurrent(ctx, sc, typ, id); err != nil {
				return nil, err
			}
		}
		// vis is what readers see: cur, or an older version when cur
		// belongs to a transaction that aborted (an open one is waited
		// for). The change builds on it, while the claim and the pointer
		// move stay conditional on cur.
		vis, err := s.settle(ctx, sc, cur)
		if err != nil {
			return nil, err
		}
		if w.ifMatch != nil && !w.ifMatch.matches(vis) {
			return nil, preconditionError(typ, id, w.ifMatch, vis)
		}
		if !w.anyBase && cur.version() != w.base {
			if cur.version() < w.base || versionOf(vis) > w.base {
				return nil, baseError(typ, id, w.base, cur.res, false)
			}
			// Every version above base is hidden for good (aborted
			// transactions; an open one was waited for): what readers see
			// is what the caller planned on, so build over them.
			w.base = cur.version()
		}
		lastUpdated := truncMS(s.now())
		if cur.res != nil && lastUpdated.Before(cur.res.LastModified) {
			// Keep lastUpdated monotonic along a resource's versions even
			// when writers' clocks disagree, so instance history (newest
			// version first) is also newest time first and _since can stop
			// at the first older version.
			lastUpdated = cur.res.LastModified
		}
		next, err := w.build(vis, cur.version()+1, lastUpdated)
		if err != nil || next == nil {
			return nil, err
		}
		next.Version = cur.version() + 1
		data := encodeEnvelope(next)

		// Step 1: claim the version number, and write the version's index
		// objects in parallel (so it is findable before it is acknowledged;
		// those of a lost claim are stale, which lookups verify away).
		keys := s.indexKeys(next)
		var idxErr error
		var idxDone sync.WaitGroup
		if len(keys) > 0 {
			idxDone.Go(func() { idxErr = s.putIndex(ctx, sc.b, keys) })
		}
		_, err = sc.b.Put(ctx, layout.VersionKey(typ, id, next.Version), bytes.NewReader(data),
			storage.PutOptions{ContentType: contentTypeJSON, IfNoneMatch: "*", Size: int64(len(data))})
		idxDone.Wait()
		switch {
		case err == nil:
			iw := indexWork{del: s.staleKeys(cur, vis, next)}
			if idxErr != nil {
				iw.put = keys // once more, with steps 2 and 3
			}
			if err := s.finish(ctx, sc, typ, id, cur, next, data, iw); err != nil {
				return nil, err
			}
			return next, nil
		case errors.Is(err, storage.ErrPreconditionFailed):
			if w.fresh {
				return nil, errIDTaken
			}
			var claimed *Resource // the version that took the number, when known
			if assumed {
				// Version 1 exists: the resource does too, or a writer
				// holds the claim of version 1. Only in that second case
				// is there anything to roll forward.
				if cur, err = s.readCurrent(ctx, sc, typ, id); err != nil {
					return nil, err
				}
				if cur.version() == 0 {
					if claimed, err = s.rollForward(ctx, sc, typ, id, cur); err != nil {
						return nil, err
					}
				} else if cur.version() == next.Version {
					claimed = cur.res
				}
			} else if claimed, err = s.rollForward(ctx, sc, typ, id, cur); err != nil {
				// Someone holds version N+1: a live writer between its
				// steps, or one that crashed after its claim. Roll it
				// forward either way (the same bytes a live writer would
				// write; see the package doc), so that a crashed claim
				// never blocks the resource and a conditional client
				// re-reading sees the new version.
				return nil, err
			}
			// A version of a transaction took the number. Readers do not
			// see it (yet): it changes nothing the caller was promised, so
			// the next attempt reads again and decides (it waits for an
			// open transaction, builds over an aborted one's version, and
			// fails as below only against a committed one).
			if claimed != nil && claimed.Version == next.Version && claimed.Tx != "" {
				break
			}
			switch {
			case assumed || !w.anyBase:
				return nil, baseError(typ, id, w.base, nil, true)
			case w.ifMatch != nil:
				return nil, preconditionError(typ, id, w.ifMatch, nil)
			}
		case errors.Is(err, storage.ErrConflict):
			// 409: a concurrent conditional write of the same key; nothing
			// was written. Same treatment as a lost race.
		default:
			return nil, fmt.Errorf("fhirstore: claiming %s/%s version %d: %w", typ, id, next.Version, err)
		}
		if attempt >= s.retries {
			return nil, fmt.Errorf("%w: %s/%s: version %d was taken by a concurrent writer %d times",
				ErrVersionConflict, typ, id, next.Version, attempt+1)
		}
		if err := sleepJitter(ctx, attempt); err != nil {
			return nil, err
		}
	}
}

// versionOf is r's version, 0 for none.
func versionOf(r *Resource) int {
	if r == nil {
		return 0
	}
	return r.Version
}

// baseError reports that the current version of typ/id is not base: cur
// is what was read, or lost reports that another writer claimed base+1
// first.
func baseError(typ, id string, base int, cur *Resource, lost bool) error {
	switch {
	case lost:
		return fmt.Errorf("%w: %s/%s: version %d was written by another writer", ErrPreconditionFailed, typ, id, base+1)
	case cur == nil:
		return fmt.Errorf("%w: %s/%s does not exist, expected version %d", ErrPreconditionFailed, typ, id, base)
	case base == 0:
		return fmt.Errorf("%w: %s/%s exists (at version %d)", ErrPreconditionFailed, typ, id, cur.Version)
	}
	return fmt.Errorf("%w: %s/%s is at version %d, expected version %d", ErrPreconditionFailed, typ, id, cur.Version, base)
}

func preconditionError(typ, id string, m *Match, cur *Resource) error {
	switch {
	case cur == nil:
		return fmt.Errorf("%w: If-Match %s: %s/%s has a newer or no current version", ErrPreconditionFailed, m, typ, id)
	case cur.Deleted():
		return fmt.Errorf("%w: If-Match %s: %s/%s is deleted at version %d", ErrPreconditionFailed, m, typ, id, cur.Version)
	}
	return fmt.Errorf("%w: If-Match %s: %s/%s is at version %d", ErrPreconditionFailed, m, typ, id, cur.Version)
}

// sleepJitter waits a random time up to min(2^attempt, 64) ms so that
// writers that lost a race do not retry in lockstep.
func sleepJitter(ctx context.Context, attempt int) error {
	limit := 1 << min(attempt, 6)
	d := time.Duration(mrand.Int64N(int64(limit)*int64(time.Millisecond)) + int64(100*time.Microsecond))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// finish runs steps 2 and 3 for a claimed version next whose envelope bytes
// are data: it moves current.json from cur to next and writes both events,
// in parallel, with the index work iw. It succeeds when all three (and
// iw.put) are in place, whoever wrote them.
func (s *Store) finish(ctx context.Context, sc scope, typ, id string, cur *current, next *Resource, data []byte, iw indexWork) error {
	ev := encodeEvent(next)
	var wg sync.WaitGroup
	var errCur, errType, errSys, errIdx error
	if len(iw.put) > 0 {
		wg.Go(func() { errIdx = s.putIndex(ctx, sc.b, iw.put) })
	}
	if len(iw.del) > 0 {
		wg.Go(func() { s.deleteIndex(ctx, sc.b, iw.del) })
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		errType = s.putEvent(ctx, sc.b, layout.TypeEventKey(next.Tenant, typ, id, next.Version, next.LastModified), ev)
	}()
	go func() {
		defer wg.Done()
		errSys = s.putEvent(ctx, sc.b, layout.SystemEventKey(next.Tenant, typ, id, next.Version, next.LastModified), ev)
	}()
	errCur = s.movePointer(ctx, sc, typ, id, cur, next, data)
	wg.Wait()
	if errType == nil {
		s.noteNewest(sc.tenant+"\x00"+layout.TypeEventPrefix(typ), next.LastModified.UnixMilli())
	}
	if errSys == nil {
		s.noteNewest(sc.tenant+"\x00"+layout.SystemEventsPrefix, next.LastModified.UnixMilli())
	}
	if errIdx != nil {
		errIdx = fmt.Errorf("writing its index objects (fsck --repair or a reindex completes them): %w", errIdx)
	}
	if err := errors.Join(errCur, errType, errSys, errIdx); err != nil {
		return fmt.Errorf("fhirstore: %s/%s version %d is committed but not complete (the next write or a repair rolls it forward): %w",
			typ, id, next.Version, err)
	}
	return nil
}

func (s *Store) putEvent(ctx context.Context, b storage.Bucket, key string, ev []byte) error {
	_, err := b.Put(ctx, key, bytes.NewReader(ev), storage.PutOptions{ContentType: contentTypeJSON, Size: int64(len(ev))})
	return err
}

// movePointer writes current.json = data (version next.Version) under the
// precondition that it still holds cur. When the precondition fails it
// re-reads current.json: a version >= next means someone (a roll-forward)
// already moved it there or beyond, which is success; the same version as
// cur under a new ETag (or a 409) means try again with the new ETag. The
// pointer can never move backwards: every move is conditional on the ETag
// of version N and writes N+1, and only the one claimant of N+1 (or a
// roll-forward copying its bytes) ever writes N+1.
func (s *Store) movePointer(ctx context.Context, sc scope, typ, id string, cur *current, next *Resource, data []byte) error {
	for attempt := 0; ; attempt++ {
		opts := storage.PutOptions{ContentType: contentTypeJSON, Size: int64(len(data))}
		if cur.res == nil {
			opts.IfNoneMatch = "*"
		} else {
			opts.IfMatch = cur.etag
		}
		_, err := sc.b.Put(ctx, layout.CurrentKey(typ, id), bytes.NewReader(data), opts)
		if err == nil {
			return nil
		}
		if !errors.Is(err, storage.ErrPreconditionFailed) && !errors.Is(err, storage.ErrNotExist) &&
			!errors.Is(err, storage.ErrConflict) {
			return fmt.Errorf("moving current.json: %w", err)
		}
		now, rerr := s.readCurrent(ctx, sc, typ, id)
		if rerr != nil {
			return rerr
		}
		switch v := now.version(); {
		case v >= next.Version:
			return nil
		case v != next.Version-1:
			return fmt.Errorf("current.json of %s/%s is at version %d while version %d was claimed: %w",
				typ, id, v, next.Version, err)
		}
		if attempt >= s.retries {
			return fmt.Errorf("moving current.json: %w", err)
		}
		cur = now
	}
}

// rollForward completes the version claimed right after cur (N+1): it
// copies _history/{N+1}.json byte for byte to current.json (If-Match the
// ETag of N) and writes its events. It is a no-op when N+1 does not exist,
// and reports whether it did.
// The bytes are the claimant's own, so whether the claimant is alive or
// crashed, current.json ends up exactly as the claimant would have left it.
func (s *Store) rollForward(ctx context.Context, sc scope, typ, id string, cur *current) (*Resource, error) {
	v := cur.version() + 1
	data, _, err := storage.ReadAll(ctx, sc.b, layout.VersionKey(typ, id, v))
	if errors.Is(err, storage.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("fhirstore: rolling forward %s/%s version %d: %w", typ, id, v, err)
	}
	res, err := decodeEnvelope(data, sc.tenant, typ, id, v)
	if err != nil {
		return nil, fmt.Errorf("fhirstore: rolling forward %s: %w", layout.VersionKey(typ, id, v), err)
	}
	// The claimant may have stopped before its index objects were
	// written: write them again (the same keys, so idempotent).
	iw := indexWork{put: s.indexKeys(res), del: s.staleKeys(cur, nil, res)}
	if err := s.finish(ctx, sc, typ, id, cur, res, data, iw); err != nil {
		return nil, err
	}
	s.notifyRollForward()
	return res, nil
}

// newID draws a server-assigned id: 32 lowercase hex digits (128 random bits).
func newID() string {
	var r [16]byte
	_, _ = rand.Read(r[:]) // never fails (crypto/rand)
	return hex.EncodeToString(r[:])
}

// validate runs body through the validator and checks its resourceType.
// Validation failures wrap ErrInvalid and the *fhir.ValidationError; a body
// over the size limit passes fhir.ErrTooLarge through.
func (s *Store) validate(body []byte, typ string) (fhir.Info, error) {
	info, err := s.validator.Validate(body)
	if err != nil {
		if errors.Is(err, fhir.ErrTooLarge) {
			return info, fmt.Errorf("fhirstore: %w", err)
		}
		return info, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if info.Type != typ {
		return info, fmt.Errorf("%w: resourceType %q does not match the resource type %q of the request", ErrInvalid, info.Type, typ)
	}
	return info, nil
}

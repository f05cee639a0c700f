package fhirstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"fhirbucket/internal/layout"
	"fhirbucket/storage"
)

// Reads of the store as it was at a past instant, for bulk export: the
// version of a resource that was current at time T, and the ids of a type
// one listing page at a time, so that a reader can resume after any id.

// AsOf returns the version of typ/id that was current at instant at: the
// newest version whose lastUpdated is at or before at (millisecond
// precision). It reads current.json and, while that version is newer than
// at, walks _history backwards one version at a time. A tombstone is
// returned as it is (Deleted reports it; its DeletedAt is when). (nil,
// nil) means the resource did not exist at that instant (created later,
// or never). Cost: 1 GET when the resource did not change after at, plus
// 1 GET per version written after it.
//
// A version claimed by a writer that had not moved current.json is not
// seen, as with Read: the export's transactionTime is taken when the
// request is accepted, and writers acknowledge only after moving the
// pointer.
func (s *Store) AsOf(ctx context.Context, tenant, typ, id string, at time.Time) (*Resource, error) {
	sc, err := s.checkTarget(tenant, typ, id, true)
	if err != nil {
		return nil, err
	}
	cur, err := s.readCurrent(ctx, sc, typ, id)
	if err != nil || cur.res == nil {
		return nil, err
	}
	at = truncMS(at)
	res := cur.res
	for {
		// A version written by a transaction that had not committed at
		// instant at is stepped over, like a version newer than at.
		if !res.LastModified.After(at) {
			ok, err := s.committedBy(ctx, sc, res, at)
			if err != nil || ok {
				return res, err
			}
		}
		if res.Version <= 1 {
			return nil, nil
		}
		prev, err := s.readVersion(ctx, sc, typ, id, res.Version-1)
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("fhirstore: %s/%s: version %d is missing below version %d (run fsck)", typ, id, res.Version-1, res.Version)
		}
		if err != nil {
			return nil, err
		}
		res = prev
	}
}

// IDs returns the ids of typ that sort after after (all when ""), in key
// order, at most max (<= 0 or > 1000: 1000), and whether more follow. It
// lists resources/{type}/ with delimiter "/", which names every resource
// ever written, tombstones and resources created after any instant
// included: AsOf tells what each one was. Cost: 1 LIST.
func (s *Store) IDs(ctx context.Context, tenant, typ, after string, max int) (ids []string, more bool, err error) {
	sc, err := s.checkTarget(tenant, typ, "", false)
	if err != nil {
		return nil, false, err
	}
	prefix := layout.TypePrefix(typ)
	opts := storage.ListOptions{Prefix: prefix, Delimiter: "/", MaxKeys: max}
	if after != "" {
		opts.StartAfter = storage.AfterPrefix(prefix + after + "/")
	}
	lp, err := sc.b.List(ctx, opts)
	if err != nil {
		return nil, false, fmt.Errorf("fhirstore: listing %s: %w", typ, err)
	}
	return idsOf(lp.Prefixes, prefix), lp.Next != "", nil
}

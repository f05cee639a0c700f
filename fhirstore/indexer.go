package fhirstore

import (
	"bytes"
	"context"
	"errors"
	"sync"

	"fhirbucket/storage"
)

// Indexer names the secondary-index objects a version needs (package
// index implements it for identifiers; fhirstore does not know what they
// mean). The Store writes them with the version claim (step 1 of the write
// protocol, in parallel), so that a version is findable before its write
// is acknowledged, and deletes the objects of the version a plain write
// replaces, in parallel with steps 2 and 3.
type Indexer interface {
	// IndexKeys returns the keys, below the tenant base, of the index
	// objects version of typ/id with content needs (nil: none). Keys of
	// two different versions never coincide. It must be a fast, pure
	// function of its arguments; content is valid FHIR JSON.
	IndexKeys(typ, id string, version int, content []byte) []string
}

// IndexPreparer is an optional interface of an Indexer: PrepareTenant is
// called before every write of a tenant (the implementation makes all
// but the first per process free), with the tenant's bucket. It lets the
// index record that a tenant was indexed from its first write on. It
// must not fail the write: problems are the implementation's to log.
type IndexPreparer interface {
	PrepareTenant(ctx context.Context, tenant string, b storage.Bucket)
}

// prepareIndex calls the Indexer's PrepareTenant, if it has one.
func (s *Store) prepareIndex(ctx context.Context, sc scope) {
	if p, ok := s.indexer.(IndexPreparer); ok {
		p.PrepareTenant(ctx, sc.tenant, sc.b)
	}
}

// indexObject is the body of every index object: the key says it all.
var indexObject = []byte("{}")

// indexWork is what finish does to the index besides steps 2 and 3.
type indexWork struct {
	put []string // objects that must exist before the write succeeds
	del []string // objects of replaced versions (best effort)
}

// indexKeys returns the index objects of res (none for a tombstone).
func (s *Store) indexKeys(res *Resource) []string {
	if s.indexer == nil || res == nil || res.Deleted() {
		return nil
	}
	return s.indexer.IndexKeys(res.Type, res.ID, res.Version, res.Content)
}

// staleKeys returns the index objects a plain write of next makes stale:
// those of the versions it replaces (cur, and vis when cur is hidden). A
// version written by a transaction deletes nothing, since the versions it
// replaces stay visible until the journal commits, and for good when it
// aborts.
func (s *Store) staleKeys(cur *current, vis, next *Resource) []string {
	if s.indexer == nil || next.Tx != "" {
		return nil
	}
	out := s.indexKeys(cur.res)
	if vis != nil && (cur.res == nil || vis.Version != cur.res.Version) {
		out = append(out, s.indexKeys(vis)...)
	}
	return out
}

// putIndex writes the index objects keys, in parallel.
func (s *Store) putIndex(ctx context.Context, b storage.Bucket, keys []string) error {
	errs := make([]error, len(keys))
	var wg sync.WaitGroup
	for i, k := range keys {
		wg.Go(func() {
			_, errs[i] = b.Put(ctx, k, bytes.NewReader(indexObject),
				storage.PutOptions{ContentType: contentTypeJSON, Size: int64(len(indexObject))})
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// deleteIndex removes the index objects keys, in parallel. A failure
// leaves a stale object, which lookups verify away and fsck --repair
// removes: it is logged, never returned.
func (s *Store) deleteIndex(ctx context.Context, b storage.Bucket, keys []string) {
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Go(func() {
			if err := b.Delete(ctx, k); err != nil {
				s.log.Debug("fhirstore: removing a stale index object", "key", k, "err", err)
			}
		})
	}
	wg.Wait()
}

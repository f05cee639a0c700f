package lease

import (
	"context"
	"errors"
	"iter"

	"fhirbucket/storage"
)

// Entry is one document found by Scan.
type Entry struct {
	Doc
	// Status is the lease's standing by the Manager's clock when the
	// document was read.
	Status Status
}

// Scan lists the keys under prefix in ascending order and reads each one,
// yielding its document and status by the Manager's clock: what a recovery
// runner needs to find the leases it may take over. It costs one LIST per
// 1,000 keys plus one GET per key (the expiry is inside the object, which
// a listing does not show); stop iterating to stop reading.
//
// A key that is not a lease document is yielded with its Key and ETag and
// an ErrCorrupt error, and the scan goes on; a key deleted between the
// listing and its read is skipped. Any other error is yielded with a zero
// Entry and ends the scan.
func (m *Manager) Scan(ctx context.Context, prefix string) iter.Seq2[Entry, error] {
	return m.ScanSkipping(ctx, prefix, nil)
}

// ScanSkipping is Scan without reading the keys skip accepts (documents
// the caller knows need nothing, such as finished ones): those cost only
// their share of the listing. skip nil skips nothing.
func (m *Manager) ScanSkipping(ctx context.Context, prefix string, skip func(key string) bool) iter.Seq2[Entry, error] {
	return func(yield func(Entry, error) bool) {
		for a, err := range storage.Walk(ctx, m.b, storage.ListOptions{Prefix: prefix}) {
			if err != nil {
				yield(Entry{}, err)
				return
			}
			if skip != nil && skip(a.Key) {
				continue
			}
			d, err := m.Read(ctx, a.Key)
			switch {
			case errors.Is(err, storage.ErrNotExist):
				continue
			case errors.Is(err, ErrCorrupt):
				if !yield(Entry{Doc: d}, err) {
					return
				}
				continue
			case err != nil:
				yield(Entry{}, err)
				return
			}
			if !yield(Entry{Doc: d, Status: m.Status(d.Lease)}, nil) {
				return
			}
		}
	}
}

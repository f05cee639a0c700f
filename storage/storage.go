// Package storage is the object-store contract every fhirbucket backend
// implements: a flat namespace of keys holding immutable-per-write byte
// objects, with conditional puts, lexicographic listing and idempotent
// deletes. It knows nothing about FHIR.
//
// Drivers (storage/s3store, storage/filestore, storage/memstore) normalise
// their native errors into the sentinels of this package, so callers test
// errors only with errors.Is.
//
// Closing is not part of Bucket: a Bucket may be a view (Prefixed, a
// Counter, one bucket of an S3 client shared by several) of what was
// opened. What a driver opens is an io.Closer instead: filestore.Bucket
// (the folder), s3store.Client (its connections) and memstore.Bucket
// (nothing, for uniformity); whoever opened it closes it.
package storage

import (
	"context"
	"errors"
	"io"
	"iter"
	"sync"
	"time"
)

// Attrs describes one stored object.
type Attrs struct {
	// Key is the object's full key inside the bucket (or inside the prefix
	// of a Prefixed bucket).
	Key string
	// Size is the body length in bytes.
	Size int64
	// ETag is an opaque version tag of the object's current content. Two
	// writes of the same key yield different ETags unless the bodies are
	// byte-identical (drivers may use a content hash). It is the value to
	// pass as PutOptions.IfMatch. Callers must not interpret it.
	ETag string
	// ModTime is the time the object was last written.
	ModTime time.Time
	// ContentType is the media type given at Put time ("" when none was
	// given). List results may leave it empty.
	ContentType string
}

// PutOptions control a Put.
type PutOptions struct {
	// ContentType is stored with the object and returned by Get and Stat.
	ContentType string
	// IfNoneMatch, when "*", makes the put create-only: it fails with
	// ErrPreconditionFailed if the key exists. Any other non-empty value is
	// rejected with ErrInvalidArgument.
	IfNoneMatch string
	// IfMatch, when set, makes the put replace-only: it succeeds only if the
	// key exists and its current ETag equals IfMatch. A different ETag
	// fails with ErrPreconditionFailed; a missing key fails with
	// ErrNotExist (as AWS S3 and MinIO answer 404 there).
	IfMatch string
	// Size is the body length when known and positive; 0 or -1 means
	// unknown (the body is read to EOF). When Size > 0 and the body has a
	// different length, Put fails with ErrInvalidArgument and writes
	// nothing. A driver may need to buffer a body of unknown size.
	Size int64
}

// ListOptions select a page of keys.
type ListOptions struct {
	// Prefix restricts the listing to keys that start with it.
	Prefix string
	// StartAfter returns only keys strictly greater than it.
	StartAfter string
	// Delimiter, when "/", groups keys that contain a "/" after Prefix
	// into ListPage.Prefixes (one entry per distinct Prefix+segment+"/"),
	// as S3's delimiter does. Only "" and "/" are allowed.
	Delimiter string
	// MaxKeys bounds the page size (objects plus prefixes); <= 0 or > 1000
	// means 1000.
	MaxKeys int
}

// MaxListKeys is the largest page a List call returns.
const MaxListKeys = 1000

// ListPage is one page of a listing.
type ListPage struct {
	// Objects are in ascending byte-wise (UTF-8 binary) key order. Their
	// ContentType may be empty.
	Objects []Attrs
	// Prefixes are the grouped common prefixes when a Delimiter was given,
	// each ending in the delimiter, in ascending order.
	Prefixes []string
	// Next is the StartAfter value that continues the listing, or "" when
	// the listing is complete. After a common prefix P it is P followed by
	// U+10FFFF, so the next page starts after every key under P.
	Next string
}

// AfterPrefix is the StartAfter value that skips every key under the
// common prefix p (keys are valid UTF-8, so none sorts above U+10FFFF).
func AfterPrefix(p string) string { return p + "\U0010FFFF" }

// Bucket is one object namespace: an S3 bucket, a local folder, or memory.
//
// Every method is safe for concurrent use. Writes to one key are atomic: a
// reader sees the whole old or the whole new object, never a mix. After a
// successful Put or Delete every later Get, Stat and List sees the change
// (read-after-write consistency). There are no multi-key atomic operations.
//
// Keys are validated with ValidKey before any I/O; an invalid key fails
// with ErrInvalidKey and nothing is written.
type Bucket interface {
	// Get opens the object for reading. The caller must close the returned
	// reader. A missing key fails with ErrNotExist.
	Get(ctx context.Context, key string) (io.ReadCloser, Attrs, error)

	// Put writes the object, honouring the preconditions in opts (see
	// PutOptions). Of several concurrent conditional puts of one key
	// against the same precondition exactly one succeeds; the others fail
	// with ErrPreconditionFailed (or ErrConflict when the store reports a
	// concurrent-write conflict that survived its retries). It returns the
	// attributes of the written object, including its new ETag.
	Put(ctx context.Context, key string, body io.Reader, opts PutOptions) (Attrs, error)

	// Stat returns the attributes of the object. A missing key fails with
	// ErrNotExist.
	Stat(ctx context.Context, key string) (Attrs, error)

	// Delete removes the object. Deleting a missing key succeeds (returns
	// nil), as on S3.
	Delete(ctx context.Context, key string) error

	// List returns one page of keys in ascending byte-wise order (see
	// ListOptions and ListPage). It never reads more than one page into
	// memory. Listing a prefix with no keys returns an empty page; a
	// missing bucket fails with ErrBucketNotFound, never an empty page.
	List(ctx context.Context, opts ListOptions) (ListPage, error)
}

// Walk iterates over every key under opts.Prefix after opts.StartAfter, in
// ascending order, fetching one page at a time. Iteration stops at the
// first error, which is yielded with a zero Attrs.
func Walk(ctx context.Context, b Bucket, opts ListOptions) iter.Seq2[Attrs, error] {
	return func(yield func(Attrs, error) bool) {
		for {
			page, err := b.List(ctx, opts)
			if err != nil {
				yield(Attrs{}, err)
				return
			}
			for _, o := range page.Objects {
				if !yield(o, nil) {
					return
				}
			}
			if page.Next == "" {
				return
			}
			opts.StartAfter = page.Next
		}
	}
}

// ReadAll returns the whole body of the object at key and its attributes.
// It is meant for small objects (envelopes, state files).
func ReadAll(ctx context.Context, b Bucket, key string) ([]byte, Attrs, error) {
	rc, attrs, err := b.Get(ctx, key)
	if err != nil {
		return nil, Attrs{}, err
	}
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return nil, Attrs{}, err
	}
	return data, attrs, nil
}

// DeleteAll deletes every key under prefix, listing one page at a time and
// running at most parallel deletes at once (1 when parallel < 1). It goes
// on after a failed delete and returns every error joined.
func DeleteAll(ctx context.Context, b Bucket, prefix string, parallel int) error {
	var (
		wg   sync.WaitGroup
		sem  = make(chan struct{}, max(parallel, 1))
		mu   sync.Mutex
		errs []error
	)
	add := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	for a, err := range Walk(ctx, b, ListOptions{Prefix: prefix}) {
		if err != nil {
			add(err)
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := b.Delete(ctx, a.Key); err != nil {
				add(err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ListPrefixes returns every common prefix directly under prefix (listed
// with delimiter "/"), one LIST per 1,000.
func ListPrefixes(ctx context.Context, b Bucket, prefix string) ([]string, error) {
	var out []string
	opts := ListOptions{Prefix: prefix, Delimiter: "/"}
	for {
		page, err := b.List(ctx, opts)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Prefixes...)
		if page.Next == "" {
			return out, nil
		}
		opts.StartAfter = page.Next
	}
}

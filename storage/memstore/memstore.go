// Package memstore is the in-memory storage.Bucket: a sorted key index
// behind one mutex. It exists so that packages above storage can be
// tested quickly and deterministically; it honours every guarantee of the
// storage.Bucket contract (conditional puts, byte-wise listing with
// delimiter grouping, validation and error sentinels) so that behaviour
// seen against it carries over to S3 and the local folder.
//
// ETags are the quoted hex MD5 of the body, like S3's for single-part
// uploads: two writes of identical bytes share an ETag, as the contract
// allows.
package memstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"fhirbucket/storage"
)

// Bucket is an in-memory storage.Bucket. The zero value is not usable;
// call New.
type Bucket struct {
	mu      sync.RWMutex
	objects map[string]*object
	keys    []string // sorted byte-wise; the index List walks
	lastMod time.Time
}

// object is immutable once stored: a Put replaces the pointer, so a
// reader holding an old object keeps reading the old bytes.
type object struct {
	data  []byte
	attrs storage.Attrs
}

var (
	_ storage.Bucket = (*Bucket)(nil)
	_ io.Closer      = (*Bucket)(nil)
)

// Close does nothing and returns nil: a memory bucket holds nothing to
// release. It exists so that every driver is an io.Closer.
func (b *Bucket) Close() error { return nil }

// New returns an empty bucket.
func New() *Bucket {
	return &Bucket{objects: make(map[string]*object)}
}

func fail(op, key string, err error) error {
	return &storage.Error{Op: op, Key: key, Err: err}
}

// Get returns a reader over a snapshot of the object's bytes.
func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, storage.Attrs, error) {
	if err := storage.ValidKey(key); err != nil {
		return nil, storage.Attrs{}, fail("get", key, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, storage.Attrs{}, fail("get", key, err)
	}
	b.mu.RLock()
	o, ok := b.objects[key]
	b.mu.RUnlock()
	if !ok {
		return nil, storage.Attrs{}, fail("get", key, storage.ErrNotExist)
	}
	return io.NopCloser(bytes.NewReader(o.data)), o.attrs, nil
}

// Stat returns the object's attributes.
func (b *Bucket) Stat(ctx context.Context, key string) (storage.Attrs, error) {
	if err := storage.ValidKey(key); err != nil {
		return storage.Attrs{}, fail("stat", key, err)
	}
	if err := ctx.Err(); err != nil {
		return storage.Attrs{}, fail("stat", key, err)
	}
	b.mu.RLock()
	o, ok := b.objects[key]
	b.mu.RUnlock()
	if !ok {
		return storage.Attrs{}, fail("stat", key, storage.ErrNotExist)
	}
	return o.attrs, nil
}

// Put reads the whole body first (outside the lock, so a slow reader does
// not stall other callers) and then checks the preconditions and stores
// it in one critical section, which is what makes conditional puts
// atomic.
func (b *Bucket) Put(ctx context.Context, key string, body io.Reader, opts storage.PutOptions) (storage.Attrs, error) {
	if err := storage.ValidKey(key); err != nil {
		return storage.Attrs{}, fail("put", key, err)
	}
	if err := storage.CheckPutOptions(opts); err != nil {
		return storage.Attrs{}, fail("put", key, err)
	}
	if err := ctx.Err(); err != nil {
		return storage.Attrs{}, fail("put", key, err)
	}
	var buf bytes.Buffer
	if opts.Size > 0 {
		buf.Grow(int(opts.Size))
	}
	if _, err := buf.ReadFrom(storage.ContextReader(ctx, body)); err != nil {
		return storage.Attrs{}, fail("put", key, err)
	}
	if opts.Size > 0 && int64(buf.Len()) != opts.Size {
		return storage.Attrs{}, fail("put", key, errSize(opts.Size, buf.Len()))
	}
	sum := md5.Sum(buf.Bytes())
	etag := `"` + hex.EncodeToString(sum[:]) + `"`

	b.mu.Lock()
	defer b.mu.Unlock()
	// Checked again under the lock: a cancelled put must write nothing.
	if err := ctx.Err(); err != nil {
		return storage.Attrs{}, fail("put", key, err)
	}
	cur, exists := b.objects[key]
	switch {
	case opts.IfNoneMatch == "*" && exists:
		return storage.Attrs{}, fail("put", key, storage.ErrPreconditionFailed)
	case opts.IfMatch != "" && !exists:
		return storage.Attrs{}, fail("put", key, storage.ErrNotExist)
	case opts.IfMatch != "" && cur.attrs.ETag != opts.IfMatch:
		return storage.Attrs{}, fail("put", key, storage.ErrPreconditionFailed)
	}
	// ModTime never goes backwards within the bucket, even if the wall
	// clock does, so "later write" and "later ModTime" agree.
	now := time.Now().UTC()
	if !now.After(b.lastMod) {
		now = b.lastMod.Add(time.Nanosecond)
	}
	b.lastMod = now
	o := &object{data: buf.Bytes(), attrs: storage.Attrs{
		Key: key, Size: int64(buf.Len()), ETag: etag, ModTime: now, ContentType: opts.ContentType,
	}}
	if !exists {
		i, _ := slices.BinarySearch(b.keys, key)
		b.keys = slices.Insert(b.keys, i, key)
	}
	b.objects[key] = o
	return o.attrs, nil
}

// Delete removes the key; a missing key is not an error.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	if err := storage.ValidKey(key); err != nil {
		return fail("delete", key, err)
	}
	if err := ctx.Err(); err != nil {
		return fail("delete", key, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.objects[key]; !ok {
		return nil
	}
	delete(b.objects, key)
	if i, found := slices.BinarySearch(b.keys, key); found {
		b.keys = slices.Delete(b.keys, i, i+1)
	}
	return nil
}

// List returns one page. The sorted index lets it binary-search to the
// first candidate key and jump over a whole common prefix at once.
func (b *Bucket) List(ctx context.Context, opts storage.ListOptions) (storage.ListPage, error) {
	if err := storage.CheckListOptions(opts); err != nil {
		return storage.ListPage{}, fail("list", opts.Prefix, err)
	}
	if err := ctx.Err(); err != nil {
		return storage.ListPage{}, fail("list", opts.Prefix, err)
	}
	limit := storage.PageSize(opts.MaxKeys)
	b.mu.RLock()
	defer b.mu.RUnlock()

	var page storage.ListPage
	// seek returns the index of the first key > after and >= opts.Prefix.
	seek := func(after string) int {
		i, found := slices.BinarySearch(b.keys, max(after, opts.Prefix))
		if found && b.keys[i] == after {
			i++
		}
		return i
	}
	n := 0
	for i := seek(opts.StartAfter); i < len(b.keys); {
		k := b.keys[i]
		if !strings.HasPrefix(k, opts.Prefix) {
			break
		}
		var cp string
		if opts.Delimiter != "" {
			if j := strings.Index(k[len(opts.Prefix):], opts.Delimiter); j >= 0 {
				cp = k[:len(opts.Prefix)+j+len(opts.Delimiter)]
			}
		}
		if n == limit {
			// One more entry exists, so the page is truncated; Next
			// continues after the last entry returned.
			page.Next = lastEntry(page)
			break
		}
		n++
		if cp != "" {
			page.Prefixes = append(page.Prefixes, cp)
			i = seek(storage.AfterPrefix(cp))
			continue
		}
		page.Objects = append(page.Objects, b.objects[k].attrs)
		i++
	}
	return page, nil
}

// lastEntry is the StartAfter value after the greatest entry of page.
func lastEntry(page storage.ListPage) string {
	var last string
	if len(page.Objects) > 0 {
		last = page.Objects[len(page.Objects)-1].Key
	}
	if len(page.Prefixes) > 0 {
		if p := storage.AfterPrefix(page.Prefixes[len(page.Prefixes)-1]); p > last {
			last = p
		}
	}
	return last
}

// errSize reports a body whose length differs from PutOptions.Size; the
// object is not written, as S3 rejects a short or long body.
func errSize(want int64, got int) error {
	return fmt.Errorf("%w: body is %d bytes, PutOptions.Size is %d", storage.ErrInvalidArgument, got, want)
}

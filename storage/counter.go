package storage

import (
	"context"
	"io"
	"sync/atomic"
)

// Op names one kind of storage request, as counted by Counter.
type Op int

// The request kinds, named after the S3 request each one costs.
const (
	OpGet Op = iota
	OpPut
	OpHead
	OpList
	OpDelete
	numOps
)

func (o Op) String() string {
	switch o {
	case OpGet:
		return "GET"
	case OpPut:
		return "PUT"
	case OpHead:
		return "HEAD"
	case OpList:
		return "LIST"
	case OpDelete:
		return "DELETE"
	}
	return "UNKNOWN"
}

// Counts is a snapshot of requests by kind.
type Counts struct {
	Get, Put, Head, List, Delete int64
}

// Total is the number of requests of every kind.
func (c Counts) Total() int64 { return c.Get + c.Put + c.Head + c.List + c.Delete }

// Sub returns c - o, the requests made between two snapshots.
func (c Counts) Sub(o Counts) Counts {
	return Counts{c.Get - o.Get, c.Put - o.Put, c.Head - o.Head, c.List - o.List, c.Delete - o.Delete}
}

// Counter wraps a Bucket and counts the requests made through it, one per
// call, whatever the outcome. It is how tests and benchmarks state the
// cost of an operation in object-store requests.
type Counter struct {
	Bucket
	n [numOps]atomic.Int64
}

// NewCounter wraps b.
func NewCounter(b Bucket) *Counter { return &Counter{Bucket: b} }

// Counts returns a snapshot of the requests made so far.
func (c *Counter) Counts() Counts {
	return Counts{
		Get: c.n[OpGet].Load(), Put: c.n[OpPut].Load(), Head: c.n[OpHead].Load(),
		List: c.n[OpList].Load(), Delete: c.n[OpDelete].Load(),
	}
}

func (c *Counter) Get(ctx context.Context, key string) (io.ReadCloser, Attrs, error) {
	c.n[OpGet].Add(1)
	return c.Bucket.Get(ctx, key)
}

func (c *Counter) Put(ctx context.Context, key string, body io.Reader, opts PutOptions) (Attrs, error) {
	c.n[OpPut].Add(1)
	return c.Bucket.Put(ctx, key, body, opts)
}

func (c *Counter) Stat(ctx context.Context, key string) (Attrs, error) {
	c.n[OpHead].Add(1)
	return c.Bucket.Stat(ctx, key)
}

func (c *Counter) Delete(ctx context.Context, key string) error {
	c.n[OpDelete].Add(1)
	return c.Bucket.Delete(ctx, key)
}

func (c *Counter) List(ctx context.Context, opts ListOptions) (ListPage, error) {
	c.n[OpList].Add(1)
	return c.Bucket.List(ctx, opts)
}

// NewUpload keeps the streaming capability of the wrapped bucket; an
// upload counts as one Put (made at Commit).
func (c *Counter) NewUpload(ctx context.Context, key string, opts PutOptions) (Upload, error) {
	u, err := NewUpload(ctx, c.Bucket, key, opts)
	if err != nil {
		return nil, err
	}
	return &countedUpload{Upload: u, c: c}, nil
}

type countedUpload struct {
	Upload
	c *Counter
}

func (u *countedUpload) Commit(ctx context.Context) (Attrs, error) {
	u.c.n[OpPut].Add(1)
	return u.Upload.Commit(ctx)
}

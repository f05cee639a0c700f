package storage

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// Prefixed returns a Bucket that stores every key k of its callers at
// prefix+"/"+k in b. Keys seen by the caller (in Attrs and listings) never
// include the prefix. An empty prefix returns b unchanged. Leading and
// trailing slashes of prefix are trimmed.
func Prefixed(b Bucket, prefix string) (Bucket, error) {
	prefix = strings.Trim(prefix, "/")
	if prefix == "" {
		return b, nil
	}
	if err := ValidKey(prefix); err != nil {
		return nil, fmt.Errorf("prefix %q: %w", prefix, err)
	}
	return &prefixed{b: b, p: prefix + "/"}, nil
}

type prefixed struct {
	b Bucket
	p string
}

func (p *prefixed) strip(a Attrs) Attrs {
	a.Key = strings.TrimPrefix(a.Key, p.p)
	return a
}

func (p *prefixed) Get(ctx context.Context, key string) (io.ReadCloser, Attrs, error) {
	if err := ValidKey(key); err != nil {
		return nil, Attrs{}, &Error{Op: "get", Key: key, Err: err}
	}
	rc, a, err := p.b.Get(ctx, p.p+key)
	return rc, p.strip(a), err
}

func (p *prefixed) Put(ctx context.Context, key string, body io.Reader, opts PutOptions) (Attrs, error) {
	if err := ValidKey(key); err != nil {
		return Attrs{}, &Error{Op: "put", Key: key, Err: err}
	}
	a, err := p.b.Put(ctx, p.p+key, body, opts)
	return p.strip(a), err
}

func (p *prefixed) Stat(ctx context.Context, key string) (Attrs, error) {
	if err := ValidKey(key); err != nil {
		return Attrs{}, &Error{Op: "stat", Key: key, Err: err}
	}
	a, err := p.b.Stat(ctx, p.p+key)
	return p.strip(a), err
}

func (p *prefixed) Delete(ctx context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return &Error{Op: "delete", Key: key, Err: err}
	}
	return p.b.Delete(ctx, p.p+key)
}

func (p *prefixed) List(ctx context.Context, opts ListOptions) (ListPage, error) {
	opts.Prefix = p.p + opts.Prefix
	if opts.StartAfter != "" {
		opts.StartAfter = p.p + opts.StartAfter
	}
	page, err := p.b.List(ctx, opts)
	for i := range page.Objects {
		page.Objects[i] = p.strip(page.Objects[i])
	}
	for i := range page.Prefixes {
		page.Prefixes[i] = strings.TrimPrefix(page.Prefixes[i], p.p)
	}
	page.Next = strings.TrimPrefix(page.Next, p.p)
	return page, err
}

// NewUpload keeps the streaming capability of the wrapped bucket.
func (p *prefixed) NewUpload(ctx context.Context, key string, opts PutOptions) (Upload, error) {
	if err := ValidKey(key); err != nil {
		return nil, &Error{Op: "upload", Key: key, Err: err}
	}
	u, err := NewUpload(ctx, p.b, p.p+key, opts)
	if err != nil {
		return nil, err
	}
	return &prefixedUpload{Upload: u, p: p}, nil
}

type prefixedUpload struct {
	Upload
	p *prefixed
}

func (u *prefixedUpload) Commit(ctx context.Context) (Attrs, error) {
	a, err := u.Upload.Commit(ctx)
	return u.p.strip(a), err
}

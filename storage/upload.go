package storage

import (
	"context"
	"fmt"
	"io"
	"os"
)

// Uploader is an optional capability of a Bucket: writing one object as a
// stream, without the caller or the driver holding it whole. s3store
// implements it with a multipart upload. Callers use NewUpload, which
// falls back to a temporary file for buckets without it; wrappers
// (Prefixed, Counter, metrics) implement it by calling NewUpload on what
// they wrap, so the capability survives wrapping.
type Uploader interface {
	// NewUpload starts writing the object at key. Conditional options
	// (IfMatch, IfNoneMatch) are not supported and fail with
	// ErrInvalidArgument; opts.Size is ignored. Nothing is visible at key
	// before Commit.
	NewUpload(ctx context.Context, key string, opts PutOptions) (Upload, error)
}

// Upload is one object being written by an Uploader.
//
// Write appends to the object (it may send a part to the store, so it
// can fail with any storage error). Commit makes the whole object visible
// at its key at once, replacing any object there, as a Put does; after a
// failed Write only Abort is allowed. Abort discards what was written and
// is a no-op after Commit or a former Abort. Exactly one of Commit or
// Abort must be called, else storage may keep the parts (on S3 until a
// lifecycle rule removes incomplete uploads). An Upload is not safe for
// concurrent use.
type Upload interface {
	io.Writer
	Commit(ctx context.Context) (Attrs, error)
	Abort(ctx context.Context) error
}

// NewUpload starts a streaming write of key in b: b's own Upload when b
// implements Uploader, else one that spools the body to a temporary file
// and Puts it (a seekable body, so no driver buffers it) at Commit.
func NewUpload(ctx context.Context, b Bucket, key string, opts PutOptions) (Upload, error) {
	if err := ValidKey(key); err != nil {
		return nil, &Error{Op: "upload", Key: key, Err: err}
	}
	if opts.IfMatch != "" || opts.IfNoneMatch != "" {
		return nil, &Error{Op: "upload", Key: key, Err: fmt.Errorf("%w: a streaming upload cannot be conditional", ErrInvalidArgument)}
	}
	if u, ok := b.(Uploader); ok {
		return u.NewUpload(ctx, key, opts)
	}
	f, err := os.CreateTemp("", "fhirbucket-upload-*")
	if err != nil {
		return nil, &Error{Op: "upload", Key: key, Err: fmt.Errorf("%w: temporary file: %w", ErrUnavailable, err)}
	}
	return &spooled{b: b, key: key, opts: opts, f: f}, nil
}

// spooled is the Upload of a bucket without the capability.
type spooled struct {
	b    Bucket
	key  string
	opts PutOptions
	f    *os.File
	n    int64
	done bool
}

func (s *spooled) Write(p []byte) (int, error) {
	if s.done {
		return 0, &Error{Op: "upload", Key: s.key, Err: ErrUploadDone}
	}
	n, err := s.f.Write(p)
	s.n += int64(n)
	if err != nil {
		return n, &Error{Op: "upload", Key: s.key, Err: fmt.Errorf("%w: temporary file: %w", ErrUnavailable, err)}
	}
	return n, nil
}

func (s *spooled) Commit(ctx context.Context) (Attrs, error) {
	if s.done {
		return Attrs{}, &Error{Op: "upload", Key: s.key, Err: ErrUploadDone}
	}
	defer s.Abort(ctx)
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return Attrs{}, &Error{Op: "upload", Key: s.key, Err: fmt.Errorf("%w: temporary file: %w", ErrUnavailable, err)}
	}
	opts := s.opts
	opts.Size = s.n
	return s.b.Put(ctx, s.key, s.f, opts)
}

func (s *spooled) Abort(context.Context) error {
	if s.done {
		return nil
	}
	s.done = true
	name := s.f.Name()
	s.f.Close()
	return os.Remove(name)
}

// ErrUploadDone reports a Write or Commit after Commit or Abort (it wraps
// ErrInvalidArgument).
var ErrUploadDone = fmt.Errorf("%w: the upload is already committed or aborted", ErrInvalidArgument)

package s3store

import (
	"bytes"
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"fhirbucket/storage"
)

// PartSize is the size of the parts of a multipart upload (S3 requires at
// least 5 MiB for every part but the last). An Upload holds at most one
// part in memory.
const PartSize = 8 << 20

var _ storage.Uploader = (*Bucket)(nil)

// NewUpload starts a streaming write of key. Nothing is sent until PartSize
// bytes are written: an object smaller than that is one PutObject at
// Commit, a larger one a multipart upload (CreateMultipartUpload at the
// first full part, UploadPart per part, CompleteMultipartUpload at
// Commit). Abort sends AbortMultipartUpload when an upload was begun.
func (b *Bucket) NewUpload(ctx context.Context, key string, opts storage.PutOptions) (storage.Upload, error) {
	if err := storage.ValidKey(key); err != nil {
		return nil, &storage.Error{Op: "upload", Key: key, Err: err}
	}
	if opts.IfMatch != "" || opts.IfNoneMatch != "" {
		return nil, &storage.Error{Op: "upload", Key: key, Err: fmt.Errorf("%w: a streaming upload cannot be conditional", storage.ErrInvalidArgument)}
	}
	return &upload{ctx: ctx, b: b, key: key, opts: opts}, nil
}

type upload struct {
	// ctx is NewUpload's: io.Writer has no context, so the parts that
	// Write sends run under it.
	ctx   context.Context
	b     *Bucket
	key   string
	opts  storage.PutOptions
	buf   bytes.Buffer
	id    *string // multipart upload id once begun
	parts []types.CompletedPart
	size  int64
	err   error // the first failure: only Abort is allowed after it
	done  bool
}

func (u *upload) fail(op string, err error) error {
	e := &storage.Error{Op: op, Key: u.key, Err: err}
	if u.err == nil {
		u.err = e
	}
	return e
}

func (u *upload) Write(p []byte) (int, error) {
	switch {
	case u.done:
		return 0, &storage.Error{Op: "upload", Key: u.key, Err: storage.ErrUploadDone}
	case u.err != nil:
		return 0, u.err
	}
	n := 0
	for len(p) > 0 {
		take := min(len(p), PartSize-u.buf.Len())
		u.buf.Write(p[:take])
		p, n = p[take:], n+take
		if u.buf.Len() == PartSize {
			if err := u.flush(u.ctx); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// flush sends the buffer as the next part, beginning the multipart upload
// first if needed.
func (u *upload) flush(ctx context.Context) error {
	if u.id == nil {
		in := &s3.CreateMultipartUploadInput{Bucket: &u.b.name, Key: &u.key}
		if u.opts.ContentType != "" {
			in.ContentType = aws.String(u.opts.ContentType)
		} else {
			in.Metadata = map[string]string{noContentTypeMeta: "1"}
		}
		out, err := u.b.c.s3.CreateMultipartUpload(ctx, in)
		if err != nil {
			return u.fail("upload", mapError(ctx, err, false))
		}
		u.id = out.UploadId
	}
	num := int32(len(u.parts) + 1)
	body := bytes.NewReader(u.buf.Bytes())
	out, err := u.b.c.s3.UploadPart(ctx, &s3.UploadPartInput{
		Bucket: &u.b.name, Key: &u.key, UploadId: u.id, PartNumber: aws.Int32(num),
		Body: body, ContentLength: aws.Int64(int64(u.buf.Len())),
	})
	if err != nil {
		return u.fail("upload part", mapError(ctx, err, false))
	}
	u.parts = append(u.parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(num)})
	u.size += int64(u.buf.Len())
	u.buf.Reset()
	return nil
}

func (u *upload) Commit(ctx context.Context) (storage.Attrs, error) {
	switch {
	case u.done:
		return storage.Attrs{}, &storage.Error{Op: "upload", Key: u.key, Err: storage.ErrUploadDone}
	case u.err != nil:
		return storage.Attrs{}, u.err
	}
	if u.id == nil {
		// Small enough for one request.
		u.done = true
		opts := u.opts
		opts.Size = int64(u.buf.Len())
		return u.b.Put(ctx, u.key, bytes.NewReader(u.buf.Bytes()), opts)
	}
	if u.buf.Len() > 0 {
		if err := u.flush(ctx); err != nil {
			return storage.Attrs{}, err
		}
	}
	out, err := u.b.c.s3.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{
		Bucket: &u.b.name, Key: &u.key, UploadId: u.id,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: u.parts},
	})
	if err != nil {
		return storage.Attrs{}, u.fail("complete upload", mapError(ctx, err, false))
	}
	u.done = true
	return storage.Attrs{
		Key: u.key, Size: u.size, ETag: aws.ToString(out.ETag),
		ModTime: responseTime(out.ResultMetadata), ContentType: u.opts.ContentType,
	}, nil
}

func (u *upload) Abort(ctx context.Context) error {
	if u.done {
		return nil
	}
	u.done = true
	u.buf = bytes.Buffer{}
	if u.id == nil {
		return nil
	}
	_, err := u.b.c.s3.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &u.b.name, Key: &u.key, UploadId: u.id})
	if err != nil {
		return &storage.Error{Op: "abort upload", Key: u.key, Err: mapError(ctx, err, false)}
	}
	return nil
}

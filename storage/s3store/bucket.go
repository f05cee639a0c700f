package s3store

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"fhirbucket/storage"
)

// Bucket is one S3 bucket seen as a storage.Bucket. Get it from
// Client.Bucket. It is safe for concurrent use.
type Bucket struct {
	c    *Client
	name string
}

var _ storage.Bucket = (*Bucket)(nil)

// Name returns the bucket name.
func (b *Bucket) Name() string { return b.name }

// Get opens the object for streaming; the caller closes the reader.
func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, storage.Attrs, error) {
	if err := storage.ValidKey(key); err != nil {
		return nil, storage.Attrs{}, &storage.Error{Op: "get", Key: key, Err: err}
	}
	out, err := b.c.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.name, Key: &key})
	if err != nil {
		return nil, storage.Attrs{}, &storage.Error{Op: "get", Key: key, Err: mapError(ctx, err, false)}
	}
	return out.Body, storage.Attrs{
		Key:         key,
		Size:        aws.ToInt64(out.ContentLength),
		ETag:        aws.ToString(out.ETag),
		ModTime:     aws.ToTime(out.LastModified),
		ContentType: contentType(out.ContentType, out.Metadata),
	}, nil
}

// Put writes the object. A body that implements io.ReadSeeker is sent as
// is from its current offset (the SDK seeks it to sign the payload and to
// rewind for retries); any other body is first read into memory, because a
// retried request must be able to resend it. opts.Size is not needed and
// not trusted: the length is taken from the seeker or the buffer.
func (b *Bucket) Put(ctx context.Context, key string, body io.Reader, opts storage.PutOptions) (storage.Attrs, error) {
	if err := storage.ValidKey(key); err != nil {
		return storage.Attrs{}, &storage.Error{Op: "put", Key: key, Err: err}
	}
	if err := storage.CheckPutOptions(opts); err != nil {
		return storage.Attrs{}, &storage.Error{Op: "put", Key: key, Err: err}
	}
	if body == nil {
		body = bytes.NewReader(nil)
	}
	rs, size, err := seekable(ctx, body)
	if err != nil {
		return storage.Attrs{}, &storage.Error{Op: "put", Key: key, Err: fmt.Errorf("reading body: %w", err)}
	}
	in := &s3.PutObjectInput{
		Bucket:        &b.name,
		Key:           &key,
		Body:          rs,
		ContentLength: aws.Int64(size),
	}
	if opts.ContentType != "" {
		in.ContentType = aws.String(opts.ContentType)
	} else {
		// S3 gives every object a Content-Type (binary/octet-stream on
		// AWS, application/octet-stream elsewhere); the marker lets Get and
		// Stat report "" as the storage contract asks.
		in.Metadata = map[string]string{noContentTypeMeta: "1"}
	}
	if opts.IfNoneMatch != "" {
		in.IfNoneMatch = aws.String(opts.IfNoneMatch)
	}
	if opts.IfMatch != "" {
		in.IfMatch = aws.String(opts.IfMatch)
	}
	var optFns []func(*s3.Options)
	if opts.IfNoneMatch != "" || opts.IfMatch != "" {
		optFns = append(optFns, conditionalRetries)
	}
	out, err := b.c.s3.PutObject(ctx, in, optFns...)
	if err != nil {
		return storage.Attrs{}, &storage.Error{Op: "put", Key: key, Err: mapError(ctx, err, false)}
	}
	return storage.Attrs{
		Key:         key,
		Size:        size,
		ETag:        aws.ToString(out.ETag),
		ModTime:     responseTime(out.ResultMetadata),
		ContentType: opts.ContentType,
	}, nil
}

// seekable returns body as an io.ReadSeeker positioned where body was, and
// the number of bytes from there to its end.
func seekable(ctx context.Context, body io.Reader) (io.ReadSeeker, int64, error) {
	if rs, ok := body.(io.ReadSeeker); ok {
		cur, err := rs.Seek(0, io.SeekCurrent)
		if err == nil {
			end, err := rs.Seek(0, io.SeekEnd)
			if err != nil {
				return nil, 0, err
			}
			if _, err := rs.Seek(cur, io.SeekStart); err != nil {
				return nil, 0, err
			}
			return rs, end - cur, nil
		}
		// Not really seekable (a pipe behind an *os.File): buffer it.
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(storage.ContextReader(ctx, body)); err != nil {
		return nil, 0, err
	}
	return bytes.NewReader(buf.Bytes()), int64(buf.Len()), nil
}

// noContentTypeMeta is the user-metadata key (x-amz-meta-…) marking an
// object written without a content type.
const noContentTypeMeta = "fhirbucket-no-content-type"

// contentType is the content type to report for an object.
func contentType(ct *string, meta map[string]string) string {
	for k := range meta {
		if strings.EqualFold(k, noContentTypeMeta) {
			return ""
		}
	}
	return aws.ToString(ct)
}

// responseTime is the server's Date header of a response (PutObject returns
// no Last-Modified), or the local time when it is missing.
func responseTime(md middleware.Metadata) time.Time {
	if resp, ok := awsmiddleware.GetRawResponse(md).(*smithyhttp.Response); ok && resp != nil {
		if t, err := http.ParseTime(resp.Header.Get("Date")); err == nil {
			return t
		}
	}
	return time.Now().UTC().Truncate(time.Second)
}

// Stat returns the object's attributes with a HEAD request.
func (b *Bucket) Stat(ctx context.Context, key string) (storage.Attrs, error) {
	if err := storage.ValidKey(key); err != nil {
		return storage.Attrs{}, &storage.Error{Op: "stat", Key: key, Err: err}
	}
	out, err := b.c.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.name, Key: &key})
	if err != nil {
		return storage.Attrs{}, &storage.Error{Op: "stat", Key: key, Err: mapError(ctx, err, true)}
	}
	return storage.Attrs{
		Key:         key,
		Size:        aws.ToInt64(out.ContentLength),
		ETag:        aws.ToString(out.ETag),
		ModTime:     aws.ToTime(out.LastModified),
		ContentType: contentType(out.ContentType, out.Metadata),
	}, nil
}

// Delete removes the object; a missing key is not an error.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	if err := storage.ValidKey(key); err != nil {
		return &storage.Error{Op: "delete", Key: key, Err: err}
	}
	_, err := b.c.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: &b.name, Key: &key})
	if err != nil {
		return &storage.Error{Op: "delete", Key: key, Err: mapError(ctx, err, false)}
	}
	return nil
}

// List returns one page with ListObjectsV2. Pages are continued by the
// caller with StartAfter = Next rather than S3 continuation tokens, so a
// listing can be resumed by any process from a plain key.
//
// Two server differences are smoothed over here, so that every server
// answers like AWS S3 (and like the other drivers):
//
//   - A StartAfter inside a common prefix G (Delimiter "/", StartAfter
//     "b/x/2" with G "b/") must still report G when keys after StartAfter
//     remain below it. MinIO and versitygw drop G because G sorts before
//     StartAfter. The driver checks with one extra one-key request, made
//     only in that case (never for Next values, which skip G whole).
//   - MinIO sometimes answers IsTruncated=false for a full page that is
//     not the last (seen with a StartAfter inside a folder-like prefix).
//     A full page therefore always gets a Next; at worst the caller's next
//     call returns an empty, final page.
func (b *Bucket) List(ctx context.Context, opts storage.ListOptions) (storage.ListPage, error) {
	if err := storage.CheckListOptions(opts); err != nil {
		return storage.ListPage{}, &storage.Error{Op: "list", Key: opts.Prefix, Err: err}
	}
	maxKeys := storage.PageSize(opts.MaxKeys)
	in := &s3.ListObjectsV2Input{Bucket: &b.name}
	if opts.Prefix != "" {
		in.Prefix = aws.String(opts.Prefix)
	}
	if opts.StartAfter != "" {
		in.StartAfter = aws.String(opts.StartAfter)
	}
	if opts.Delimiter != "" {
		in.Delimiter = aws.String(opts.Delimiter)
	}

	var page storage.ListPage
	if g := enclosingPrefix(opts); g != "" {
		probe, err := b.c.s3.ListObjectsV2(ctx, &s3.ListObjectsV2Input{
			Bucket: &b.name, Prefix: aws.String(g), StartAfter: in.StartAfter, MaxKeys: aws.Int32(1),
		})
		if err != nil {
			return storage.ListPage{}, &storage.Error{Op: "list", Key: opts.Prefix, Err: mapError(ctx, err, false)}
		}
		if len(probe.Contents) > 0 {
			page.Prefixes = append(page.Prefixes, g)
			in.StartAfter = aws.String(storage.AfterPrefix(g))
			if maxKeys == 1 {
				page.Next = storage.AfterPrefix(g)
				return page, nil
			}
			maxKeys--
		}
	}
	in.MaxKeys = aws.Int32(int32(maxKeys))

	for {
		out, err := b.c.s3.ListObjectsV2(ctx, in)
		if err != nil {
			return storage.ListPage{}, &storage.Error{Op: "list", Key: opts.Prefix, Err: mapError(ctx, err, false)}
		}
		page.Objects = appendObjects(page.Objects, out.Contents)
		for _, p := range out.CommonPrefixes {
			page.Prefixes = append(page.Prefixes, aws.ToString(p.Prefix))
		}
		n := len(out.Contents) + len(out.CommonPrefixes)
		if n >= maxKeys || (aws.ToBool(out.IsTruncated) && n > 0) {
			page.Next = nextStart(page)
			return page, nil
		}
		if !aws.ToBool(out.IsTruncated) || out.NextContinuationToken == nil {
			return page, nil
		}
		// A truncated but empty answer cannot be continued with a key;
		// follow the server's token within this call instead.
		in.ContinuationToken = out.NextContinuationToken
		in.StartAfter = nil
	}
}

// enclosingPrefix returns the common prefix G that opts.StartAfter lies
// strictly inside (see List), or "" when there is none or StartAfter
// already skips all of G.
func enclosingPrefix(opts storage.ListOptions) string {
	if opts.Delimiter == "" || !strings.HasPrefix(opts.StartAfter, opts.Prefix) {
		return ""
	}
	rest := opts.StartAfter[len(opts.Prefix):]
	i := strings.Index(rest, opts.Delimiter)
	if i < 0 {
		return ""
	}
	g := opts.Prefix + rest[:i+len(opts.Delimiter)]
	// Keys never contain U+10FFFF, so a StartAfter at or past
	// AfterPrefix(g) is beyond every key under g.
	if strings.HasPrefix(opts.StartAfter[len(g):], "\U0010FFFF") {
		return ""
	}
	return g
}

func appendObjects(dst []storage.Attrs, objs []types.Object) []storage.Attrs {
	for _, o := range objs {
		dst = append(dst, storage.Attrs{
			Key:     aws.ToString(o.Key),
			Size:    aws.ToInt64(o.Size),
			ETag:    aws.ToString(o.ETag),
			ModTime: aws.ToTime(o.LastModified),
		})
	}
	return dst
}

// nextStart is the StartAfter that continues after the last entry of a
// non-empty page: the greater of the last key and the last common prefix
// (the two lists interleave in key order), a prefix being skipped whole.
func nextStart(page storage.ListPage) string {
	next := ""
	if n := len(page.Objects); n > 0 {
		next = page.Objects[n-1].Key
	}
	if n := len(page.Prefixes); n > 0 {
		if p := page.Prefixes[n-1]; strings.Compare(p, next) > 0 {
			next = storage.AfterPrefix(p)
		}
	}
	return next
}

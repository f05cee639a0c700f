package metrics

import (
	"context"
	"errors"
	"io"
	"time"

	"fhirbucket/storage"
)

// Storage operation label values. A conditional put is its own operation
// because it is the one whose failures mean contention rather than faults.
const (
	opGet          = "get"
	opPut          = "put"
	opPutIfNone    = "put_if_none_match"
	opPutIfMatch   = "put_if_match"
	opStat         = "stat"
	opList         = "list"
	opDelete       = "delete"
	outcomeOK      = "ok"
	outcomeMissing = "not_found"
)

// Outcome label values of the storage metrics, one per storage sentinel.
const (
	outcomePreconditionFailed = "precondition_failed"
	outcomeConflict           = "conflict"
)

// outcomeOf classifies a storage error by its sentinel.
func outcomeOf(err error) string {
	switch {
	case err == nil:
		return outcomeOK
	case errors.Is(err, storage.ErrNotExist):
		return outcomeMissing
	case errors.Is(err, storage.ErrPreconditionFailed):
		return outcomePreconditionFailed
	case errors.Is(err, storage.ErrConflict):
		return outcomeConflict
	case errors.Is(err, storage.ErrBucketNotFound):
		return "bucket_not_found"
	case errors.Is(err, storage.ErrAccessDenied):
		return "access_denied"
	case errors.Is(err, storage.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, storage.ErrInvalidKey), errors.Is(err, storage.ErrInvalidArgument):
		return "invalid"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	return "error"
}

// InstrumentBucket wraps b so that every call is counted and timed in
// fhirbucket_storage_requests_total and
// fhirbucket_storage_request_duration_seconds, and every lost conditional
// put in fhirbucket_storage_conditional_write_conflicts_total. It works
// for every driver; the wrapper adds no I/O and passes errors through
// unchanged.
func (m *Metrics) InstrumentBucket(b storage.Bucket) storage.Bucket {
	return &bucket{b: b, m: m}
}

type bucket struct {
	b storage.Bucket
	m *Metrics
}

var _ storage.Bucket = (*bucket)(nil)

func (w *bucket) observe(op string, start time.Time, err error) {
	outcome := outcomeOf(err)
	w.m.storageRequests.WithLabelValues(op, outcome).Inc()
	w.m.storageDuration.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if (op == opPutIfNone || op == opPutIfMatch) &&
		(outcome == outcomePreconditionFailed || outcome == outcomeConflict) {
		w.m.conflicts.WithLabelValues(outcome).Inc()
	}
}

func (w *bucket) Get(ctx context.Context, key string) (io.ReadCloser, storage.Attrs, error) {
	start := time.Now()
	rc, a, err := w.b.Get(ctx, key)
	w.observe(opGet, start, err)
	return rc, a, err
}

func (w *bucket) Put(ctx context.Context, key string, body io.Reader, opts storage.PutOptions) (storage.Attrs, error) {
	op := opPut
	switch {
	case opts.IfNoneMatch != "":
		op = opPutIfNone
	case opts.IfMatch != "":
		op = opPutIfMatch
	}
	start := time.Now()
	a, err := w.b.Put(ctx, key, body, opts)
	w.observe(op, start, err)
	return a, err
}

func (w *bucket) Stat(ctx context.Context, key string) (storage.Attrs, error) {
	start := time.Now()
	a, err := w.b.Stat(ctx, key)
	w.observe(opStat, start, err)
	return a, err
}

func (w *bucket) Delete(ctx context.Context, key string) error {
	start := time.Now()
	err := w.b.Delete(ctx, key)
	w.observe(opDelete, start, err)
	return err
}

func (w *bucket) List(ctx context.Context, opts storage.ListOptions) (storage.ListPage, error) {
	start := time.Now()
	p, err := w.b.List(ctx, opts)
	w.observe(opList, start, err)
	return p, err
}

// NewUpload keeps the streaming capability of the wrapped bucket; the
// Commit of an upload is counted and timed as a put.
func (w *bucket) NewUpload(ctx context.Context, key string, opts storage.PutOptions) (storage.Upload, error) {
	u, err := storage.NewUpload(ctx, w.b, key, opts)
	if err != nil {
		return nil, err
	}
	return &upload{Upload: u, w: w}, nil
}

type upload struct {
	storage.Upload
	w *bucket
}

func (u *upload) Commit(ctx context.Context) (storage.Attrs, error) {
	start := time.Now()
	a, err := u.Upload.Commit(ctx)
	u.w.observe(opPut, start, err)
	return a, err
}

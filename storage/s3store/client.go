// Package s3store is the storage.Bucket driver for AWS S3 and S3-compatible
// servers (MinIO, versitygw, …), built on aws-sdk-go-v2.
//
// A Client holds one SDK client, its connection pool, retry policy and
// request counters; Client.Bucket returns a storage.Bucket for one bucket.
// The driver never creates buckets: Client.CheckBuckets verifies at start-up
// that they exist and are reachable, so a typo in a bucket name is an error
// rather than an empty store.
//
// Native errors are normalised into the storage sentinels (see mapError):
// 412 is ErrPreconditionFailed, missing keys ErrNotExist, a missing bucket
// ErrBucketNotFound, 403 ErrAccessDenied, 409 ConditionalRequestConflict is
// retried and then ErrConflict, throttling/5xx/network errors are retried
// and then ErrUnavailable. Every error is a *storage.Error.
//
// Retries and conditional puts: a conditional Put is retried only after
// attempts the server rejected (throttling, 409 ConditionalRequestConflict)
// or that never left the client. An attempt that may have been applied (a
// lost response, a 5xx other than 503) is not retried, since the retry
// would fail its own precondition and report a write that happened as
// ErrPreconditionFailed; the Put fails with ErrUnavailable instead, an
// unknown outcome. So ErrPreconditionFailed always means that the
// condition did not hold for this write (see conditional.go).
package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"fhirbucket/storage"
)

// Client is a connection to one S3 service (AWS or an endpoint). It is safe
// for concurrent use; create one per process and share it.
type Client struct {
	s3      *s3.Client
	observe func(op storage.Op, outcome string, d time.Duration)
	n       [numOps]atomic.Int64
	conns   connSet
}

var _ io.Closer = (*Client)(nil)

// numOps is the number of storage.Op values counted (GET..DELETE).
const numOps = int(storage.OpDelete) + 1

// New validates cfg and builds a Client. It makes no network request; call
// CheckBuckets to verify connectivity.
func New(ctx context.Context, cfg Config) (*Client, error) {
	r, err := cfg.resolve(os.Getenv)
	if err != nil {
		return nil, err
	}

	c := &Client{observe: cfg.Observe}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	httpClient := awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConns = 0 // no global cap; the per-host cap below is what matters
		t.MaxIdleConnsPerHost = r.maxIdle
		t.IdleConnTimeout = 90 * time.Second
		t.DialContext = c.conns.dialer(dialer.DialContext)
		t.ForceAttemptHTTP2 = false // S3 speaks HTTP/1.1; h2 would multiplex every request on one connection
	})

	retryer := func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = r.maxAttempts
			if r.maxBackoff > 0 {
				o.MaxBackoff = r.maxBackoff
			}
			// The client-side retry quota would turn a burst of conflicts
			// under heavy concurrency into "retry quota exceeded" errors
			// without ever asking the server again; the server's own
			// throttling (SlowDown) is the signal we honour.
			o.RateLimiter = ratelimit.None
			// S3 answers 409 ConditionalRequestConflict when two conditional
			// writes of one key overlap; AWS documents it as retryable, and
			// the retry then resolves to success or a real 412.
			o.Retryables = append([]retry.IsErrorRetryable{
				retry.RetryableErrorCode{Codes: map[string]struct{}{"ConditionalRequestConflict": {}}},
			}, o.Retryables...)
		})
	}

	opts := []func(*config.LoadOptions) error{
		config.WithRegion(r.region),
		config.WithHTTPClient(httpClient),
		config.WithRetryer(retryer),
	}
	if cfg.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(cfg.Credentials))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3store: loading AWS configuration: %w", err)
	}

	c.s3 = s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		o.UsePathStyle = r.pathStyle
		if r.endpoint != "" {
			o.BaseEndpoint = aws.String(r.endpoint)
			// S3-compatible servers differ in their support for the
			// SDK's default flexible checksums (aws-chunked trailers);
			// send and check checksums only where an API requires them.
			o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		}
		// Without this the SDK asks for response checksums on every GET and
		// logs a warning for each object stored without one.
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
			return st.Finalize.Insert(countAttempts{c}, "Retry", middleware.After)
		})
	})
	return c, nil
}

// Close closes every connection the client holds, idle in its keep-alive
// pool or not: call it once no request of the client or of its buckets is
// in flight. A request made after Close opens a new connection, so Close
// is no guard against later use; it releases sockets, as a process
// that creates clients (tests, benchmarks) must. It always returns nil.
func (c *Client) Close() error {
	c.conns.closeAll()
	return nil
}

// Bucket returns the storage.Bucket for the named bucket. It does not check
// that the bucket exists (see CheckBuckets).
func (c *Client) Bucket(name string) *Bucket {
	return &Bucket{c: c, name: name}
}

// CheckBuckets sends HeadBucket for each name and reports the first
// failure: a missing bucket wraps storage.ErrBucketNotFound, a 403
// storage.ErrAccessDenied, an unreachable server storage.ErrUnavailable.
// The error names the bucket. It never creates a bucket.
func (c *Client) CheckBuckets(ctx context.Context, names ...string) error {
	for _, name := range names {
		_, err := c.s3.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(name)})
		if err != nil {
			err = mapError(ctx, err, true)
			if errors.Is(err, storage.ErrNotExist) {
				err = fmt.Errorf("%w: %w", storage.ErrBucketNotFound, err)
			}
			return &storage.Error{Op: "check bucket", Key: name, Err: fmt.Errorf("bucket %q: %w", name, err)}
		}
	}
	return nil
}

// Requests returns the number of wire requests sent so far, by operation
// and including retries and failed attempts. HeadBucket counts as Head.
func (c *Client) Requests() storage.Counts {
	return storage.Counts{
		Get: c.n[storage.OpGet].Load(), Put: c.n[storage.OpPut].Load(), Head: c.n[storage.OpHead].Load(),
		List: c.n[storage.OpList].Load(), Delete: c.n[storage.OpDelete].Load(),
	}
}

// Outcomes passed to Config.Observe.
const (
	OutcomeOK                 = "ok"
	OutcomeNotFound           = "not_found"
	OutcomePreconditionFailed = "precondition_failed"
	OutcomeConflict           = "conflict"
	OutcomeAccessDenied       = "access_denied"
	OutcomeThrottled          = "throttled"
	OutcomeServerError        = "server_error"
	OutcomeClientError        = "client_error"
	OutcomeNetworkError       = "network_error"
	OutcomeCanceled           = "canceled"
)

// opOf maps an S3 API operation to the request kind it costs.
func opOf(name string) (storage.Op, bool) {
	switch name {
	case "GetObject":
		return storage.OpGet, true
	case "PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "AbortMultipartUpload":
		return storage.OpPut, true
	case "HeadObject", "HeadBucket":
		return storage.OpHead, true
	case "ListObjectsV2":
		return storage.OpList, true
	case "DeleteObject":
		return storage.OpDelete, true
	}
	return 0, false
}

// countAttempts is a Finalize-step middleware placed after the SDK's retry
// loop, so it runs once per wire attempt.
type countAttempts struct{ c *Client }

func (countAttempts) ID() string { return "fhirbucket.CountAttempts" }

func (m countAttempts) HandleFinalize(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (
	middleware.FinalizeOutput, middleware.Metadata, error,
) {
	op, ok := opOf(awsmiddleware.GetOperationName(ctx))
	if !ok {
		return next.HandleFinalize(ctx, in)
	}
	start := time.Now()
	out, md, err := next.HandleFinalize(ctx, in)
	m.c.n[op].Add(1)
	if m.c.observe != nil {
		m.c.observe(op, outcomeOf(ctx, md, err), time.Since(start))
	}
	return out, md, err
}

func outcomeOf(ctx context.Context, md middleware.Metadata, err error) string {
	if err == nil {
		return OutcomeOK
	}
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return OutcomeCanceled
	}
	status := 0
	if resp, ok := awsmiddleware.GetRawResponse(md).(*smithyhttp.Response); ok && resp != nil {
		status = resp.StatusCode
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	switch {
	case status == 0:
		return OutcomeNetworkError
	case status == http.StatusNotFound:
		return OutcomeNotFound
	case status == http.StatusPreconditionFailed:
		return OutcomePreconditionFailed
	case status == http.StatusConflict:
		return OutcomeConflict
	case status == http.StatusForbidden:
		return OutcomeAccessDenied
	case status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable:
		return OutcomeThrottled
	case status >= 500:
		return OutcomeServerError
	}
	return OutcomeClientError
}

// connSet tracks the open connections of a Client, so that Close can close
// them: the SDK's HTTP client copies the transport it is given and offers
// no way to reach the copy's idle pool.
type connSet struct {
	mu    sync.Mutex
	conns map[*trackedConn]struct{}
}

// dialer wraps dial so that every connection it opens is tracked until
// closed.
func (s *connSet) dialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		tc := &trackedConn{Conn: conn, set: s}
		s.mu.Lock()
		if s.conns == nil {
			s.conns = map[*trackedConn]struct{}{}
		}
		s.conns[tc] = struct{}{}
		s.mu.Unlock()
		return tc, nil
	}
}

func (s *connSet) closeAll() {
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for tc := range conns {
		_ = tc.Conn.Close()
	}
}

// trackedConn leaves its connSet when closed.
type trackedConn struct {
	net.Conn
	set *connSet
}

func (tc *trackedConn) Close() error {
	tc.set.mu.Lock()
	delete(tc.set.conns, tc)
	tc.set.mu.Unlock()
	return tc.Conn.Close()
}

package s3store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"fhirbucket/storage"
)

// The tests in this file talk to an httptest server that answers with
// canned S3 responses, so the error mapping and retry policy are checked on
// the wire without a real S3 server.

// cannedResponse is one scripted answer of the fake server.
type cannedResponse struct {
	status int
	code   string // S3 error code; "" sends no body (as for HEAD)
	header map[string]string
	body   string // raw body when code is ""
}

func s3Error(status int, code string) cannedResponse {
	return cannedResponse{status: status, code: code}
}

var okPut = cannedResponse{status: 200, header: map[string]string{"ETag": `"etag-1"`}}

// fakeS3 serves the scripted responses in order (repeating the last one)
// and records the requests it received.
type fakeS3 struct {
	mu        sync.Mutex
	responses []cannedResponse
	requests  []*http.Request
}

func (f *fakeS3) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	f.mu.Lock()
	i := min(len(f.requests), len(f.responses)-1)
	f.requests = append(f.requests, r.Clone(context.Background()))
	resp := f.responses[i]
	f.mu.Unlock()

	for k, v := range resp.header {
		w.Header().Set(k, v)
	}
	w.Header().Set("Date", time.Now().UTC().Format(http.TimeFormat))
	if resp.code != "" && r.Method != http.MethodHead {
		body := fmt.Sprintf(`<?xml version="1.0" encoding="UTF-8"?>`+
			`<Error><Code>%s</Code><Message>canned %s</Message><RequestId>req-1</RequestId></Error>`, resp.code, resp.code)
		w.Header().Set("Content-Type", "application/xml")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(resp.status)
		_, _ = io.WriteString(w, body)
		return
	}
	if resp.body != "" && r.Method != http.MethodHead {
		w.Header().Set("Content-Length", fmt.Sprint(len(resp.body)))
	}
	w.WriteHeader(resp.status)
	if r.Method != http.MethodHead {
		_, _ = io.WriteString(w, resp.body)
	}
}

func (f *fakeS3) attempts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

const wireAttempts = 3

func newWireClient(t *testing.T, endpoint string, observe func(storage.Op, string, time.Duration)) *Client {
	t.Helper()
	c, err := New(t.Context(), Config{
		EndpointURL: endpoint,
		AllowHTTP:   true,
		Credentials: credentials.NewStaticCredentialsProvider("AKIDTEST", "secret", ""),
		MaxAttempts: wireAttempts,
		MaxBackoff:  time.Millisecond,
		Observe:     observe,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// callOp runs one storage operation by name and returns its error.
func callOp(ctx context.Context, b *Bucket, op string) error {
	switch op {
	case "get":
		rc, _, err := b.Get(ctx, "k")
		if err == nil {
			rc.Close()
		}
		return err
	case "put":
		_, err := b.Put(ctx, "k", strings.NewReader("body"), storage.PutOptions{Size: 4})
		return err
	case "put-if-none-match":
		_, err := b.Put(ctx, "k", strings.NewReader("body"), storage.PutOptions{Size: 4, IfNoneMatch: "*"})
		return err
	case "put-if-match":
		_, err := b.Put(ctx, "k", strings.NewReader("body"), storage.PutOptions{Size: 4, IfMatch: `"e"`})
		return err
	case "stat":
		_, err := b.Stat(ctx, "k")
		return err
	case "delete":
		return b.Delete(ctx, "k")
	case "list":
		_, err := b.List(ctx, storage.ListOptions{Prefix: "k"})
		return err
	}
	panic("unknown op " + op)
}

func TestWireErrorMapping(t *testing.T) {
	tests := []struct {
		name      string
		op        string
		responses []cannedResponse
		want      error // nil: success
		notWant   error
		attempts  int
	}{
		{"get NoSuchKey", "get", []cannedResponse{s3Error(404, "NoSuchKey")}, storage.ErrNotExist, nil, 1},
		{"head 404 without body", "stat", []cannedResponse{s3Error(404, "NotFound")}, storage.ErrNotExist, nil, 1},
		{"get NoSuchBucket", "get", []cannedResponse{s3Error(404, "NoSuchBucket")}, storage.ErrBucketNotFound, storage.ErrNotExist, 1},
		{"list NoSuchBucket", "list", []cannedResponse{s3Error(404, "NoSuchBucket")}, storage.ErrBucketNotFound, nil, 1},
		{"put NoSuchBucket", "put", []cannedResponse{s3Error(404, "NoSuchBucket")}, storage.ErrBucketNotFound, nil, 1},
		{"delete NoSuchBucket", "delete", []cannedResponse{s3Error(404, "NoSuchBucket")}, storage.ErrBucketNotFound, nil, 1},
		{"if-none-match 412", "put-if-none-match", []cannedResponse{s3Error(412, "PreconditionFailed")}, storage.ErrPreconditionFailed, nil, 1},
		{"if-match 412", "put-if-match", []cannedResponse{s3Error(412, "PreconditionFailed")}, storage.ErrPreconditionFailed, nil, 1},
		{"if-match on missing key", "put-if-match", []cannedResponse{s3Error(404, "NoSuchKey")}, storage.ErrNotExist, nil, 1},
		{"409 conflict retried to success", "put-if-none-match", []cannedResponse{s3Error(409, "ConditionalRequestConflict"), okPut}, nil, nil, 2},
		{"409 conflict retried to 412", "put-if-none-match", []cannedResponse{s3Error(409, "ConditionalRequestConflict"), s3Error(412, "PreconditionFailed")}, storage.ErrPreconditionFailed, storage.ErrConflict, 2},
		{"409 conflict that survives retries", "put-if-match", []cannedResponse{s3Error(409, "ConditionalRequestConflict")}, storage.ErrConflict, storage.ErrPreconditionFailed, wireAttempts},
		{"get AccessDenied", "get", []cannedResponse{s3Error(403, "AccessDenied")}, storage.ErrAccessDenied, nil, 1},
		{"head 403 without body", "stat", []cannedResponse{s3Error(403, "Forbidden")}, storage.ErrAccessDenied, nil, 1},
		{"put bad signature", "put", []cannedResponse{s3Error(403, "SignatureDoesNotMatch")}, storage.ErrAccessDenied, nil, 1},
		{"SlowDown until retries run out", "get", []cannedResponse{s3Error(503, "SlowDown")}, storage.ErrUnavailable, nil, wireAttempts},
		{"500 until retries run out", "list", []cannedResponse{s3Error(500, "InternalError")}, storage.ErrUnavailable, nil, wireAttempts},
		{"head 503 until retries run out", "stat", []cannedResponse{s3Error(503, "ServiceUnavailable")}, storage.ErrUnavailable, nil, wireAttempts},
		{"500 then success", "put", []cannedResponse{s3Error(500, "InternalError"), okPut}, nil, nil, 2},
		{"delete of a missing key succeeds", "delete", []cannedResponse{{status: 204}}, nil, nil, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeS3{responses: tc.responses}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			b := newWireClient(t, srv.URL, nil).Bucket("bkt")

			err := callOp(t.Context(), b, tc.op)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("%s: unexpected error %v", tc.op, err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("%s: error %v, want %v", tc.op, err, tc.want)
			case tc.notWant != nil && errors.Is(err, tc.notWant):
				t.Errorf("%s: error %v must not be %v", tc.op, err, tc.notWant)
			}
			if err != nil {
				var se *storage.Error
				if !errors.As(err, &se) || se.Key != "k" || se.Op == "" {
					t.Errorf("error %v is not a *storage.Error naming op and key", err)
				}
			}
			if got := fake.attempts(); got != tc.attempts {
				t.Errorf("server saw %d attempts, want %d", got, tc.attempts)
			}
		})
	}
}

func TestWireConditionalHeaders(t *testing.T) {
	tests := []struct {
		name    string
		opts    storage.PutOptions
		headers map[string]string // "" means must be absent
	}{
		{"plain", storage.PutOptions{ContentType: "application/fhir+json"},
			map[string]string{"If-None-Match": "", "If-Match": "", "Content-Type": "application/fhir+json"}},
		{"create-only", storage.PutOptions{IfNoneMatch: "*"},
			map[string]string{"If-None-Match": "*", "If-Match": "", "X-Amz-Meta-" + noContentTypeMeta: "1"}},
		{"replace-only", storage.PutOptions{IfMatch: `"abc"`},
			map[string]string{"If-Match": `"abc"`, "If-None-Match": ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeS3{responses: []cannedResponse{okPut}}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			b := newWireClient(t, srv.URL, nil).Bucket("bkt")
			a, err := b.Put(t.Context(), "dir/k", strings.NewReader("hello"), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if a.ETag != `"etag-1"` || a.Size != 5 || a.Key != "dir/k" || a.ModTime.IsZero() {
				t.Errorf("Put attrs = %+v", a)
			}
			r := fake.requests[0]
			if r.Method != http.MethodPut || r.URL.Path != "/bkt/dir/k" {
				t.Errorf("request %s %s, want PUT /bkt/dir/k (path style)", r.Method, r.URL.Path)
			}
			for h, want := range tc.headers {
				if got := r.Header.Get(h); got != want {
					t.Errorf("header %s = %q, want %q", h, got, want)
				}
			}
		})
	}
}

// listPage is a canned ListObjectsV2 answer.
func listPage(truncated bool, keys, prefixes []string) cannedResponse {
	var sb strings.Builder
	sb.WriteString(`<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>bkt</Name>`)
	fmt.Fprintf(&sb, "<IsTruncated>%t</IsTruncated>", truncated)
	for _, k := range keys {
		fmt.Fprintf(&sb, `<Contents><Key>%s</Key><Size>3</Size><ETag>"e"</ETag><LastModified>2026-01-02T03:04:05.000Z</LastModified></Contents>`, k)
	}
	for _, p := range prefixes {
		fmt.Fprintf(&sb, `<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>`, p)
	}
	if truncated {
		sb.WriteString("<NextContinuationToken>tok</NextContinuationToken>")
	}
	sb.WriteString("</ListBucketResult>")
	return cannedResponse{status: 200, header: map[string]string{"Content-Type": "application/xml"}, body: sb.String()}
}

func TestWireListNext(t *testing.T) {
	page := listPage
	tests := []struct {
		name      string
		responses []cannedResponse
		wantKeys  []string
		wantNext  string
		attempts  int
	}{
		{"complete", []cannedResponse{page(false, []string{"a", "b"}, nil)}, []string{"a", "b"}, "", 1},
		{"truncated after a key", []cannedResponse{page(true, []string{"a", "b"}, nil)}, []string{"a", "b"}, "b", 1},
		{"truncated after a prefix", []cannedResponse{page(true, []string{"a"}, []string{"b/"})}, []string{"a"}, storage.AfterPrefix("b/"), 1},
		{"truncated, key after the prefix", []cannedResponse{page(true, []string{"b0"}, []string{"b/"})}, []string{"b0"}, "b0", 1},
		{"empty truncated page is followed", []cannedResponse{page(true, nil, nil), page(false, []string{"z"}, nil)}, []string{"z"}, "", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeS3{responses: tc.responses}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			b := newWireClient(t, srv.URL, nil).Bucket("bkt")
			got, err := b.List(t.Context(), storage.ListOptions{StartAfter: "0", Delimiter: "/", MaxKeys: 5000})
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, o := range got.Objects {
				keys = append(keys, o.Key)
			}
			if !slices.Equal(keys, tc.wantKeys) || got.Next != tc.wantNext {
				t.Errorf("List = keys %q next %q, want %q next %q", keys, got.Next, tc.wantKeys, tc.wantNext)
			}
			if n := fake.attempts(); n != tc.attempts {
				t.Fatalf("%d requests, want %d", n, tc.attempts)
			}
			q := fake.requests[0].URL.Query()
			if q.Get("list-type") != "2" || q.Get("start-after") != "0" || q.Get("delimiter") != "/" || q.Get("max-keys") != "1000" {
				t.Errorf("first request query %v: want ListObjectsV2 with start-after, delimiter and max-keys capped at 1000", q)
			}
			if tc.attempts > 1 && fake.requests[1].URL.Query().Get("continuation-token") != "tok" {
				t.Errorf("second request did not continue with the token: %v", fake.requests[1].URL.Query())
			}
		})
	}
}

func TestWireUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there any more

	var mu sync.Mutex
	var outcomes []string
	c := newWireClient(t, "http://"+addr, func(op storage.Op, outcome string, _ time.Duration) {
		mu.Lock()
		outcomes = append(outcomes, op.String()+":"+outcome)
		mu.Unlock()
	})
	err = callOp(t.Context(), c.Bucket("bkt"), "get")
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("Get on a closed port: %v, want ErrUnavailable", err)
	}
	err = c.CheckBuckets(t.Context(), "bkt")
	if !errors.Is(err, storage.ErrUnavailable) || !strings.Contains(err.Error(), `"bkt"`) {
		t.Errorf("CheckBuckets on a closed port: %v, want ErrUnavailable naming the bucket", err)
	}
	if got := c.Requests(); got.Get != wireAttempts || got.Head != wireAttempts {
		t.Errorf("Requests() = %+v, want %d GET and %d HEAD attempts", got, wireAttempts, wireAttempts)
	}
	want := slices.Repeat([]string{"GET:network_error"}, wireAttempts)
	want = append(want, slices.Repeat([]string{"HEAD:network_error"}, wireAttempts)...)
	if !slices.Equal(outcomes, want) {
		t.Errorf("observed %q, want %q", outcomes, want)
	}
}

func TestWireContextCancelled(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-block:
		}
	}))
	defer srv.Close()
	defer close(block)
	b := newWireClient(t, srv.URL, nil).Bucket("bkt")

	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err := callOp(ctx, b, "put-if-none-match")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Put past its deadline: %v, want context.DeadlineExceeded", err)
	}
	if errors.Is(err, storage.ErrUnavailable) {
		t.Errorf("a caller's deadline must not be reported as ErrUnavailable: %v", err)
	}
}

func TestWireCountsRetries(t *testing.T) {
	fake := &fakeS3{responses: []cannedResponse{
		s3Error(409, "ConditionalRequestConflict"), okPut, // put: 2 attempts
		s3Error(404, "NoSuchKey"), // stat: 1
	}}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	var mu sync.Mutex
	var outcomes []string
	c := newWireClient(t, srv.URL, func(op storage.Op, outcome string, d time.Duration) {
		mu.Lock()
		outcomes = append(outcomes, op.String()+":"+outcome)
		mu.Unlock()
		if d <= 0 {
			t.Errorf("duration %v for %s", d, op)
		}
	})
	b := c.Bucket("bkt")
	if err := callOp(t.Context(), b, "put-if-none-match"); err != nil {
		t.Fatal(err)
	}
	if err := callOp(t.Context(), b, "stat"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("stat: %v", err)
	}
	if got, want := c.Requests(), (storage.Counts{Put: 2, Head: 1}); got != want {
		t.Errorf("Requests() = %+v, want %+v", got, want)
	}
	if want := []string{"PUT:conflict", "PUT:ok", "HEAD:not_found"}; !slices.Equal(outcomes, want) {
		t.Errorf("observed %q, want %q", outcomes, want)
	}
}

func TestInvalidInputNeverReachesTheWire(t *testing.T) {
	fake := &fakeS3{responses: []cannedResponse{okPut}}
	srv := httptest.NewServer(fake)
	defer srv.Close()
	c := newWireClient(t, srv.URL, nil)
	b := c.Bucket("bkt")
	ctx := t.Context()
	if _, err := b.Put(ctx, "../x", strings.NewReader("x"), storage.PutOptions{}); !errors.Is(err, storage.ErrInvalidKey) {
		t.Errorf("Put ../x: %v", err)
	}
	if _, err := b.Put(ctx, "x", strings.NewReader("x"), storage.PutOptions{IfNoneMatch: `"e"`}); !errors.Is(err, storage.ErrInvalidArgument) {
		t.Errorf("Put IfNoneMatch=etag: %v", err)
	}
	if _, err := b.List(ctx, storage.ListOptions{Delimiter: ","}); !errors.Is(err, storage.ErrInvalidArgument) {
		t.Errorf("List delimiter ',': %v", err)
	}
	if n := fake.attempts(); n != 0 || c.Requests().Total() != 0 {
		t.Errorf("invalid calls sent %d requests (counted %d)", n, c.Requests().Total())
	}
}

func TestEnclosingPrefix(t *testing.T) {
	tests := []struct {
		prefix, after, delim string
		want                 string
	}{
		{"", "b/x/2", "/", "b/"},
		{"", "b/", "/", "b/"},
		{"", "b", "/", ""},
		{"", "b/x/2", "", ""},
		{"a/", "a/b/c", "/", "a/b/"},
		{"a/", "a/b", "/", ""},
		{"a/", "z/b/c", "/", ""}, // StartAfter outside the prefix
		{"", storage.AfterPrefix("b/"), "/", ""},
		{"a/", storage.AfterPrefix("a/b/"), "/", ""},
		{"", "", "/", ""},
	}
	for _, tc := range tests {
		got := enclosingPrefix(storage.ListOptions{Prefix: tc.prefix, StartAfter: tc.after, Delimiter: tc.delim})
		if got != tc.want {
			t.Errorf("enclosingPrefix(prefix %q, after %q, delim %q) = %q, want %q", tc.prefix, tc.after, tc.delim, got, tc.want)
		}
	}
}

// TestWireStartAfterInsidePrefix checks the extra one-key probe List makes
// when StartAfter lies inside a common prefix (see Bucket.List).
func TestWireStartAfterInsidePrefix(t *testing.T) {
	tests := []struct {
		name         string
		probe        cannedResponse
		wantPrefixes []string
		wantMainMax  string
	}{
		{"keys remain below the prefix", listPage(false, []string{"b/y"}, nil), []string{"b/", "d/"}, "999"},
		{"nothing left below the prefix", listPage(false, nil, nil), []string{"d/"}, "1000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fake := &fakeS3{responses: []cannedResponse{tc.probe, listPage(false, []string{"c"}, []string{"d/"})}}
			srv := httptest.NewServer(fake)
			defer srv.Close()
			b := newWireClient(t, srv.URL, nil).Bucket("bkt")
			got, err := b.List(t.Context(), storage.ListOptions{StartAfter: "b/x/2", Delimiter: "/"})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Prefixes, tc.wantPrefixes) || len(got.Objects) != 1 || got.Next != "" {
				t.Errorf("List = %+v, want prefixes %q, object c, no Next", got, tc.wantPrefixes)
			}
			if n := fake.attempts(); n != 2 {
				t.Fatalf("%d requests, want the probe and the listing", n)
			}
			probe, main := fake.requests[0].URL.Query(), fake.requests[1].URL.Query()
			if probe.Get("prefix") != "b/" || probe.Get("start-after") != "b/x/2" || probe.Get("max-keys") != "1" || probe.Has("delimiter") {
				t.Errorf("probe query %v", probe)
			}
			wantAfter := "b/x/2"
			if len(tc.wantPrefixes) == 2 {
				wantAfter = storage.AfterPrefix("b/")
			}
			if main.Get("start-after") != wantAfter || main.Get("max-keys") != tc.wantMainMax || main.Get("delimiter") != "/" {
				t.Errorf("listing query %v, want start-after %q max-keys %s", main, wantAfter, tc.wantMainMax)
			}
		})
	}
}

// TestWireClose: Close closes the keep-alive connections the client left
// open, and a later request dials again.
func TestWireClose(t *testing.T) {
	var open atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("ETag", `"e"`)
		w.Header().Set("Content-Length", "0")
		w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	defer srv.Close()
	c := newWireClient(t, srv.URL, nil)
	b := c.Bucket("bkt")
	if _, err := b.Stat(t.Context(), "k"); err != nil {
		t.Fatalf("Stat: %v", err)
	}
	if open.Load() != 1 {
		t.Fatalf("%d open connections after one request, want 1 kept alive", open.Load())
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for open.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := open.Load(); n != 0 {
		t.Fatalf("%d connections still open after Close", n)
	}
	if _, err := b.Stat(t.Context(), "k"); err != nil {
		t.Fatalf("Stat after Close: %v", err)
	}
}

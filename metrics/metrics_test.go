package metrics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"fhirbucket/auth"
	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/metrics"
	"fhirbucket/server"
	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
)

// failPointer fails the next If-Match put of a current.json once armed,
// leaving a claimed but unfinished version behind: what a crash between
// the claim and the pointer write leaves.
type failPointer struct {
	storage.Bucket
	armed atomic.Bool
}

var errInjected = errors.New("injected failure")

func (f *failPointer) Put(ctx context.Context, key string, body io.Reader, opts storage.PutOptions) (storage.Attrs, error) {
	if opts.IfMatch != "" && strings.HasSuffix(key, "/current.json") && f.armed.CompareAndSwap(true, false) {
		return storage.Attrs{}, &storage.Error{Op: "put", Key: key, Err: errInjected}
	}
	return f.Bucket.Put(ctx, key, body, opts)
}

// newServer starts the FHIR handler behind the metrics middleware and the
// /metrics endpoint on a loopback listener.
func newServer(t *testing.T) (*httptest.Server, *failPointer) {
	t.Helper()
	m := metrics.New(metrics.Options{ProcessCollectors: true})
	fp := &failPointer{Bucket: memstore.New()}
	v, err := loadValidator()
	if err != nil {
		t.Fatal(err)
	}
	st, err := fhirstore.New(fhirstore.Config{
		Bucket: m.InstrumentBucket(fp), Validator: v,
		Hooks: fhirstore.Hooks{RollForward: m.RollForward},
	})
	if err != nil {
		t.Fatal(err)
	}
	h, err := server.New(server.Config{Store: st, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.WithEndpoint(m.Middleware(h)))
	t.Cleanup(srv.Close)
	return srv, fp
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func do(t *testing.T, method, url, body string, want int) []byte {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d: %s", method, url, resp.StatusCode, want, data)
	}
	return data
}

// scrape GETs /metrics over HTTP and parses the text format.
func scrape(t *testing.T, base string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("GET /metrics: Content-Type %q, want the text format", ct)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// value returns the counter or gauge value (or histogram sample count) of
// the series of family name with exactly the given labels; ok is false
// when there is no such series.
func value(fams map[string]*dto.MetricFamily, name string, labels map[string]string) (v float64, ok bool) {
	f := fams[name]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		if len(m.GetLabel()) != len(labels) {
			continue
		}
		for _, l := range m.GetLabel() {
			if labels[l.GetName()] != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

func TestScrapeAfterFHIRRequests(t *testing.T) {
	srv, fp := newServer(t)
	base := srv.URL

	before := scrape(t, base)
	if v, ok := value(before, "fhirbucket_fhirstore_roll_forwards_total", nil); !ok || v != 0 {
		t.Fatalf("roll-forwards before any request: %v (present %v), want 0", v, ok)
	}

	patient := `{"resourceType":"Patient","name":[{"family":"Metrics"}]}`
	var ids []string
	for range 2 {
		var created struct{ ID string }
		if err := json.Unmarshal(do(t, "POST", base+"/Patient", patient, http.StatusCreated), &created); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, created.ID)
	}
	do(t, "GET", base+"/Patient/"+ids[0], "", http.StatusOK)
	do(t, "GET", base+"/Patient/"+ids[0]+"/_history/1", "", http.StatusOK)
	do(t, "GET", base+"/Patient/does-not-exist", "", http.StatusNotFound)
	do(t, "GET", base+"/_history", "", http.StatusOK)
	do(t, "GET", base+"/metadata", "", http.StatusOK)

	// An update whose pointer write fails leaves version 2 claimed; the
	// next update meets the claim and rolls it forward.
	upd := fmt.Sprintf(`{"resourceType":"Patient","id":%q,"name":[{"family":"Updated"}]}`, ids[1])
	fp.armed.Store(true)
	do(t, "PUT", base+"/Patient/"+ids[1], upd, http.StatusInternalServerError)
	do(t, "PUT", base+"/Patient/"+ids[1], upd, http.StatusOK)

	fams := scrape(t, base)
	tests := []struct {
		name    string
		labels  map[string]string
		want    float64
		atLeast bool
	}{
		{"fhirbucket_http_requests_total", map[string]string{"interaction": "create", "method": "POST", "code": "201"}, 2, false},
		{"fhirbucket_http_requests_total", map[string]string{"interaction": "read", "method": "GET", "code": "200"}, 1, false},
		{"fhirbucket_http_requests_total", map[string]string{"interaction": "read", "method": "GET", "code": "404"}, 1, false},
		{"fhirbucket_http_requests_total", map[string]string{"interaction": "vread", "method": "GET", "code": "200"}, 1, false},
		{"fhirbucket_http_requests_total", map[string]string{"interaction": "history-system", "method": "GET", "code": "200"}, 1, false},
		{"fhirbucket_http_requests_total", map[string]string{"interaction": "capabilities", "method": "GET", "code": "200"}, 1, false},
		{"fhirbucket_http_requests_total", map[string]string{"interaction": "update", "method": "PUT", "code": "500"}, 1, false},
		{"fhirbucket_http_requests_total", map[string]string{"interaction": "update", "method": "PUT", "code": "200"}, 1, false},
		{"fhirbucket_http_request_duration_seconds", map[string]string{"interaction": "create"}, 2, false},
		{"fhirbucket_http_request_duration_seconds", map[string]string{"interaction": "read"}, 2, false},
		// Two creates: each claims with If-None-Match and moves current.json
		// with If-None-Match, and puts two events unconditionally.
		{"fhirbucket_storage_requests_total", map[string]string{"operation": "put_if_none_match", "outcome": "ok"}, 4, true},
		{"fhirbucket_storage_requests_total", map[string]string{"operation": "put", "outcome": "ok"}, 4, true},
		{"fhirbucket_storage_requests_total", map[string]string{"operation": "get", "outcome": "not_found"}, 1, true},
		{"fhirbucket_storage_requests_total", map[string]string{"operation": "put_if_match", "outcome": "error"}, 1, false},
		{"fhirbucket_storage_request_duration_seconds", map[string]string{"operation": "get"}, 3, true},
		// The second update's claim of version 2 met the first one's.
		{"fhirbucket_storage_conditional_write_conflicts_total", map[string]string{"reason": "precondition_failed"}, 1, false},
		{"fhirbucket_storage_conditional_write_conflicts_total", map[string]string{"reason": "conflict"}, 0, false},
		{"fhirbucket_fhirstore_roll_forwards_total", nil, 1, false},
		{"fhirbucket_http_requests_in_flight", nil, 0, false},
		{"fhirbucket_bulk_jobs_running", map[string]string{"kind": "export"}, 0, false},
		{"fhirbucket_bulk_jobs_finished_total", map[string]string{"kind": "submit", "result": "failed"}, 0, false},
	}
	for _, tc := range tests {
		got, ok := value(fams, tc.name, tc.labels)
		switch {
		case !ok:
			t.Errorf("%s%v: no such series", tc.name, tc.labels)
		case tc.atLeast && got < tc.want:
			t.Errorf("%s%v = %v, want >= %v", tc.name, tc.labels, got, tc.want)
		case !tc.atLeast && got != tc.want:
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
	if _, ok := fams["go_goroutines"]; !ok {
		t.Error("the Go runtime collector is missing")
	}
	// No label may carry a tenant or a resource id.
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				for _, id := range ids {
					if strings.Contains(l.GetValue(), id) {
						t.Errorf("%s has label %s=%q naming a resource id", name, l.GetName(), l.GetValue())
					}
				}
				if l.GetValue() == fhirstore.DefaultTenant {
					t.Errorf("%s has label %s=%q naming a tenant", name, l.GetName(), l.GetValue())
				}
			}
		}
	}
	// /metrics itself is not counted as a FHIR request.
	if _, ok := value(fams, "fhirbucket_http_requests_total", map[string]string{"interaction": "metrics", "method": "GET", "code": "200"}); ok {
		t.Error("scrapes are counted as HTTP requests")
	}
}

// labelOf sends one request through the metrics middleware to h and
// returns the interaction label it was counted under.
func labelOf(t *testing.T, h http.Handler, r *http.Request) string {
	t.Helper()
	m := metrics.New(metrics.Options{})
	m.Middleware(h).ServeHTTP(httptest.NewRecorder(), r)
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var labels []string
	for _, f := range fams {
		if f.GetName() != "fhirbucket_http_requests_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "interaction" {
					labels = append(labels, l.GetValue())
				}
			}
		}
	}
	if len(labels) != 1 {
		t.Fatalf("%s %s: counted under %q, want one interaction", r.Method, r.URL, labels)
	}
	return labels[0]
}

// loadValidator loads the schema validator once per test binary.
var loadValidator = sync.OnceValues(func() (*fhir.Validator, error) { return fhir.NewValidator(fhir.ValidatorOptions{}) })

// fhirHandler is the FHIR handler over an empty store.
func fhirHandler(t testing.TB, cfg server.Config) *server.Server {
	t.Helper()
	v, err := loadValidator()
	if err != nil {
		t.Fatal(err)
	}
	st, err := fhirstore.New(fhirstore.Config{Bucket: memstore.New(), Validator: v, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store, cfg.Logger = st, discardLogger()
	h, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestInteraction: the server names the interaction of each request from
// the route it matched (base path and tenant routing taken into account),
// and the middleware counts it under that name.
func TestInteraction(t *testing.T) {
	tests := []struct {
		base, routing, method, path, want string
	}{
		{"", "header", "GET", "/Patient/1", "read"},
		{"", "header", "HEAD", "/Patient/1", "read"},
		{"", "header", "PUT", "/Patient/1", "update"},
		{"", "header", "DELETE", "/Patient/1", "delete"},
		{"", "header", "POST", "/Patient", "create"},
		{"", "header", "POST", "/Patient/", "create"},
		{"", "header", "PUT", "/Patient", "conditional-update"},
		{"", "header", "DELETE", "/Patient", "conditional-delete"},
		{"", "header", "GET", "/Patient", "search-type"},
		{"", "header", "POST", "/Patient/_search", "search-type"},
		{"", "header", "GET", "/Patient/1/_history", "history-instance"},
		{"", "header", "GET", "/Patient/1/_history/3", "vread"},
		{"", "header", "GET", "/Patient/_history", "history-type"},
		{"", "header", "GET", "/_history", "history-system"},
		{"", "header", "GET", "/", "search-system"},
		{"", "header", "POST", "/", "batch"},
		{"", "header", "GET", "/metadata", "capabilities"},
		{"", "header", "GET", "/Patient/$everything", "operation"},
		{"", "header", "POST", "/Patient/1/$validate", "operation"},
		{"", "header", "GET", "/Patient/1/../2", "other"},
		{"", "header", "POST", "/Patient/$validate", "operation"},
		{"", "header", "POST", "/$export", "export"},
		{"", "header", "POST", "/$meta", "operation"},
		{"", "header", "GET", "/Patient/1/_history/$x", "operation"},
		{"", "header", "GET", "/healthz", "health"},
		{"", "header", "GET", "/readyz", "health"},
		{"", "header", "POST", "/metrics", "metrics"},
		{"", "header", "GET", "/NotAType/1", "other"},
		{"", "header", "POST", "/metadata", "other"},
		{"", "header", "POST", "/Patient/1", "other"},
		{"", "header", "PATCH", "/Patient/1", "other"},
		{"", "header", "GET", "/Patient/1/_history/3/x", "other"},
		{"", "header", "GET", "/Patient/a%2Fb", "read"},
		{"/fhir", "header", "GET", "/fhir/Patient/1", "read"},
		{"/fhir", "header", "GET", "/fhir", "search-system"},
		{"/fhir", "header", "GET", "/Patient/1", "other"},
		{"", "path", "GET", "/acme/Patient/1", "read"},
		{"", "path", "GET", "/metadata", "capabilities"},
		{"", "path", "GET", "/acme/metadata", "capabilities"},
		{"", "path", "GET", "/acme/_history", "history-system"},
		{"", "path", "GET", "/", "other"},
		{"fhir/", "path", "POST", "/fhir/acme/Observation", "create"},
		{"", "both", "GET", "/acme/Patient/1", "read"},
		{"", "both", "GET", "/Patient/1", "read"},
		{"", "both", "GET", "/Patient/1/_history", "history-instance"},
		{"", "both", "GET", "/acme/Patient/1/_history", "history-instance"},
	}
	handlers := map[string]http.Handler{}
	for _, tc := range tests {
		t.Run(tc.routing+" "+tc.method+" "+tc.base+tc.path, func(t *testing.T) {
			h := handlers[tc.base+" "+tc.routing]
			if h == nil {
				routing, err := server.ParseTenantRouting(tc.routing)
				if err != nil {
					t.Fatal(err)
				}
				h = fhirHandler(t, server.Config{BasePath: tc.base, TenantRouting: routing})
				handlers[tc.base+" "+tc.routing] = h
			}
			if got := labelOf(t, h, httptest.NewRequest(tc.method, "http://h"+tc.path, nil)); got != tc.want {
				t.Errorf("interaction %q, want %q", got, tc.want)
			}
		})
	}
}

// TestInteractionTurnedAway: a request refused before its handler runs
// (no token, an unsupported format, a malformed tenant) is still counted
// under the interaction of its route.
func TestInteractionTurnedAway(t *testing.T) {
	a, err := auth.Parse(strings.NewReader(`{"tokens":[{"name":"t","sha256":"` + auth.HashToken("tok") + `","tenant":"*","scopes":["system/*.*"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	h := fhirHandler(t, server.Config{Auth: a})
	for _, c := range []struct {
		name, header string
		status       int
	}{
		{"no token", "", 401},
		{"xml", "Accept: application/fhir+xml", 406},
		{"bad tenant", "X-Tenant-ID: ../x", 400},
	} {
		r := httptest.NewRequest("GET", "http://h/Patient/1", nil)
		if k, v, ok := strings.Cut(c.header, ": "); ok {
			r.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r.Clone(t.Context()))
		if rec.Code != c.status {
			t.Fatalf("%s: status %d, want %d: %s", c.name, rec.Code, c.status, rec.Body)
		}
		if got := labelOf(t, h, r); got != "read" {
			t.Errorf("%s: interaction %q, want read", c.name, got)
		}
	}
}

// TestRouteLabels: every route the server serves is counted under the
// label its row names.
func TestRouteLabels(t *testing.T) {
	h := fhirHandler(t, server.Config{})
	routes := h.Routes()
	if len(routes) < 10 {
		t.Fatalf("the server serves only %d routes", len(routes))
	}
	for _, rt := range routes {
		method, path, _ := strings.Cut(rt.Pattern, " ")
		path = strings.NewReplacer("{$}", "", "{type}", "Patient", "{id}", "p1", "{vid}", "1").Replace(path)
		if got := labelOf(t, h, httptest.NewRequest(method, "http://h"+path, nil)); got != rt.Label {
			t.Errorf("%s: interaction %q, want the row's %q", rt.Pattern, got, rt.Label)
		}
	}
}

// gather reads one series straight from the registry.
func gather(t *testing.T, m *metrics.Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	v, ok := value(byName, name, labels)
	if !ok {
		t.Fatalf("%s%v: no such series", name, labels)
	}
	return v
}

func TestInstrumentBucketOutcomes(t *testing.T) {
	m := metrics.New(metrics.Options{})
	b := m.InstrumentBucket(memstore.New())
	ctx := t.Context()
	put := func(key string, opts storage.PutOptions) error {
		_, err := b.Put(ctx, key, bytes.NewReader([]byte("x")), opts)
		return err
	}
	if err := put("a", storage.PutOptions{IfNoneMatch: "*"}); err != nil {
		t.Fatal(err)
	}
	if err := put("a", storage.PutOptions{IfNoneMatch: "*"}); !errors.Is(err, storage.ErrPreconditionFailed) {
		t.Fatalf("second create-only put: %v, want ErrPreconditionFailed (errors pass through unchanged)", err)
	}
	if err := put("a", storage.PutOptions{IfMatch: "not-the-etag"}); !errors.Is(err, storage.ErrPreconditionFailed) {
		t.Fatalf("If-Match put: %v", err)
	}
	if err := put("bad//key", storage.PutOptions{}); !errors.Is(err, storage.ErrInvalidKey) {
		t.Fatalf("invalid key: %v", err)
	}
	if _, _, err := b.Get(ctx, "missing"); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("get missing: %v", err)
	}
	if _, err := b.Stat(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.List(ctx, storage.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	_, _, _ = b.Get(canceled, "a")

	tests := []struct {
		op, outcome string
		want        float64
	}{
		{"put_if_none_match", "ok", 1},
		{"put_if_none_match", "precondition_failed", 1},
		{"put_if_match", "precondition_failed", 1},
		{"put", "invalid", 1},
		{"get", "not_found", 1},
		{"stat", "ok", 1},
		{"list", "ok", 1},
		{"delete", "ok", 1},
	}
	for _, tc := range tests {
		if got := gather(t, m, "fhirbucket_storage_requests_total", map[string]string{"operation": tc.op, "outcome": tc.outcome}); got != tc.want {
			t.Errorf("storage requests %s/%s = %v, want %v", tc.op, tc.outcome, got, tc.want)
		}
	}
	if got := gather(t, m, "fhirbucket_storage_conditional_write_conflicts_total", map[string]string{"reason": "precondition_failed"}); got != 2 {
		t.Errorf("conflicts = %v, want 2", got)
	}
}

func TestObserveS3AndBulk(t *testing.T) {
	m := metrics.New(metrics.Options{})
	m.ObserveS3(storage.OpPut, "precondition_failed", 3*time.Millisecond)
	m.ObserveS3(storage.OpGet, "ok", time.Millisecond)
	if got := gather(t, m, "fhirbucket_s3_wire_requests_total", map[string]string{"operation": "put", "outcome": "precondition_failed"}); got != 1 {
		t.Errorf("wire puts = %v, want 1", got)
	}
	if got := gather(t, m, "fhirbucket_s3_wire_request_duration_seconds", map[string]string{"operation": "get"}); got != 1 {
		t.Errorf("wire get latency samples = %v, want 1", got)
	}

	done1 := m.BulkJobStarted(metrics.BulkExport)
	done2 := m.BulkJobStarted(metrics.BulkExport)
	done3 := m.BulkJobStarted(metrics.BulkExport)
	if got := gather(t, m, "fhirbucket_bulk_jobs_running", map[string]string{"kind": "export"}); got != 3 {
		t.Errorf("running = %v, want 3", got)
	}
	m.BulkResources(metrics.BulkExport, 100, 2)
	done1(nil)
	done1(nil) // a second call is ignored
	done2(fmt.Errorf("lease lost: %w", metrics.ErrJobHandedOver))
	done3(errors.New("boom"))
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"fhirbucket_bulk_jobs_running", map[string]string{"kind": "export"}, 0},
		{"fhirbucket_bulk_jobs_finished_total", map[string]string{"kind": "export", "result": "completed"}, 1},
		{"fhirbucket_bulk_jobs_finished_total", map[string]string{"kind": "export", "result": "failed"}, 1},
		{"fhirbucket_bulk_resources_processed_total", map[string]string{"kind": "export"}, 100},
		{"fhirbucket_bulk_resource_errors_total", map[string]string{"kind": "export"}, 2},
	} {
		if got := gather(t, m, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}

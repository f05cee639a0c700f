package server

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"fhirbucket/fhirstore"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
)

// env is a server over the real resource store over memory, reached over
// real HTTP.
type env struct {
	t      testing.TB
	bucket storage.Bucket // what the store writes to (before the counter)
	count  *storage.Counter
	store  *fhirstore.Store
	srv    *httptest.Server
	url    string
	// logs collects the server log, to assert that internal details end
	// there and not in responses.
	logs *testenv.LockedBuffer
}

type envOpt func(*Config, *fhirstore.Config)

// newEnv starts a server; base is the bucket below the counter (nil: a new
// memstore).
func newEnv(t testing.TB, base storage.Bucket, opts ...envOpt) *env {
	t.Helper()
	return startEnv(t, base, opts, nil)
}

// startEnv is newEnv with services, a hook that completes the server's
// Config once the store exists (the identifier index, Bundles).
func startEnv(t testing.TB, base storage.Bucket, opts []envOpt, services func(*fhirstore.Store, *Config)) *env {
	t.Helper()
	if base == nil {
		base = memstore.New()
	}
	e := &env{t: t, bucket: base, count: storage.NewCounter(base), logs: &testenv.LockedBuffer{}}
	scfg := fhirstore.Config{Mode: fhirstore.TenancyPrefix, Bucket: e.count, Validator: testenv.Validator(t),
		Logger: testenv.QuietLogger()}
	cfg := Config{Logger: slog.New(slog.NewJSONHandler(e.logs, nil))}
	for _, o := range opts {
		o(&cfg, &scfg)
	}
	st, err := fhirstore.New(scfg)
	if err != nil {
		t.Fatalf("fhirstore.New: %v", err)
	}
	e.store = st
	cfg.Store = st
	if services != nil {
		services(st, &cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	e.srv = httptest.NewServer(h)
	t.Cleanup(e.srv.Close)
	e.url = e.srv.URL
	return e
}

// response is a finished HTTP exchange.
type response struct {
	status int
	header http.Header
	body   []byte
}

// hdr builds headers from "Name: value" strings.
func hdr(lines ...string) http.Header { return testenv.Headers(lines...) }

// jsonCT is the usual request header for bodies.
var jsonCT = hdr("Content-Type: application/fhir+json")

// do sends a request to the server; path may be absolute (a link).
func (e *env) do(method, path string, body string, h http.Header) *response {
	e.t.Helper()
	u := path
	if !strings.HasPrefix(path, "http") {
		u = e.url + path
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		e.t.Fatalf("new request %s %s: %v", method, path, err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	x := testenv.Send(e.t, e.srv.Client(), req)
	return &response{status: x.Status, header: x.Header, body: x.Body}
}

// mustStatus fails unless r has the status; it prints the body to explain.
func mustStatus(t testing.TB, what string, r *response, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d; body: %s", what, r.status, status, r.body)
	}
}

// isOutcome checks that r carries an OperationOutcome with an issue of
// the given code ("" = any) and the FHIR content type.
func isOutcome(t testing.TB, what string, r *response, code string) {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != fhirJSON {
		t.Errorf("%s: Content-Type %q, want %q", what, ct, fhirJSON)
	}
	var oo struct {
		ResourceType string
		Issue        []struct{ Severity, Code, Diagnostics string }
	}
	if err := json.Unmarshal(r.body, &oo); err != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 {
		t.Errorf("%s: body is not an OperationOutcome with issues: %s", what, r.body)
		return
	}
	if code != "" && oo.Issue[0].Code != code {
		t.Errorf("%s: issue code %q, want %q (%s)", what, oo.Issue[0].Code, code, oo.Issue[0].Diagnostics)
	}
	if oo.Issue[0].Diagnostics == "" {
		t.Errorf("%s: OperationOutcome without diagnostics", what)
	}
}

// snapshot lists every key and ETag in the bucket.
func snapshot(t testing.TB, b storage.Bucket) []string {
	t.Helper()
	var out []string
	for a, err := range storage.Walk(t.Context(), b, storage.ListOptions{}) {
		if err != nil {
			t.Fatalf("walk: %v", err)
		}
		out = append(out, a.Key+" "+a.ETag)
	}
	slices.Sort(out)
	return out
}

// patient returns a Patient body.
func patient(id, family string) string {
	if id == "" {
		return `{"resourceType":"Patient","name":[{"family":"` + family + `"}]}`
	}
	return `{"resourceType":"Patient","id":"` + id + `","name":[{"family":"` + family + `"}]}`
}

// bundleOf decodes a Bundle response.
type testBundle struct {
	ResourceType string `json:"resourceType"`
	Type         string `json:"type"`
	Total        *int   `json:"total"`
	Link         []struct {
		Relation, URL string
	} `json:"link"`
	Entry []struct {
		FullURL  string          `json:"fullUrl"`
		Resource json.RawMessage `json:"resource"`
		Search   *struct{ Mode string }
		Request  *struct{ Method, URL string }
		Response *struct {
			Status, Etag, LastModified string
		}
	} `json:"entry"`
}

func (b *testBundle) link(rel string) string {
	for _, l := range b.Link {
		if l.Relation == rel {
			return l.URL
		}
	}
	return ""
}

func decodeBundle(t testing.TB, r *response) *testBundle {
	t.Helper()
	var b testBundle
	if err := json.Unmarshal(r.body, &b); err != nil || b.ResourceType != "Bundle" {
		t.Fatalf("not a Bundle (%v): %s", err, r.body)
	}
	return &b
}

// resourceOf decodes the id and meta of a resource body.
type resMeta struct {
	ResourceType string `json:"resourceType"`
	ID           string `json:"id"`
	Meta         struct {
		VersionID   string `json:"versionId"`
		LastUpdated string `json:"lastUpdated"`
	} `json:"meta"`
}

func metaOf(t testing.TB, body []byte) resMeta {
	t.Helper()
	var m resMeta
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("resource body: %v: %s", err, body)
	}
	return m
}

type fhirstoreConfig = fhirstore.Config

package server_test

import (
	"encoding/json"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"fhirbucket/auth"
	"fhirbucket/fhirstore"
	"fhirbucket/internal/testenv"
	"fhirbucket/server"
	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
)

// Shared helpers of the black-box tests (auth_test.go, hostile_test.go,
// isolation_test.go): a real resource store over real buckets behind the
// real handler, reached over real HTTP.

// live is a running server.
type live struct {
	t      testing.TB
	url    string
	client *http.Client
	// errLog is net/http's own log (panics in handlers land here).
	errLog *testenv.LockedBuffer
	srv    *httptest.Server
}

// prefixStore is a resource store in prefix tenancy mode over b.
func prefixStore(t testing.TB, b storage.Bucket) *fhirstore.Store {
	t.Helper()
	st, err := fhirstore.New(fhirstore.Config{Mode: fhirstore.TenancyPrefix, Bucket: b, Validator: testenv.Validator(t), Logger: testenv.QuietLogger()})
	if err != nil {
		t.Fatalf("fhirstore.New: %v", err)
	}
	return st
}

// bucketStore is a resource store in bucket tenancy mode.
func bucketStore(t testing.TB, buckets map[string]storage.Bucket) *fhirstore.Store {
	t.Helper()
	st, err := fhirstore.New(fhirstore.Config{Mode: fhirstore.TenancyBucket, TenantBuckets: buckets, Validator: testenv.Validator(t), Logger: testenv.QuietLogger()})
	if err != nil {
		t.Fatalf("fhirstore.New: %v", err)
	}
	return st
}

// start serves cfg (Store must be set) on a real listener. The
// http.Server gets a short ReadHeaderTimeout as serve configures one.
func start(t testing.TB, cfg server.Config, opts ...func(*http.Server)) *live {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testenv.QuietLogger()
	}
	h, err := server.New(cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	l := &live{t: t, errLog: &testenv.LockedBuffer{}}
	l.srv = httptest.NewUnstartedServer(h)
	l.srv.Config.ErrorLog = log.New(l.errLog, "", 0)
	l.srv.Config.ReadHeaderTimeout = 2 * time.Second
	for _, o := range opts {
		o(l.srv.Config)
	}
	l.srv.Start()
	t.Cleanup(l.srv.Close)
	t.Cleanup(func() {
		if strings.Contains(l.errLog.String(), "panic") {
			t.Errorf("the server panicked:\n%s", l.errLog.String())
		}
	})
	l.url = l.srv.URL
	l.client = l.srv.Client()
	return l
}

// reply is a finished exchange.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func headers(lines ...string) http.Header { return testenv.Headers(lines...) }

// send sends one request; path is below the server root.
func (l *live) send(method, path, body string, h http.Header) *reply {
	l.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, l.url, rd)
	if err != nil {
		l.t.Fatalf("new request %s %q: %v", method, path, err)
	}
	// Opaque sends the path exactly as written: no cleaning, no
	// re-encoding, even when it is not a valid URL path.
	p, q, _ := strings.Cut(path, "?")
	req.URL.Opaque, req.URL.RawQuery = "//"+req.URL.Host+p, q
	for k, v := range h {
		req.Header[k] = v
	}
	if h.Get("Host") != "" {
		req.Host = h.Get("Host")
	}
	x := testenv.Send(l.t, l.client, req)
	return &reply{status: x.Status, header: x.Header, body: x.Body}
}

// outcomeCode returns the first issue code of an OperationOutcome body, or
// "" when the body is not one.
func outcomeCode(body []byte) string {
	var oo struct {
		ResourceType string
		Issue        []struct{ Code, Diagnostics string }
	}
	if json.Unmarshal(body, &oo) != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 || oo.Issue[0].Diagnostics == "" {
		return ""
	}
	return oo.Issue[0].Code
}

// objects lists every key with its ETag.
func objects(t testing.TB, b storage.Bucket) []string {
	t.Helper()
	var out []string
	for a, err := range storage.Walk(t.Context(), b, storage.ListOptions{}) {
		if err != nil {
			t.Fatalf("walk: %v", err)
		}
		out = append(out, a.Key+" "+a.ETag)
	}
	return out
}

func patientJSON(id, family string) string {
	if id == "" {
		return `{"resourceType":"Patient","name":[{"family":"` + family + `"}]}`
	}
	return `{"resourceType":"Patient","id":"` + id + `","name":[{"family":"` + family + `"}]}`
}

// --- authentication ---

// tokenSpec is one token of a test token file.
type tokenSpec struct {
	name, token, tenant string
	scopes              []string
}

func authenticator(t testing.TB, specs ...tokenSpec) *auth.Authenticator {
	t.Helper()
	var tf auth.TokenFile
	for _, s := range specs {
		tf.Tokens = append(tf.Tokens, auth.TokenEntry{Name: s.name, SHA256: auth.HashToken(s.token), Tenant: s.tenant, Scopes: s.scopes})
	}
	data, err := json.Marshal(tf)
	if err != nil {
		t.Fatal(err)
	}
	// Through a file, as serve reads it.
	path := filepath.Join(t.TempDir(), "tokens.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := auth.LoadFile(path)
	if err != nil {
		t.Fatalf("auth.LoadFile: %v", err)
	}
	return a
}

func bearer(tok string, more ...string) http.Header {
	return headers(append([]string{"Authorization: Bearer " + tok}, more...)...)
}

// concrete turns a route pattern into a request path and body for tenant
// "a" data: {type} Patient, {id} p1, {vid} 1.
func concrete(pattern string) (method, path, body string) {
	method, path, _ = strings.Cut(pattern, " ")
	path = strings.NewReplacer("{$}", "", "{type}", "Patient", "{id}", "p1", "{vid}", "1").Replace(path)
	switch method {
	case "POST":
		body = patientJSON("", "Posted")
		if path == "/" {
			body = `{"resourceType":"Bundle","type":"batch"}`
		}
	case "PUT":
		body = patientJSON("p1", "Put")
	}
	return method, path, body
}

// scopeFor is a scope granting exactly what the interaction needs, on typ
// (or on * when the interaction needs every type).
func scopeFor(in auth.Interaction, typ string) string {
	need := in.Need()
	if need.Named != "" {
		return "system/" + need.Named
	}
	if need.AllTypes {
		typ = "*"
	}
	return "system/" + typ + "." + need.Perm.String()
}

// TestAuthRoutes walks every route the server registers. Each one must be
// public (metadata) or answer 401 without a valid token, 403 with a token
// of another tenant, 403 with a token whose scopes miss the interaction
// (on this type or any other), and pass the check with the one scope it
// needs. Denied requests must not change the bucket.
func TestAuthRoutes(t *testing.T) {
	probe, err := server.New(server.Config{Store: prefixStore(t, memstore.New())})
	if err != nil {
		t.Fatal(err)
	}
	routes := probe.Routes()
	if len(routes) < 10 {
		t.Fatalf("the server registers only %d routes", len(routes))
	}

	specs := []tokenSpec{
		{"other-tenant", "tok-other-tenant", "b", []string{"system/*.*", "system/bulk-submit"}},
		{"nothing", "tok-nothing", "a", []string{"system/bulk-submit"}},
		{"admin", "tok-admin", "a", []string{"system/*.*"}},
	}
	exact := map[auth.Interaction]string{}
	wrongType := map[auth.Interaction]string{}
	for _, rt := range routes {
		if rt.Public() {
			continue
		}
		in := rt.Interaction
		if _, done := exact[in]; done {
			continue
		}
		exact[in] = "tok-exact-" + string(in)
		specs = append(specs, tokenSpec{"exact-" + string(in), exact[in], "a", []string{scopeFor(in, "Patient")}})
		if in.Need().Named == "" {
			// Everything it needs, but on another type.
			wrongType[in] = "tok-wrongtype-" + string(in)
			specs = append(specs, tokenSpec{"wrongtype-" + string(in), wrongType[in], "a", []string{"system/Observation.*"}})
		}
	}

	for _, mode := range []auth.Mode{auth.ModeToken, auth.ModeSMART} {
		for _, routing := range []server.TenantRouting{server.TenantHeader, server.TenantPath} {
			t.Run(string(mode)+"/"+routing.String(), func(t *testing.T) { authRoutes(t, mode, routing, routes, specs, exact, wrongType) })
		}
	}
}

// authRoutes is TestAuthRoutes in one auth mode and tenant routing. In
// smart mode every token spec is a registered client, and its token is
// the access token the token endpoint grants it.
func authRoutes(t *testing.T, mode auth.Mode, routing server.TenantRouting, routes []server.Route, specs []tokenSpec, exact, wrongType map[auth.Interaction]string) {
	bucket := memstore.New()
	store := prefixStore(t, bucket)
	var l *live
	tok := func(s string) string { return s }
	if mode == auth.ModeSMART {
		// The replay records go to a bucket of their own, so that the
		// test bucket changes only by what the routes do.
		svc, mint := smartAuth(t, memstore.New(), specs...)
		l = start(t, server.Config{Store: store, TenantRouting: routing, Auth: svc})
		tokens := mint(l)
		tok = func(s string) string {
			if v, ok := tokens[s]; ok {
				return v
			}
			return s
		}
	} else {
		l = start(t, server.Config{Store: store, TenantRouting: routing, Auth: authenticator(t, specs...)})
	}
	tenantPath := func(tenant, p string) (string, http.Header) {
		if routing == server.TenantPath {
			return "/" + tenant + p, http.Header{}
		}
		return p, headers("X-Tenant-ID: " + tenant)
	}
	tokenOf := tok
	req := func(method, p, body, tok, tenant string) *reply {
		t.Helper()
		path, h := tenantPath(tenant, p)
		if tok != "" {
			h.Set("Authorization", "Bearer "+tokenOf(tok))
		}
		if body != "" {
			h.Set("Content-Type", "application/fhir+json")
		}
		return l.send(method, path, body, h)
	}
	// Seed Patient/p1 in tenant a so that reads can succeed.
	if r := req("PUT", "/Patient/p1", patientJSON("p1", "Seed"), "tok-admin", "a"); r.status != 201 {
		t.Fatalf("seed: %d %s", r.status, r.body)
	}

	for _, rt := range routes {
		method, p, body := concrete(rt.Pattern)
		t.Run(rt.Pattern, func(t *testing.T) {
			denied := func(what, tok, tenant string, status int, code string) {
				t.Helper()
				before := objects(t, bucket)
				r := req(method, p, body, tok, tenant)
				if r.status != status || outcomeCode(r.body) != code {
					t.Errorf("%s: %d %q, want %d %q: %s", what, r.status, outcomeCode(r.body), status, code, r.body)
				}
				if ch := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, "Bearer") {
					t.Errorf("%s: WWW-Authenticate %q", what, ch)
				}
				if after := objects(t, bucket); !slices.Equal(before, after) {
					t.Errorf("%s changed the bucket", what)
				}
			}
			if rt.Public() {
				// Public: never 401 or 403 (the SMART
				// configuration is 404 outside smart mode).
				want := 200
				if rt.Interaction == auth.Discovery && mode != auth.ModeSMART {
					want = 404
				}
				if r := req(method, p, body, "", "a"); r.status != want {
					t.Errorf("public route without a token: %d %s", r.status, r.body)
				}
				if r := req(method, p, body, "tok-unknown", "a"); r.status != want {
					t.Errorf("public route with an unknown token: %d %s", r.status, r.body)
				}
				return
			}
			denied("no token", "", "a", 401, "login")
			denied("unknown token", "tok-unknown", "a", 401, "login")
			denied("another tenant's token", "tok-other-tenant", "a", 403, "forbidden")
			denied("token without resource scopes", "tok-nothing", "a", 403, "forbidden")
			if tok, ok := wrongType[rt.Interaction]; ok {
				denied("scopes on another type", tok, "a", 403, "forbidden")
			}
			r := req(method, p, body, exact[rt.Interaction], "a")
			if r.status == 401 || r.status == 403 || r.status >= 500 && r.status != 501 {
				t.Errorf("token with scope %s: %d %s", scopeFor(rt.Interaction, "Patient"), r.status, r.body)
			}
		})
	}
}

// TestAuthUnroutedRequests: requests that match no route still need a
// token; the 404 or 405 comes only after authentication.
func TestAuthUnroutedRequests(t *testing.T) {
	a := authenticator(t, tokenSpec{"admin", "tok-admin", "a", []string{"system/*.*"}})
	l := start(t, server.Config{Store: prefixStore(t, memstore.New()), Auth: a})
	for _, c := range []struct{ method, path string }{
		{"PATCH", "/Patient/p1"},
		{"GET", "/Patient/p1/_history/1/extra"},
		{"DELETE", "/Patient/p1/_history/1"},
		{"OPTIONS", "/Patient"},
		{"PUT", "/metadata"},
		{"POST", "/metadata"},
	} {
		r := l.send(c.method, c.path, "", headers("X-Tenant-ID: a"))
		if r.status != 401 || outcomeCode(r.body) != "login" {
			t.Errorf("%s %s without a token: %d %s", c.method, c.path, r.status, r.body)
		}
		r = l.send(c.method, c.path, "", bearer("tok-admin", "X-Tenant-ID: a"))
		if r.status != 404 && r.status != 405 {
			t.Errorf("%s %s with a token: %d, want 404 or 405: %s", c.method, c.path, r.status, r.body)
		}
	}
}

// TestAuthPublicEndpoints: health, readiness and the CapabilityStatement
// need no token, in every tenant routing.
func TestAuthPublicEndpoints(t *testing.T) {
	a := authenticator(t, tokenSpec{"admin", "tok-admin", "a", []string{"system/*.*"}})
	for _, routing := range []server.TenantRouting{server.TenantHeader, server.TenantPath, server.TenantBoth} {
		l := start(t, server.Config{Store: prefixStore(t, memstore.New()), TenantRouting: routing, Auth: a, BasePath: "/fhir"})
		for _, p := range []string{"/healthz", "/readyz", "/fhir/metadata"} {
			if r := l.send("GET", p, "", nil); r.status != 200 {
				t.Errorf("%s: GET %s: %d %s", routing, p, r.status, r.body)
			}
		}
		if routing != server.TenantHeader {
			if r := l.send("GET", "/fhir/a/metadata", "", nil); r.status != 200 {
				t.Errorf("%s: GET /fhir/a/metadata: %d %s", routing, r.status, r.body)
			}
			if r := l.send("GET", "/fhir/a/Patient", "", nil); r.status != 401 {
				t.Errorf("%s: GET /fhir/a/Patient without a token: %d %s", routing, r.status, r.body)
			}
		}
	}
}

// TestAuthTenantBinding: a token bound to tenant a is refused for tenant
// b however the tenant is named (header, path, default tenant), and a
// token bound to "*" works in both.
func TestAuthTenantBinding(t *testing.T) {
	a := authenticator(t,
		tokenSpec{"a", "tok-a", "a", []string{"system/*.*"}},
		tokenSpec{"ops", "tok-ops", "*", []string{"system/*.read"}},
	)
	for _, routing := range []server.TenantRouting{server.TenantHeader, server.TenantPath, server.TenantBoth} {
		l := start(t, server.Config{Store: prefixStore(t, memstore.New()), TenantRouting: routing, Auth: a})
		var inA, inB, inDefault string
		var hA, hB http.Header
		switch routing {
		case server.TenantHeader:
			inA, inB, inDefault = "/Patient", "/Patient", "/Patient"
			hA, hB = headers("X-Tenant-ID: a"), headers("X-Tenant-ID: b")
		default:
			inA, inB, inDefault = "/a/Patient", "/b/Patient", "/default/Patient"
			hA, hB = http.Header{}, http.Header{}
		}
		check := func(what, path string, h http.Header, tok string, want int) {
			t.Helper()
			if h = h.Clone(); h == nil {
				h = http.Header{}
			}
			h.Set("Authorization", "Bearer "+tok)
			r := l.send("GET", path, "", h)
			if r.status != want {
				t.Errorf("%s: %s: %d, want %d: %s", routing, what, r.status, want, r.body)
			}
			if want == 403 && outcomeCode(r.body) != "forbidden" {
				t.Errorf("%s: %s: outcome %s", routing, what, r.body)
			}
		}
		check("token a in a", inA, hA, "tok-a", 200)
		check("token a in b", inB, hB, "tok-a", 403)
		check("token a in the default tenant", inDefault, nil, "tok-a", 403)
		check("token * in a", inA, hA, "tok-ops", 200)
		check("token * in b", inB, hB, "tok-ops", 200)
		if routing == server.TenantBoth {
			// The path wins over the header: the header cannot widen a token.
			check("path b, header a", "/b/Patient", headers("X-Tenant-ID: a"), "tok-a", 403)
		}
	}
}

// TestAuthAccessLogNamesClient: the access log records which token made a
// request, never the token.
func TestAuthAccessLogNamesClient(t *testing.T) {
	a := authenticator(t, tokenSpec{"etl-a", "tok-secret-a", "a", []string{"system/*.*"}})
	logs := &testenv.LockedBuffer{}
	l := start(t, server.Config{Store: prefixStore(t, memstore.New()), Auth: a, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if r := l.send("GET", "/Patient", "", bearer("tok-secret-a", "X-Tenant-ID: a")); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if !strings.Contains(logs.String(), `"client":"etl-a"`) || strings.Contains(logs.String(), "tok-secret-a") {
		t.Errorf("access log: %s", logs.String())
	}
}

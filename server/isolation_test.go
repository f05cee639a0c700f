package server_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"fhirbucket/fhirstore"
	"fhirbucket/internal/s3test"
	"fhirbucket/server"
	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
)

// tenancy is a resource store with two tenants, a and b, and ways to look
// at each tenant's objects and count every storage request.
type tenancy struct {
	name  string
	store *fhirstore.Store
	// viewA and viewB list each tenant's objects, below the counters.
	viewA, viewB storage.Bucket
	counters     []*storage.Counter
	// mapped reports whether the mode knows only configured tenants.
	mapped bool
}

func (tn *tenancy) requests() int64 {
	var n int64
	for _, c := range tn.counters {
		n += c.Counts().Total()
	}
	return n
}

// prefixTenancy keeps both tenants in base, one prefix each.
func prefixTenancy(t testing.TB, base storage.Bucket) *tenancy {
	t.Helper()
	c := storage.NewCounter(base)
	va, err := storage.Prefixed(base, "a")
	if err != nil {
		t.Fatal(err)
	}
	vb, err := storage.Prefixed(base, "b")
	if err != nil {
		t.Fatal(err)
	}
	return &tenancy{name: "prefix", store: prefixStore(t, c), viewA: va, viewB: vb, counters: []*storage.Counter{c}}
}

// bucketTenancy maps tenant a to ba and b to bb.
func bucketTenancy(t testing.TB, ba, bb storage.Bucket) *tenancy {
	t.Helper()
	ca, cb := storage.NewCounter(ba), storage.NewCounter(bb)
	return &tenancy{name: "bucket", store: bucketStore(t, map[string]storage.Bucket{"a": ca, "b": cb}),
		viewA: ba, viewB: bb, counters: []*storage.Counter{ca, cb}, mapped: true}
}

// tenantClient sends requests as one tenant, by header or by path.
type tenantClient struct {
	l       *live
	tenant  string
	routing server.TenantRouting
}

func (c *tenantClient) send(method, path, body string, h ...string) *reply {
	c.l.t.Helper()
	hdr := headers(h...)
	if body != "" {
		hdr.Set("Content-Type", "application/fhir+json")
	}
	if c.routing == server.TenantHeader {
		hdr.Set("X-Tenant-ID", c.tenant)
	} else {
		path = "/" + c.tenant + path
	}
	return c.l.send(method, path, body, hdr)
}

// follow sends a next link's query again to path.
func (c *tenantClient) follow(path, link string) *reply {
	c.l.t.Helper()
	u, err := url.Parse(link)
	if err != nil {
		c.l.t.Fatalf("next link %q: %v", link, err)
	}
	return c.send("GET", path+"?"+u.RawQuery, "")
}

// isoBundle decodes the parts of a Bundle the isolation checks need.
type isoBundle struct {
	ResourceType string `json:"resourceType"`
	Total        *int   `json:"total"`
	Link         []struct{ Relation, URL string }
	Entry        []struct {
		FullURL  string          `json:"fullUrl"`
		Resource json.RawMessage `json:"resource"`
	} `json:"entry"`
}

func (b *isoBundle) next() string {
	for _, l := range b.Link {
		if l.Relation == "next" {
			return l.URL
		}
	}
	return ""
}

func bundleOf(t testing.TB, what string, r *reply) *isoBundle {
	t.Helper()
	var b isoBundle
	if r.status != 200 || json.Unmarshal(r.body, &b) != nil || b.ResourceType != "Bundle" {
		t.Fatalf("%s: %d, not a Bundle: %.300s", what, r.status, r.body)
	}
	return &b
}

// secretB marks every resource tenant b writes; tenant a must never see it.
const secretB = "SECRETB"

// checkIsolation writes data as tenant b, then uses every route as tenant
// a, including the same type and id, b's version numbers and b's paging
// cursors. Tenant a must never see b's data, and b's objects must stay
// exactly as they were.
func checkIsolation(t *testing.T, tn *tenancy, routing server.TenantRouting) {
	l := start(t, server.Config{Store: tn.store, TenantRouting: routing})
	a := &tenantClient{l: l, tenant: "a", routing: routing}
	b := &tenantClient{l: l, tenant: "b", routing: routing}

	for _, w := range []struct{ method, path, body string }{
		{"PUT", "/Patient/same", patientJSON("same", secretB+"1")},
		{"PUT", "/Patient/same", patientJSON("same", secretB+"2")},
		{"PUT", "/Patient/onlyb", patientJSON("onlyb", secretB)},
		{"PUT", "/Patient/onlyb2", patientJSON("onlyb2", secretB)},
		{"POST", "/Observation", `{"resourceType":"Observation","status":"final","code":{"text":"` + secretB + `"}}`},
		{"PUT", "/Patient/deletedb", patientJSON("deletedb", secretB)},
		{"DELETE", "/Patient/deletedb", ""},
	} {
		if r := b.send(w.method, w.path, w.body); r.status >= 300 {
			t.Fatalf("tenant b %s %s: %d %s", w.method, w.path, r.status, r.body)
		}
	}
	// The same type and id in a: a new resource at version 1, not b's v3.
	r := a.send("PUT", "/Patient/same", patientJSON("same", "PUBLICA"))
	if r.status != 201 || r.header.Get("ETag") != `W/"1"` {
		t.Fatalf("tenant a PUT Patient/same: %d %s %s, want 201 W/\"1\"", r.status, r.header.Get("ETag"), r.body)
	}
	// Paging cursors of b, to replay as a.
	bList := bundleOf(t, "b list", b.send("GET", "/Patient?_count=1", ""))
	bHist := bundleOf(t, "b history", b.send("GET", "/_history?_count=1", ""))
	bTypeHist := bundleOf(t, "b type history", b.send("GET", "/Patient/_history?_count=1", ""))
	if bList.next() == "" || bHist.next() == "" || bTypeHist.next() == "" {
		t.Fatalf("tenant b pages have no next link")
	}

	bBefore := objects(t, tn.viewB)
	aBefore := objects(t, tn.viewA)

	cases := []struct {
		name    string
		do      func() *reply
		status  int    // 0: any 2xx or 4xx
		entries int    // bundles: the number of entries (-1: not checked)
		total   int    // _summary=count: the total (-1: not checked)
		want    string // must appear in the body
	}{
		{"read same id", func() *reply { return a.send("GET", "/Patient/same", "") }, 200, -1, -1, "PUBLICA"},
		{"vread b's version", func() *reply { return a.send("GET", "/Patient/same/_history/2", "") }, 404, -1, -1, ""},
		{"vread own version", func() *reply { return a.send("GET", "/Patient/same/_history/1", "") }, 200, -1, -1, "PUBLICA"},
		{"read b-only id", func() *reply { return a.send("GET", "/Patient/onlyb", "") }, 404, -1, -1, ""},
		{"read b's deleted id", func() *reply { return a.send("GET", "/Patient/deletedb", "") }, 404, -1, -1, ""},
		{"vread b-only id", func() *reply { return a.send("GET", "/Patient/onlyb/_history/1", "") }, 404, -1, -1, ""},
		{"instance history of b-only id", func() *reply { return a.send("GET", "/Patient/onlyb/_history", "") }, 404, -1, -1, ""},
		{"instance history of same id", func() *reply { return a.send("GET", "/Patient/same/_history", "") }, 200, 1, -1, "PUBLICA"},
		{"type history", func() *reply { return a.send("GET", "/Patient/_history", "") }, 200, 1, -1, "PUBLICA"},
		{"type history of b-only type", func() *reply { return a.send("GET", "/Observation/_history", "") }, 200, 0, -1, ""},
		{"system history", func() *reply { return a.send("GET", "/_history", "") }, 200, 1, -1, "PUBLICA"},
		{"list", func() *reply { return a.send("GET", "/Patient", "") }, 200, 1, -1, "PUBLICA"},
		{"list b-only type", func() *reply { return a.send("GET", "/Observation", "") }, 200, 0, -1, ""},
		{"count", func() *reply { return a.send("GET", "/Patient?_summary=count", "") }, 200, -1, 1, ""},
		{"count b-only type", func() *reply { return a.send("GET", "/Observation?_summary=count", "") }, 200, -1, 0, ""},
		{"_id of b-only ids", func() *reply { return a.send("GET", "/Patient?_id=onlyb,onlyb2,deletedb", "") }, 200, 0, -1, ""},
		{"_id count of b-only ids", func() *reply { return a.send("GET", "/Patient?_id=onlyb,same&_summary=count", "") }, 200, -1, 1, ""},
		{"b's list cursor", func() *reply { return a.follow("/Patient", bList.next()) }, 0, -1, -1, ""},
		{"b's system history cursor", func() *reply { return a.follow("/_history", bHist.next()) }, 0, -1, -1, ""},
		{"b's type history cursor", func() *reply { return a.follow("/Patient/_history", bTypeHist.next()) }, 0, -1, -1, ""},
		{"update b-only id with b's version", func() *reply {
			return a.send("PUT", "/Patient/onlyb", patientJSON("onlyb", "A"), `If-Match: W/"1"`)
		}, 412, -1, -1, ""},
		{"update same id with b's version", func() *reply {
			return a.send("PUT", "/Patient/same", patientJSON("same", "A"), `If-Match: W/"2"`)
		}, 412, -1, -1, ""},
		{"delete same id with b's version", func() *reply { return a.send("DELETE", "/Patient/same", "", `If-Match: W/"2"`) }, 412, -1, -1, ""},
		{"delete b-only id", func() *reply { return a.send("DELETE", "/Patient/onlyb", "") }, 204, -1, -1, ""},
		{"delete b-only id with If-Match", func() *reply { return a.send("DELETE", "/Patient/onlyb2", "", `If-Match: W/"1"`) }, 412, -1, -1, ""},
		{"revive b's deleted id with b's tombstone version", func() *reply {
			return a.send("PUT", "/Patient/deletedb", patientJSON("deletedb", "A"), `If-Match: W/"2"`)
		}, 412, -1, -1, ""},
		{"create", func() *reply { return a.send("POST", "/Patient", patientJSON("", "NEWA")) }, 201, -1, -1, "NEWA"},
		{"update-as-create of b-only id", func() *reply {
			return a.send("PUT", "/Patient/onlyb2", patientJSON("onlyb2", "MINEA"))
		}, 201, -1, -1, "MINEA"},
	}
	for _, c := range cases {
		r := c.do()
		if strings.Contains(string(r.body), secretB) {
			t.Errorf("%s: tenant a sees tenant b's data: %.300s", c.name, r.body)
		}
		if c.status != 0 && r.status != c.status || c.status == 0 && (r.status >= 500 || r.status < 200) {
			t.Errorf("%s: status %d, want %d: %.300s", c.name, r.status, c.status, r.body)
			continue
		}
		if c.want != "" && !strings.Contains(string(r.body), c.want) {
			t.Errorf("%s: body lacks %q: %.300s", c.name, c.want, r.body)
		}
		if c.entries >= 0 || c.total >= 0 {
			bd := bundleOf(t, c.name, r)
			if c.entries >= 0 && len(bd.Entry) != c.entries {
				t.Errorf("%s: %d entries, want %d: %.300s", c.name, len(bd.Entry), c.entries, r.body)
			}
			if c.total >= 0 && (bd.Total == nil || *bd.Total != c.total) {
				t.Errorf("%s: total %v, want %d", c.name, bd.Total, c.total)
			}
		}
	}
	// b's objects are exactly as they were; a's writes went to a.
	if bAfter := objects(t, tn.viewB); !slices.Equal(bBefore, bAfter) {
		t.Errorf("tenant a's requests changed tenant b's objects:\nbefore %q\nafter  %q", bBefore, bAfter)
	}
	if aAfter := objects(t, tn.viewA); len(aAfter) <= len(aBefore) {
		t.Errorf("tenant a's writes are not in tenant a's keyspace (%d objects before, %d after)", len(aBefore), len(aAfter))
	}
	// And b still reads its own data.
	if r := b.send("GET", "/Patient/same", ""); r.status != 200 || !strings.Contains(string(r.body), secretB+"2") || r.header.Get("ETag") != `W/"2"` {
		t.Errorf("tenant b's Patient/same after a's requests: %d %s %s", r.status, r.header.Get("ETag"), r.body)
	}
	if bd := bundleOf(t, "b count", b.send("GET", "/Patient?_summary=count", "")); bd.Total == nil || *bd.Total != 3 {
		t.Errorf("tenant b's Patient count: %v, want 3", bd.Total)
	}
	if r := b.send("GET", "/Patient/onlyb", ""); r.status != 200 {
		t.Errorf("tenant b's Patient/onlyb after a's delete: %d", r.status)
	}
}

// escapingTenants are tenant names that would leave their prefix, collide
// with the layout's own folders, or are not tenant ids at all, as a header
// value and as a path segment.
var escapingTenants = []struct{ header, segment string }{
	{"../b", "..%2fb"},
	{"b/..", "b%2f.."},
	{"a/../b", "a%2f..%2fb"},
	{"..", "%2e%2e"},
	{".", "%2e"},
	{"a/b", "a%2fb"},
	{`a\..\b`, "a%5c..%5cb"},
	{"resources", "resources"},
	{"history", "history"},
	{"bulk", "bulk"},
	{"tenants", "tenants"},
	{"_system", "_system"},
	{strings.Repeat("a", 65), strings.Repeat("a", 65)},
	{"a b", "a%20b"},
	{".a", ".a"},
	{"-a", "-a"},
	{"a%2fb", "a%252fb"},
	{"ä", "%C3%A4"},
	{"a\x00b", "a%00b"},
}

// checkEscapes: each escaping tenant name answers 400 before any storage
// request, on reads and writes at every level.
func checkEscapes(t *testing.T, tn *tenancy, routing server.TenantRouting) {
	l := start(t, server.Config{Store: tn.store, TenantRouting: routing})
	names := escapingTenants
	if tn.mapped {
		// A well-formed tenant that has no bucket is refused the same way.
		names = append(slices.Clip(names), struct{ header, segment string }{"c", "c"})
	}
	for _, name := range names {
		for _, req := range []struct{ method, path, body string }{
			{"GET", "/Patient/p1", ""},
			{"PUT", "/Patient/p1", patientJSON("p1", "x")},
			{"POST", "/Patient", patientJSON("", "x")},
			{"DELETE", "/Patient/p1", ""},
			{"GET", "/Patient", ""},
			{"GET", "/_history", ""},
			{"GET", "/Patient/_history", ""},
		} {
			h := http.Header{}
			if req.body != "" {
				h.Set("Content-Type", "application/fhir+json")
			}
			path := req.path
			if routing == server.TenantHeader {
				if strings.ContainsAny(name.header, "\x00") {
					continue // no client can send it; the path form covers it
				}
				h.Set("X-Tenant-ID", name.header)
			} else {
				path = "/" + name.segment + path
			}
			before := tn.requests()
			r := l.send(req.method, path, req.body, h)
			if r.status != 400 || outcomeCode(r.body) == "" {
				t.Errorf("tenant %q: %s %s: %d, want 400 with an OperationOutcome: %.200s", name.header, req.method, path, r.status, r.body)
			}
			if n := tn.requests() - before; n != 0 {
				t.Errorf("tenant %q: %s %s made %d storage requests before refusing", name.header, req.method, path, n)
			}
		}
	}
}

var isolationRoutings = []server.TenantRouting{server.TenantHeader, server.TenantPath, server.TenantBoth}

// TestTenantIsolation runs the isolation checks in both tenancy modes
// over memory, with the tenant in the header and in the path.
func TestTenantIsolation(t *testing.T) {
	modes := map[string]func(t *testing.T) *tenancy{
		"prefix": func(t *testing.T) *tenancy { return prefixTenancy(t, memstore.New()) },
		"bucket": func(t *testing.T) *tenancy { return bucketTenancy(t, memstore.New(), memstore.New()) },
	}
	for mode, setup := range modes {
		for _, routing := range isolationRoutings {
			t.Run(mode+"/"+routing.String(), func(t *testing.T) {
				t.Run("isolation", func(t *testing.T) { checkIsolation(t, setup(t), routing) })
				t.Run("escapes", func(t *testing.T) { checkEscapes(t, setup(t), routing) })
			})
		}
	}
}

// TestTenantIsolationMinIO runs the same checks against a real MinIO, in
// both tenancy modes (RUN_MINIO_S3_TESTS=1).
func TestTenantIsolationMinIO(t *testing.T) {
	srv := s3test.MinIO(t)
	modes := map[string]func(t *testing.T) *tenancy{
		"prefix": func(t *testing.T) *tenancy { return prefixTenancy(t, srv.NewNamespace(t)) },
		"bucket": func(t *testing.T) *tenancy {
			if !srv.CanCreateBuckets() {
				// One fixed bucket: two namespaces stand in for two buckets.
				return bucketTenancy(t, srv.NewNamespace(t), srv.NewNamespace(t))
			}
			ca, na := srv.NewBucket(t)
			cb, nb := srv.NewBucket(t)
			return bucketTenancy(t, ca.Bucket(na), cb.Bucket(nb))
		},
	}
	for mode, setup := range modes {
		for _, routing := range []server.TenantRouting{server.TenantHeader, server.TenantPath} {
			t.Run(mode+"/"+routing.String(), func(t *testing.T) {
				t.Run("isolation", func(t *testing.T) { checkIsolation(t, setup(t), routing) })
				t.Run("escapes", func(t *testing.T) { checkEscapes(t, setup(t), routing) })
			})
		}
	}
}

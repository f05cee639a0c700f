package server

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// step is one request of a scenario and what its answer must hold.
// "{id}" in path and body is replaced by the id the first create got.
type step struct {
	name    string
	method  string
	path    string
	body    string
	header  http.Header
	status  int
	headers map[string]string // exact values; "*" = present; "-" = absent
	code    string            // OperationOutcome issue code expected (error answers)
	check   func(t *testing.T, r *response)
}

func runSteps(t *testing.T, e *env, steps []step) {
	t.Helper()
	id := ""
	for _, s := range steps {
		path := strings.ReplaceAll(s.path, "{id}", id)
		body := strings.ReplaceAll(s.body, "{id}", id)
		r := e.do(s.method, path, body, s.header)
		if r.status != s.status {
			t.Fatalf("%s: %s %s: status %d, want %d; body %s", s.name, s.method, path, r.status, s.status, r.body)
		}
		if id == "" && s.method == "POST" && r.status == http.StatusCreated {
			// From Location, which return=minimal leaves as the only source.
			loc := strings.TrimPrefix(r.header.Get("Location"), e.url+"/Patient/")
			id, _, _ = strings.Cut(loc, "/")
		}
		for k, want := range s.headers {
			want = strings.ReplaceAll(want, "{id}", id)
			got, present := r.header.Get(k), len(r.header.Values(k)) > 0
			switch want {
			case "*":
				if !present {
					t.Errorf("%s: header %s missing", s.name, k)
				}
			case "-":
				if present {
					t.Errorf("%s: header %s = %q, want none", s.name, k, got)
				}
			default:
				if strings.HasPrefix(want, "http") {
					want = e.url + strings.TrimPrefix(want, "http")
				}
				if got != want {
					t.Errorf("%s: header %s = %q, want %q", s.name, k, got, want)
				}
			}
		}
		if s.code != "" {
			isOutcome(t, s.name, r, s.code)
		}
		if s.check != nil {
			s.check(t, r)
		}
		if r.header.Get("Date") == "" {
			t.Errorf("%s: no Date header", s.name)
		}
	}
}

func wantBody(family string) func(t *testing.T, r *response) {
	return func(t *testing.T, r *response) {
		t.Helper()
		if !strings.Contains(string(r.body), `"family":"`+family+`"`) {
			t.Errorf("body lacks family %s: %s", family, r.body)
		}
	}
}

func wantVersion(v string) func(t *testing.T, r *response) {
	return func(t *testing.T, r *response) {
		t.Helper()
		if m := metaOf(t, r.body); m.Meta.VersionID != v {
			t.Errorf("meta.versionId %q, want %q: %s", m.Meta.VersionID, v, r.body)
		}
	}
}

func wantEmpty(t *testing.T, r *response) {
	t.Helper()
	if len(r.body) != 0 {
		t.Errorf("body %q, want none", r.body)
	}
}

func TestInteractions(t *testing.T) {
	e := newEnv(t, nil)
	ct := "application/fhir+json; charset=utf-8"
	runSteps(t, e, []step{
		{name: "create", method: "POST", path: "/Patient", body: patient("", "One"), header: jsonCT, status: 201,
			headers: map[string]string{"Location": "http/Patient/{id}/_history/1", "ETag": `W/"1"`, "Last-Modified": "*", "Content-Type": ct},
			check:   func(t *testing.T, r *response) { wantBody("One")(t, r); wantVersion("1")(t, r) }},
		{name: "read", method: "GET", path: "/Patient/{id}", status: 200,
			headers: map[string]string{"ETag": `W/"1"`, "Last-Modified": "*", "Content-Type": ct}, check: wantBody("One")},
		{name: "head", method: "HEAD", path: "/Patient/{id}", status: 200,
			headers: map[string]string{"ETag": `W/"1"`, "Last-Modified": "*"}, check: wantEmpty},
		{name: "read unknown", method: "GET", path: "/Patient/nope", status: 404, code: "not-found", headers: map[string]string{"ETag": "-"}},
		{name: "update", method: "PUT", path: "/Patient/{id}", body: patient("{id}", "Two"), header: jsonCT, status: 200,
			headers: map[string]string{"ETag": `W/"2"`, "Last-Modified": "*", "Location": "-"},
			check:   func(t *testing.T, r *response) { wantBody("Two")(t, r); wantVersion("2")(t, r) }},
		{name: "vread 1", method: "GET", path: "/Patient/{id}/_history/1", status: 200, headers: map[string]string{"ETag": `W/"1"`}, check: wantBody("One")},
		{name: "vread 2", method: "GET", path: "/Patient/{id}/_history/2", status: 200, headers: map[string]string{"ETag": `W/"2"`}, check: wantBody("Two")},
		{name: "vread unknown version", method: "GET", path: "/Patient/{id}/_history/9", status: 404, code: "not-found"},
		{name: "vread unknown resource", method: "GET", path: "/Patient/nope/_history/1", status: 404, code: "not-found"},
		{name: "update stale If-Match", method: "PUT", path: "/Patient/{id}", body: patient("{id}", "Stale"), header: hdr("Content-Type: application/fhir+json", `If-Match: W/"1"`), status: 412, code: "conflict"},
		{name: "update If-Match", method: "PUT", path: "/Patient/{id}", body: patient("{id}", "Three"), header: hdr("Content-Type: application/fhir+json", `If-Match: W/"2"`), status: 200,
			headers: map[string]string{"ETag": `W/"3"`}},
		{name: "delete stale If-Match", method: "DELETE", path: "/Patient/{id}", header: hdr(`If-Match: W/"2"`), status: 412, code: "conflict"},
		{name: "delete", method: "DELETE", path: "/Patient/{id}", header: hdr(`If-Match: W/"3"`), status: 204, headers: map[string]string{"ETag": `W/"4"`}, check: wantEmpty},
		{name: "read deleted", method: "GET", path: "/Patient/{id}", status: 410, code: "deleted", headers: map[string]string{"ETag": `W/"4"`}},
		{name: "vread tombstone", method: "GET", path: "/Patient/{id}/_history/4", status: 410, code: "deleted"},
		{name: "vread before delete", method: "GET", path: "/Patient/{id}/_history/3", status: 200, check: wantBody("Three")},
		{name: "delete again", method: "DELETE", path: "/Patient/{id}", status: 204},
		{name: "delete missing", method: "DELETE", path: "/Patient/never", status: 204, headers: map[string]string{"ETag": "-"}},
		{name: "restore", method: "PUT", path: "/Patient/{id}", body: patient("{id}", "Back"), header: hdr("Content-Type: application/fhir+json", `If-Match: W/"4"`), status: 200,
			headers: map[string]string{"ETag": `W/"5"`}, check: wantVersion("5")},
		{name: "read restored", method: "GET", path: "/Patient/{id}", status: 200, check: wantBody("Back")},
		{name: "update as create", method: "PUT", path: "/Patient/client-id", body: patient("client-id", "Client"), header: jsonCT, status: 201,
			headers: map[string]string{"Location": "http/Patient/client-id/_history/1", "ETag": `W/"1"`, "Last-Modified": "*"}},
		{name: "update body id differs", method: "PUT", path: "/Patient/client-id", body: patient("other", "X"), header: jsonCT, status: 400, code: "invalid"},
		{name: "update body id missing", method: "PUT", path: "/Patient/client-id", body: patient("", "X"), header: jsonCT, status: 400, code: "invalid"},
		{name: "If-Match on missing", method: "PUT", path: "/Patient/ghost", body: patient("ghost", "X"), header: hdr("Content-Type: application/fhir+json", `If-Match: W/"1"`), status: 412, code: "conflict"},
		{name: "create type mismatch", method: "POST", path: "/Observation", body: patient("", "X"), header: jsonCT, status: 400, code: "invalid"},
		{name: "conditional create", method: "POST", path: "/Patient", body: patient("", "X"), header: hdr("Content-Type: application/fhir+json", "If-None-Exist: identifier=a|b"), status: 501, code: "not-supported"},
		{name: "conditional update", method: "PUT", path: "/Patient?identifier=a|b", body: patient("", "X"), header: jsonCT, status: 501, code: "not-supported"},
		{name: "conditional delete", method: "DELETE", path: "/Patient?identifier=a|b", status: 501, code: "not-supported"},
		{name: "batch", method: "POST", path: "/", body: `{"resourceType":"Bundle","type":"batch"}`, header: jsonCT, status: 501, code: "not-supported"},
		{name: "operation", method: "POST", path: "/Patient/$validate", body: patient("", "X"), header: jsonCT, status: 501, code: "not-supported"},
		{name: "system operation", method: "GET", path: "/$export", status: 501, code: "not-supported"},
		{name: "unknown route", method: "GET", path: "/Patient/{id}/_history/1/extra", status: 404, code: "not-found"},
		{name: "wrong method", method: "PATCH", path: "/Patient/{id}", body: "[]", header: hdr("Content-Type: application/json-patch+json"), status: 405, code: "not-supported",
			headers: map[string]string{"Allow": "*"}},
		{name: "POST on instance", method: "POST", path: "/Patient/{id}", body: patient("", "X"), header: jsonCT, status: 405, headers: map[string]string{"Allow": "*"}},
		{name: "unknown type", method: "GET", path: "/Patientx/1", status: 404, code: "not-supported"},
		{name: "POST _search", method: "POST", path: "/Patient/_search", body: "_id=1", header: hdr("Content-Type: application/x-www-form-urlencoded"), status: 501, code: "not-supported"},
		{name: "system search", method: "GET", path: "/?_id=1", status: 501, code: "not-supported"},
	})
}

func TestPrefer(t *testing.T) {
	e := newEnv(t, nil)
	runSteps(t, e, []step{
		{name: "create minimal", method: "POST", path: "/Patient", body: patient("", "Min"), header: hdr("Content-Type: application/fhir+json", "Prefer: return=minimal"), status: 201,
			headers: map[string]string{"ETag": `W/"1"`, "Location": "*"}, check: wantEmpty},
		{name: "update representation", method: "PUT", path: "/Patient/{id}", body: patient("{id}", "Rep"), header: hdr("Content-Type: application/fhir+json", "Prefer: return=representation"), status: 200,
			check: wantBody("Rep")},
		{name: "update outcome", method: "PUT", path: "/Patient/{id}", body: patient("{id}", "OO"), header: hdr("Content-Type: application/fhir+json", "Prefer: return=OperationOutcome"), status: 200,
			headers: map[string]string{"ETag": `W/"3"`}, code: "informational"},
		{name: "delete outcome", method: "DELETE", path: "/Patient/{id}", header: hdr("Prefer: return=OperationOutcome"), status: 200, code: "informational"},
		{name: "unknown preference ignored", method: "POST", path: "/Patient", body: patient("", "P"), header: hdr("Content-Type: application/fhir+json", "Prefer: respond-async, return=bogus"), status: 201,
			check: wantBody("P")},
	})
}

func TestConditionalRead(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do("PUT", "/Patient/c1", patient("c1", "C"), jsonCT)
	mustStatus(t, "create", r, 201)
	lm, err := http.ParseTime(r.header.Get("Last-Modified"))
	if err != nil {
		t.Fatalf("Last-Modified %q: %v", r.header.Get("Last-Modified"), err)
	}
	cases := []struct {
		name   string
		path   string
		header http.Header
		status int
	}{
		{"If-None-Match same weak", "/Patient/c1", hdr(`If-None-Match: W/"1"`), 304},
		{"If-None-Match same strong form", "/Patient/c1", hdr(`If-None-Match: "1"`), 304},
		{"If-None-Match star", "/Patient/c1", hdr(`If-None-Match: *`), 304},
		{"If-None-Match list", "/Patient/c1", hdr(`If-None-Match: W/"7", W/"1"`), 304},
		{"If-None-Match other", "/Patient/c1", hdr(`If-None-Match: W/"2"`), 200},
		{"If-Modified-Since equal", "/Patient/c1", hdr("If-Modified-Since: " + lm.Format(http.TimeFormat)), 304},
		{"If-Modified-Since later", "/Patient/c1", hdr("If-Modified-Since: " + lm.Add(time.Hour).Format(http.TimeFormat)), 304},
		{"If-Modified-Since earlier", "/Patient/c1", hdr("If-Modified-Since: " + lm.Add(-time.Hour).Format(http.TimeFormat)), 200},
		{"If-Modified-Since garbage ignored", "/Patient/c1", hdr("If-Modified-Since: yesterday"), 200},
		{"If-None-Match wins over If-Modified-Since", "/Patient/c1", hdr(`If-None-Match: W/"2"`, "If-Modified-Since: "+lm.Add(time.Hour).Format(http.TimeFormat)), 200},
		{"vread If-None-Match", "/Patient/c1/_history/1", hdr(`If-None-Match: W/"1"`), 304},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do("GET", c.path, "", c.header)
			mustStatus(t, c.name, r, c.status)
			if r.header.Get("ETag") != `W/"1"` {
				t.Errorf("ETag %q, want W/\"1\"", r.header.Get("ETag"))
			}
			if c.status == 304 && len(r.body) != 0 {
				t.Errorf("304 with a body: %s", r.body)
			}
		})
	}
}

// TestStoreUnavailable checks the 503 path with a storage outage injected
// below the store: Retry-After, a transient issue, and no internal detail
// (keys) in the answer.
func TestStoreUnavailable(t *testing.T) {
	faulty := newFaultyBucket()
	e := newEnv(t, faulty)
	mustStatus(t, "create", e.do("PUT", "/Patient/u1", patient("u1", "U"), jsonCT), 201)
	faulty.failAll()
	for _, c := range []struct{ method, path, body string }{
		{"GET", "/Patient/u1", ""},
		{"PUT", "/Patient/u1", patient("u1", "V")},
		{"POST", "/Patient", patient("", "V")},
		{"DELETE", "/Patient/u1", ""},
		{"GET", "/Patient/u1/_history", ""},
		{"GET", "/Patient", ""},
		{"GET", "/_history", ""},
	} {
		r := e.do(c.method, c.path, c.body, jsonCT)
		mustStatus(t, c.method+" "+c.path, r, 503)
		isOutcome(t, c.method+" "+c.path, r, "transient")
		if r.header.Get("Retry-After") == "" {
			t.Errorf("%s %s: 503 without Retry-After", c.method, c.path)
		}
		if strings.Contains(string(r.body), "resources/") {
			t.Errorf("%s %s: storage keys leak into the answer: %s", c.method, c.path, r.body)
		}
	}
}

func TestParsePrefer(t *testing.T) {
	for _, c := range []struct {
		headers []string
		ret     string
		lenient bool
	}{
		{nil, "", false},
		{[]string{"return=minimal"}, "minimal", false},
		{[]string{"return=representation"}, "representation", false},
		{[]string{"return=OperationOutcome"}, "OperationOutcome", false},
		{[]string{`return="minimal"; x=y`}, "minimal", false},
		{[]string{"handling=lenient"}, "", true},
		{[]string{"handling=strict"}, "", false},
		{[]string{"respond-async, handling=lenient", "return=minimal"}, "minimal", true},
		{[]string{"RETURN = Minimal"}, "minimal", false},
		{[]string{"return=everything"}, "", false},
		{[]string{"return"}, "", false},
	} {
		r, _ := http.NewRequest("GET", "/", nil)
		for _, h := range c.headers {
			r.Header.Add("Prefer", h)
		}
		p := parsePrefer(r)
		if p.ret != c.ret || p.lenient != c.lenient {
			t.Errorf("Prefer %q: %+v, want ret=%q lenient=%v", c.headers, p, c.ret, c.lenient)
		}
	}
}

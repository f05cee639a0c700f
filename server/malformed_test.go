package server

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMalformed sends bad requests, each of which must answer a 4xx
// OperationOutcome (never 5xx) and leave every stored object unchanged.
func TestMalformed(t *testing.T) {
	const limit = 4096
	e := newEnv(t, nil, func(c *Config, _ *fhirstoreConfig) { c.MaxBodyBytes = limit })
	mustStatus(t, "seed", e.do("PUT", "/Patient/p1", patient("p1", "Seed"), jsonCT), 201)
	mustStatus(t, "seed deleted", e.do("PUT", "/Patient/gone", patient("gone", "G"), jsonCT), 201)
	mustStatus(t, "delete", e.do("DELETE", "/Patient/gone", "", nil), 204)

	long := strings.Repeat("a", 65)
	huge := `{"resourceType":"Patient","name":[{"family":"` + strings.Repeat("x", limit) + `"}]}`
	ct := func(v string) http.Header { return hdr("Content-Type: " + v) }
	ifMatch := func(v string) http.Header { return hdr("Content-Type: application/fhir+json", "If-Match: "+v) }
	cases := []struct {
		name   string
		method string
		path   string
		body   string
		header http.Header
		status int
	}{
		// broken bodies
		{"broken JSON", "POST", "/Patient", `{"resourceType":"Patient",`, jsonCT, 400},
		{"not an object", "POST", "/Patient", `[1,2]`, jsonCT, 400},
		{"string body", "POST", "/Patient", `"Patient"`, jsonCT, 400},
		{"trailing garbage", "POST", "/Patient", `{"resourceType":"Patient"} x`, jsonCT, 400},
		{"empty body", "POST", "/Patient", ``, jsonCT, 400},
		{"whitespace body", "PUT", "/Patient/p1", "  \n ", jsonCT, 400},
		{"no resourceType", "POST", "/Patient", `{"name":[{"family":"x"}]}`, jsonCT, 400},
		{"resourceType mismatch create", "POST", "/Patient", `{"resourceType":"Observation","status":"final","code":{"text":"x"}}`, jsonCT, 400},
		{"resourceType mismatch update", "PUT", "/Observation/p1", patient("p1", "x"), jsonCT, 400},
		{"unknown element", "POST", "/Patient", `{"resourceType":"Patient","foo":1}`, jsonCT, 400},
		{"wrong value type", "POST", "/Patient", `{"resourceType":"Patient","active":"yes"}`, jsonCT, 400},
		{"bad date", "POST", "/Patient", `{"resourceType":"Patient","birthDate":"31.12.1999"}`, jsonCT, 400},
		{"duplicate key", "POST", "/Patient", `{"resourceType":"Patient","active":true,"active":false}`, jsonCT, 400},
		{"invalid UTF-8", "POST", "/Patient", "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"\xff\"}]}", jsonCT, 400},
		{"body id differs", "PUT", "/Patient/p1", patient("p2", "x"), jsonCT, 400},
		{"body id missing", "PUT", "/Patient/p1", patient("", "x"), jsonCT, 400},
		{"body id invalid", "POST", "/Patient", `{"resourceType":"Patient","id":"../x"}`, jsonCT, 400},
		{"huge body", "POST", "/Patient", huge, jsonCT, 413},
		{"huge body on update", "PUT", "/Patient/p1", huge, jsonCT, 413},
		// content types
		{"XML content type", "POST", "/Patient", `<Patient xmlns="http://hl7.org/fhir"/>`, ct("application/fhir+xml"), 415},
		{"text/plain", "POST", "/Patient", patient("", "x"), ct("text/plain"), 415},
		{"form", "PUT", "/Patient/p1", patient("p1", "x"), ct("application/x-www-form-urlencoded"), 415},
		{"no content type", "POST", "/Patient", patient("", "x"), nil, 415},
		{"bad charset", "POST", "/Patient", patient("", "x"), ct("application/fhir+json; charset=latin1"), 415},
		{"unparsable content type", "POST", "/Patient", patient("", "x"), ct("application/;;"), 415},
		{"XML accepted only", "GET", "/Patient/p1", "", hdr("Accept: application/fhir+xml"), 406},
		{"XML _format", "GET", "/Patient/p1?_format=xml", "", nil, 406},
		{"html _format", "GET", "/Patient?_format=text/html", "", nil, 406},
		{"XML Accept on create", "POST", "/Patient", patient("", "x"), hdr("Content-Type: application/fhir+json", "Accept: application/xml"), 406},
		{"two _format", "GET", "/Patient/p1?_format=json&_format=json", "", nil, 400},
		// ids and paths
		{"dot-dot id", "GET", "/Patient/..", "", nil, 400},
		{"encoded dot-dot", "PUT", "/Patient/%2e%2e", patient("..", "x"), jsonCT, 400},
		{"encoded slash", "PUT", "/Patient/a%2Fb", patient("a/b", "x"), jsonCT, 400},
		{"traversal", "GET", "/Patient/../x", "", nil, 400},
		{"dot id", "DELETE", "/Patient/.", "", nil, 400},
		{"65 char id", "PUT", "/Patient/" + long, patient(long, "x"), jsonCT, 400},
		{"65 char id read", "GET", "/Patient/" + long, "", nil, 400},
		{"id with space", "PUT", "/Patient/a%20b", patient("a b", "x"), jsonCT, 400},
		{"id with underscore", "DELETE", "/Patient/a_b", "", nil, 400},
		{"id with unicode", "GET", "/Patient/%C3%A9", "", nil, 400},
		{"bad version id", "GET", "/Patient/p1/_history/a_b", "", nil, 400},
		{"double slash", "GET", "/Patient//p1", "", nil, 400},
		{"unknown type", "POST", "/Patientt", patient("", "x"), jsonCT, 404},
		{"lower-case type", "PUT", "/patient/p1", patient("p1", "x"), jsonCT, 404},
		{"unknown type delete", "DELETE", "/Foo/1", "", nil, 404},
		{"unknown type history", "GET", "/Foo/_history", "", nil, 404},
		// preconditions
		{"If-Match garbage", "PUT", "/Patient/p1", patient("p1", "x"), ifMatch("garbage"), 400},
		{"If-Match empty quotes", "PUT", "/Patient/p1", patient("p1", "x"), ifMatch(`W/""`), 400},
		{"If-Match non-numeric", "PUT", "/Patient/p1", patient("p1", "x"), ifMatch(`W/"abc"`), 400},
		{"If-Match unterminated", "DELETE", "/Patient/p1", "", hdr(`If-Match: W/"1`), 400},
		{"If-Match stale", "PUT", "/Patient/p1", patient("p1", "x"), ifMatch(`W/"7"`), 412},
		{"If-Match on deleted with star", "PUT", "/Patient/gone", patient("gone", "x"), ifMatch(`*`), 412},
		{"If-None-Exist", "POST", "/Patient", patient("", "x"), hdr("Content-Type: application/fhir+json", "If-None-Exist: identifier=x"), 501},
		// parameters
		{"_count zero", "GET", "/Patient?_count=0", "", nil, 400},
		{"_count negative", "GET", "/Patient/_history?_count=-1", "", nil, 400},
		{"_count text", "GET", "/_history?_count=ten", "", nil, 400},
		{"_count twice", "GET", "/Patient?_count=1&_count=2", "", nil, 400},
		{"_since garbage", "GET", "/_history?_since=yesterday", "", nil, 400},
		{"_since date only", "GET", "/Patient/_history?_since=2024-13-01", "", nil, 400},
		{"_since no zone", "GET", "/Patient/p1/_history?_since=2024-01-01T10:00:00", "", nil, 400},
		{"_at", "GET", "/_history?_at=2024", "", nil, 501},
		{"_list", "GET", "/Patient/_history?_list=x", "", nil, 501},
		{"bad cursor", "GET", "/_history?_cursor=not-a-cursor", "", nil, 400},
		{"bad list cursor", "GET", "/Patient?_cursor=%00%01", "", nil, 400},
		{"empty cursor", "GET", "/Patient?_cursor=", "", nil, 400},
		{"bad _id", "GET", "/Patient?_id=../x", "", nil, 400},
		{"_summary text", "GET", "/Patient?_summary=text", "", nil, 501},
		{"unknown search param", "GET", "/Patient?family=x", "", nil, 501},
		{"bad query escape", "GET", "/Patient?_count=%zz", "", nil, 400},
		// tenants
		{"bad tenant chars", "GET", "/Patient/p1", "", hdr("X-Tenant-ID: a/b"), 400},
		{"reserved tenant", "POST", "/Patient", patient("", "x"), hdr("Content-Type: application/fhir+json", "X-Tenant-ID: resources"), 400},
		{"tenant too long", "GET", "/Patient", "", hdr("X-Tenant-ID: " + long), 400},
		{"tenant starting with dot", "GET", "/Patient", "", hdr("X-Tenant-ID: .x"), 400},
		{"empty tenant", "GET", "/Patient", "", hdr("X-Tenant-ID: "), 400},
		{"two tenants", "GET", "/Patient", "", hdr("X-Tenant-ID: a", "X-Tenant-ID: b"), 400},
		// methods
		{"PATCH", "PATCH", "/Patient/p1", `[]`, ct("application/json-patch+json"), 405},
		{"DELETE history", "DELETE", "/Patient/p1/_history/1", "", nil, 405},
		{"PUT metadata", "PUT", "/metadata", `{}`, jsonCT, 404},
	}
	if len(cases) < 50 {
		t.Fatalf("only %d malformed requests", len(cases))
	}
	before := snapshot(t, e.bucket)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(c.method, c.path, c.body, c.header)
			if r.status != c.status {
				t.Errorf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			if r.status < 400 || r.status >= 600 || (r.status >= 500 && r.status != 501) {
				t.Errorf("status %d is not a client error", r.status)
			}
			isOutcome(t, c.name, r, "")
		})
	}
	if after := snapshot(t, e.bucket); !slices.Equal(before, after) {
		t.Errorf("malformed requests changed the store:\nbefore %q\nafter  %q", before, after)
	}
}

// TestRawMalformed sends requests a client library would refuse to build.
func TestRawMalformed(t *testing.T) {
	e := newEnv(t, nil)
	before := snapshot(t, e.bucket)
	addr := strings.TrimPrefix(e.url, "http://")
	for _, c := range []struct {
		name, request string
		status        int
	}{
		{"raw dot-dot", "GET /Patient/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"raw encoded dot-dot", "PUT /Patient/%2e%2e HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\nContent-Length: 2\r\n\r\n{}", 400},
		{"bad escape", "GET /Patient/%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400},
		{"body larger than announced", "POST /Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\nContent-Length: 5\r\n\r\n{\"res", 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := fmt.Fprint(conn, c.request); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4096)
			n, _ := conn.Read(buf)
			line, _, _ := strings.Cut(string(buf[:n]), "\r\n")
			if !strings.Contains(line, fmt.Sprintf(" %d ", c.status)) {
				t.Errorf("status line %q, want %d", line, c.status)
			}
		})
	}
	if after := snapshot(t, e.bucket); !slices.Equal(before, after) {
		t.Errorf("store changed: %q -> %q", before, after)
	}
}

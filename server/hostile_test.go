package server_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"fhirbucket/server"
	"fhirbucket/storage"
	"fhirbucket/storage/filestore"
	"fhirbucket/storage/memstore"
)

// hostileBodyLimit is the body limit of the hostile-input servers: small,
// so that "oversized" stays cheap.
const hostileBodyLimit = 64 << 10

// hostile is one malformed request.
type hostile struct {
	name         string
	method, path string
	body         string
	header       http.Header
	// pathTenants sends it to the server with path tenant routing.
	pathTenants bool
	// withAuth sends it to the server with token authentication.
	withAuth bool
}

// hostileCorpus builds the malformed requests from tables: each family
// of bad input is crossed with the routes it can reach. Every request in
// it must answer 4xx and write nothing.
func hostileCorpus() []hostile {
	var out []hostile
	add := func(h hostile) { out = append(out, h) }
	json := func(more ...string) http.Header {
		return headers(append([]string{"Content-Type: application/fhir+json"}, more...)...)
	}
	long := func(n int) string { return strings.Repeat("a", n) }
	kib64 := strings.Repeat("x", 64<<10)

	// 1. Paths that try to leave their segment, or are no FHIR path at
	// all, under every method.
	paths := []string{
		"/Patient/..%2f..%2fetc", "/Patient/..%2F..%2Fetc%2Fpasswd", "/Patient/%2e%2e", "/Patient/%2E%2E/x",
		"/Patient/%2e", "//Patient", "///Patient/p1", "/Patient//p1", "/Patient/a%00b", "/Patient/%00",
		"/Patient/a%2fb", "/Patient/a%5cb", "/Patient/..%5c..%5cetc", "/Patient/%252e%252e", "/Patient/p1/_history/..%2f1",
		"/Patient/p1/_history/%2e%2e", "/%2e%2e/Patient", "/../Patient", "/./Patient", "/Patient/./p1",
		"/Patient/p1/..", "/Patient/%ff", "/Patient/%c0%ae%c0%ae", "/Patient/" + long(65), "/Patient/" + long(8000),
		"/Patient/a%20b", "/Patient/p1/_history/%00", "/Patient/p1/_history/1%2f..",
		"/Patient/p1%3F_x", "/Pati%00ent/p1", "/%00/Patient", "/Patient/p1;x=y", "/Patient/%C3%A9",
		"/Patient/p1/_history/1/x", "/Patient/p1/x/y/z", "/Patient%2fp1",
	}
	for _, p := range paths {
		for _, m := range []string{"GET", "PUT", "DELETE", "POST"} {
			h := hostile{name: "path " + m + " " + p, method: m, path: p}
			if m == "PUT" || m == "POST" {
				h.body, h.header = patientJSON("p1", "Hostile"), json()
			}
			add(h)
		}
	}

	// 2. Bad headers on the routes they affect.
	writes := []struct{ method, path, body string }{
		{"PUT", "/Patient/p1", patientJSON("p1", "Hostile")},
		{"POST", "/Patient", patientJSON("", "Hostile")},
		{"DELETE", "/Patient/p1", ""},
	}
	for _, im := range []string{"garbage", `W/"`, `W/"abc"`, `W/""`, `W/"1`, `"1", garbage`, `W/"99999999999999999999999"`,
		`W/"-1"`, `W/ "1"`, `w/"1"`, "W/" + kib64} {
		for _, w := range writes[:1] {
			add(hostile{name: "If-Match " + im[:min(len(im), 40)] + " " + w.method, method: w.method, path: w.path, body: w.body, header: json("If-Match: " + im)})
		}
		add(hostile{name: "If-Match " + im[:min(len(im), 40)] + " DELETE", method: "DELETE", path: "/Patient/p1", header: headers("If-Match: " + im)})
	}
	tenants := []string{"../x", "..", ".", "resources", "history", "bulk", "tenants", "_system", long(65), "a/b", "a b",
		"a\\b", "%2e%2e", "ä", "-a", ".hidden", "a/../b", long(64 << 10)}
	for _, tn := range tenants {
		for _, w := range append(writes, struct{ method, path, body string }{"GET", "/Patient", ""}, struct{ method, path, body string }{"GET", "/_history", ""}) {
			h := json("X-Tenant-ID: " + tn)
			add(hostile{name: "tenant header " + tn[:min(len(tn), 40)] + " " + w.method + " " + w.path, method: w.method, path: w.path, body: w.body, header: h})
		}
	}
	add(hostile{name: "two tenant headers", method: "PUT", path: "/Patient/p1", body: patientJSON("p1", "x"), header: json("X-Tenant-ID: a", "X-Tenant-ID: b")})
	add(hostile{name: "empty tenant header", method: "PUT", path: "/Patient/p1", body: patientJSON("p1", "x"), header: json("X-Tenant-ID: ")})
	for _, ct := range []string{"text/plain", "application/xml", "application/fhir+xml", "multipart/form-data; boundary=x",
		"application/fhir+json; charset=utf-16", "application/json; charset=latin1", ";;;", "json", "application/x-www-form-urlencoded", kib64} {
		for _, w := range writes[:2] {
			add(hostile{name: "Content-Type " + ct[:min(len(ct), 40)] + " " + w.method, method: w.method, path: w.path, body: w.body, header: headers("Content-Type: " + ct)})
		}
	}
	for _, w := range writes[:2] {
		add(hostile{name: "no Content-Type " + w.method, method: w.method, path: w.path, body: w.body, header: http.Header{}})
	}
	for _, acc := range []string{"application/xml", "text/html", "application/fhir+json;q=0", "image/png, text/*", kib64} {
		add(hostile{name: "Accept " + acc[:min(len(acc), 40)] + " GET", method: "GET", path: "/Patient/p1", header: headers("Accept: " + acc)})
		add(hostile{name: "Accept " + acc[:min(len(acc), 40)] + " PUT", method: "PUT", path: "/Patient/p1", body: patientJSON("p1", "x"), header: json("Accept: " + acc)})
	}

	// 3. Bodies that are not a storable resource of the URL's type.
	nest := func(open, close string, n int) string {
		return `{"resourceType":"Patient","extension":` + strings.Repeat(open, n) + strings.Repeat(close, n) + `}`
	}
	bodies := map[string]string{
		"invalid UTF-8 in a string":   "{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"\xff\xfe\"}]}",
		"invalid UTF-8 in a key":      "{\"resourceType\":\"Patient\",\"\xc3\x28\":1}",
		"UTF-16 body":                 "\xff\xfe{\x00\"\x00r\x00",
		"deep arrays 10k":             nest("[", "]", 10000),
		"deep objects 10k":            nest(`{"url":"x","extension":[`, `]}`, 10000),
		"deep arrays 100k":            nest("[", "]", 100000),
		"duplicate resourceType":      `{"resourceType":"Patient","resourceType":"Observation"}`,
		"duplicate id":                `{"resourceType":"Patient","id":"p1","id":"p2"}`,
		"duplicate nested key":        `{"resourceType":"Patient","id":"p1","name":[{"family":"a","family":"b"}]}`,
		"400-digit integer":           `{"resourceType":"Patient","id":"p1","multipleBirthInteger":` + strings.Repeat("9", 400) + `}`,
		"fraction in an integer":      `{"resourceType":"Patient","id":"p1","multipleBirthInteger":1.5}`,
		"integer out of range":        `{"resourceType":"Patient","id":"p1","multipleBirthInteger":2147483648}`,
		"huge exponent":               `{"resourceType":"Patient","id":"p1","multipleBirthInteger":1e999999}`,
		"NaN":                         `{"resourceType":"Patient","id":"p1","multipleBirthInteger":NaN}`,
		"Infinity":                    `{"resourceType":"Patient","id":"p1","multipleBirthInteger":Infinity}`,
		"truncated number":            `{"resourceType":"Patient","id":"p1","multipleBirthInteger":1e}`,
		"a Bundle":                    `{"resourceType":"Bundle","type":"batch","entry":[{"resource":` + patientJSON("p1", "x") + `,"request":{"method":"PUT","url":"Patient/p1"}}]}`,
		"a transaction":               `{"resourceType":"Bundle","type":"transaction","entry":[]}`,
		"an OperationOutcome":         `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid"}]}`,
		"a Parameters":                `{"resourceType":"Parameters","parameter":[]}`,
		"null":                        `null`,
		"true":                        `true`,
		"number":                      `123`,
		"empty object":                `{}`,
		"null resourceType":           `{"resourceType":null}`,
		"numeric resourceType":        `{"resourceType":1}`,
		"array":                       `[` + patientJSON("p1", "x") + `]`,
		"two objects":                 patientJSON("p1", "x") + patientJSON("p1", "y"),
		"trailing garbage":            patientJSON("p1", "x") + `garbage`,
		"oversized":                   `{"resourceType":"Patient","id":"p1","name":[{"family":"` + strings.Repeat("x", hostileBodyLimit) + `"}]}`,
		"unknown element":             `{"resourceType":"Patient","id":"p1","evil":"../../x"}`,
		"wrong element type":          `{"resourceType":"Patient","id":"p1","active":"yes"}`,
		"unterminated string":         `{"resourceType":"Patient","id":"p1`,
		"control char in string":      "{\"resourceType\":\"Patient\",\"id\":\"p1\",\"name\":[{\"family\":\"a\x01b\"}]}",
		"id traversal":                `{"resourceType":"Patient","id":"../../x"}`,
		"contained traversal":         `{"resourceType":"Patient","id":"p1","contained":[{"resourceType":"Patient","id":"../x"}]}`,
		"whitespace only":             " \n\t ",
		"single quote JSON":           `{'resourceType':'Patient'}`,
		"comment":                     `{"resourceType":"Patient",/* x */"id":"p1"}`,
		"escaped NUL in resourceType": `{"resourceType":"Pat\u0000ient","id":"p1"}`,
	}
	for name, body := range bodies {
		add(hostile{name: "body " + name + " POST", method: "POST", path: "/Patient", body: body, header: json()})
		add(hostile{name: "body " + name + " PUT", method: "PUT", path: "/Patient/p1", body: body, header: json()})
	}

	// 4. Bad parameters on the searches and histories.
	search := []string{"_count=0", "_count=-1", "_count=abc", "_count=1e3", "_count=99999999999999999999999", "_count=%00",
		"_count=1&_count=2", "_cursor=garbage", "_cursor=%zz", "_cursor=" + long(8000), "_cursor=", "_format=xml",
		"_format=text/html", "_id=../x", "_id=", "_id=a,,b", "a=%zz", "_count=%"}
	for _, q := range search {
		add(hostile{name: "search " + q[:min(len(q), 40)], method: "GET", path: "/Patient?" + q})
	}
	history := []string{"_count=0", "_count=-5", "_count=x", "_since=yesterday", "_since=2024-13-45T00:00:00Z",
		"_since=%00", "_since=" + long(8000), "_since=2024-01-01T10:00:00", "_since=1&_since=2", "_cursor=garbage",
		"_cursor=" + strings.Repeat("%ff", 100), "_format=xml", "_count=1&_count=1"}
	for _, q := range history {
		for _, p := range []string{"/_history", "/Patient/_history", "/Patient/p1/_history"} {
			add(hostile{name: "history " + p + " " + q[:min(len(q), 40)], method: "GET", path: p + "?" + q})
		}
	}

	// 5. Unknown types and methods FHIR does not define.
	for _, typ := range []string{"Patientx", "patient", "PATIENT", "Bundlee", "_history2", "resources", "Patient.json"} {
		add(hostile{name: "type " + typ + " GET", method: "GET", path: "/" + typ + "/p1"})
		add(hostile{name: "type " + typ + " PUT", method: "PUT", path: "/" + typ + "/p1", body: patientJSON("p1", "x"), header: json()})
		add(hostile{name: "type " + typ + " POST", method: "POST", path: "/" + typ, body: patientJSON("", "x"), header: json()})
		add(hostile{name: "type " + typ + " DELETE", method: "DELETE", path: "/" + typ + "/p1"})
	}
	for _, m := range []string{"PATCH", "OPTIONS", "TRACE", "FOO", "PROPFIND"} {
		for _, p := range []string{"/Patient", "/Patient/p1", "/_history", "/metadata", "/"} {
			add(hostile{name: "method " + m + " " + p, method: m, path: p, body: "{}", header: json()})
		}
	}
	add(hostile{name: "POST on an instance", method: "POST", path: "/Patient/p1", body: patientJSON("p1", "x"), header: json()})
	add(hostile{name: "PUT on history", method: "PUT", path: "/Patient/p1/_history/1", body: patientJSON("p1", "x"), header: json()})

	// 6. Tenants in the path that try to escape their prefix.
	for _, tn := range []string{"..%2fx", "..", ".", "resources", "history", "_system", long(65), "a%2fb", "%2e%2e",
		"a%00", "%C3%A4", "-a", "a%5c..", "a%20b"} {
		for _, m := range []string{"GET", "PUT"} {
			h := hostile{name: "tenant path " + tn[:min(len(tn), 40)] + " " + m, method: m, path: "/" + tn + "/Patient/p1", pathTenants: true}
			if m == "PUT" {
				h.body, h.header = patientJSON("p1", "x"), json()
			}
			add(h)
		}
		add(hostile{name: "tenant path " + tn[:min(len(tn), 40)] + " history", method: "GET", path: "/" + tn + "/_history", pathTenants: true})
	}
	// 7. Bad credentials, against the server with token authentication
	// (which must refuse them before anything else happens).
	for _, a := range []string{"", "Bearer", "Bearer ", "Basic YTpi", "Bearer tok-unknown", "Bearer tok-valid tok-valid",
		"Bearer =tok", "Bearer tok-valid=x", "Bearer " + kib64, "bearer\ttok-valid", "Bearer ../../etc/passwd", "Token tok-valid"} {
		for _, w := range writes {
			h := json("Authorization: " + a)
			if a == "" {
				h = json()
			}
			add(hostile{name: "credentials " + a[:min(len(a), 40)] + " " + w.method, method: w.method, path: w.path, body: w.body, header: h, withAuth: true})
		}
	}
	add(hostile{name: "credentials twice", method: "PUT", path: "/Patient/p1", body: patientJSON("p1", "x"),
		header: json("Authorization: Bearer tok-valid", "Authorization: Bearer tok-valid"), withAuth: true})
	add(hostile{name: "valid token for another tenant", method: "PUT", path: "/Patient/p1", body: patientJSON("p1", "x"),
		header: json("Authorization: Bearer tok-valid", "X-Tenant-ID: x"), withAuth: true})
	add(hostile{name: "valid token without write scope", method: "PUT", path: "/Patient/p1", body: patientJSON("p1", "x"),
		header: json("Authorization: Bearer tok-read"), withAuth: true})
	return out
}

// TestHostileRequests sends the whole corpus to a server over memstore
// and over filestore. Each request must answer 4xx (never 5xx) with an
// OperationOutcome, must not panic the server, and must leave every
// object (key and ETag) as it was.
func TestHostileRequests(t *testing.T) {
	corpus := hostileCorpus()
	if len(corpus) < 200 {
		t.Fatalf("the corpus has only %d requests", len(corpus))
	}
	t.Logf("%d malformed requests per store", len(corpus))
	for _, bc := range []struct {
		name string
		open func(t *testing.T) storage.Bucket
	}{
		{"memstore", func(t *testing.T) storage.Bucket { return memstore.New() }},
		{"filestore", func(t *testing.T) storage.Bucket {
			b, err := filestore.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return b
		}},
	} {
		t.Run(bc.name, func(t *testing.T) {
			bucket := bc.open(t)
			st := prefixStore(t, bucket)
			hdr := start(t, server.Config{Store: st, MaxBodyBytes: hostileBodyLimit})
			path := start(t, server.Config{Store: st, MaxBodyBytes: hostileBodyLimit, TenantRouting: server.TenantPath})
			authed := start(t, server.Config{Store: st, MaxBodyBytes: hostileBodyLimit, Auth: authenticator(t,
				tokenSpec{"valid", "tok-valid", "default", []string{"system/*.*"}},
				tokenSpec{"read", "tok-read", "default", []string{"system/*.read"}})})
			// Something to overwrite, delete or leak: p1 with two versions,
			// a deleted resource, and a resource in a second tenant.
			for _, s := range []struct{ method, path, body, tenant string }{
				{"PUT", "/Patient/p1", patientJSON("p1", "One"), "default"},
				{"PUT", "/Patient/p1", patientJSON("p1", "Two"), "default"},
				{"PUT", "/Patient/gone", patientJSON("gone", "Gone"), "default"},
				{"DELETE", "/Patient/gone", "", "default"},
				{"PUT", "/Patient/p1", patientJSON("p1", "Other"), "x"},
			} {
				h := headers("X-Tenant-ID: "+s.tenant, "Content-Type: application/fhir+json")
				if r := hdr.send(s.method, s.path, s.body, h); r.status >= 300 {
					t.Fatalf("seed %s %s: %d %s", s.method, s.path, r.status, r.body)
				}
			}
			before := objects(t, bucket)
			statuses := map[int]int{}
			for _, c := range corpus {
				l := hdr
				switch {
				case c.pathTenants:
					l = path
				case c.withAuth:
					l = authed
				}
				r := l.send(c.method, c.path, c.body, c.header)
				statuses[r.status]++
				if r.status < 400 || r.status >= 500 {
					t.Errorf("%s: status %d, want 4xx: %.300s", c.name, r.status, r.body)
				}
				if len(r.body) > 0 && outcomeCode(r.body) == "" {
					t.Errorf("%s: body is not an OperationOutcome: %.300s", c.name, r.body)
				}
				if now := objects(t, bucket); !slices.Equal(before, now) {
					t.Fatalf("%s changed the bucket: %d objects before, %d after", c.name, len(before), len(now))
				}
			}
			t.Logf("statuses: %v", statuses)
			// The server still works after all that.
			if r := hdr.send("GET", "/Patient/p1", "", nil); r.status != 200 || !strings.Contains(string(r.body), "Two") {
				t.Errorf("read after the corpus: %d %s", r.status, r.body)
			}
		})
	}
}

// TestHostileRawRequests sends requests no HTTP client library would
// build, on a raw connection. Whoever answers (net/http itself or the
// FHIR handler), the status is 4xx and nothing is written; when the FHIR
// handler answers, the body is an OperationOutcome.
func TestHostileRawRequests(t *testing.T) {
	bucket := memstore.New()
	l := start(t, server.Config{Store: prefixStore(t, bucket), MaxBodyBytes: hostileBodyLimit})
	if r := l.send("PUT", "/Patient/p1", patientJSON("p1", "One"), headers("Content-Type: application/fhir+json")); r.status != 201 {
		t.Fatalf("seed: %d %s", r.status, r.body)
	}
	addr := strings.TrimPrefix(l.url, "http://")
	body := patientJSON("p1", "Raw")
	put := func(extra string) string {
		return "PUT /Patient/p1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n" + extra
	}
	// netHTTP5xx: net/http itself answers these before the FHIR handler
	// runs, with the 5xx that RFC 9110/9112 prescribe (505 for an HTTP
	// version it does not speak, 501 for a transfer coding it does not
	// know). They write nothing; they are the only 5xx allowed here.
	netHTTP5xx := map[string]int{"bad version": 505, "unknown transfer encoding": 501}
	cases := []struct{ name, request string }{
		{"dot-dot", "GET /Patient/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"backslashes", "GET /Patient/..\\..\\etc HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"NUL in path", "GET /Patient/a\x00b HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"space in path", "GET /Patient/a b HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"bad escape", "GET /Patient/%zz HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"absolute URI with traversal", "GET http://x/Patient/%2e%2e HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"no leading slash", "GET Patient/p1 HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"HTTP/0.9", "GET /Patient/p1\r\n\r\n"},
		{"HTTP/2 preface on HTTP/1", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"},
		{"bad version", "GET /Patient/p1 HTTP/9.9\r\nHost: x\r\n\r\n"},
		{"no Host", "GET /Patient/p1 HTTP/1.1\r\n\r\n"},
		{"two Hosts", "GET /Patient/p1 HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"},
		{"control char in header", "GET /Patient/p1 HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: a\x01b\r\n\r\n"},
		{"NUL in tenant header", "GET /Patient/p1 HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: a\x00b\r\n\r\n"},
		{"space before colon", "GET /Patient/p1 HTTP/1.1\r\nHost: x\r\nX-Tenant-ID : b\r\n\r\n"},
		{"obsolete line folding", "GET /Patient/p1 HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: a\r\n b\r\n\r\n"},
		{"bare LF tenant", "GET /Patient/p1 HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: ../x\n\r\n"},
		{"header without colon", "GET /Patient/p1 HTTP/1.1\r\nHost: x\r\nGarbage\r\n\r\n"},
		{"2 MiB header", "GET /Patient/p1 HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 2<<20) + "\r\n\r\n"},
		{"100 KiB URL", "GET /Patient/" + strings.Repeat("a", 100<<10) + " HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"body shorter than Content-Length", put(fmt.Sprintf("Content-Length: %d\r\n\r\n", len(body)+10)) + body},
		{"huge Content-Length", put("Content-Length: 999999999999999999\r\n\r\n") + body},
		{"negative Content-Length", put("Content-Length: -1\r\n\r\n") + body},
		{"two Content-Lengths", put(fmt.Sprintf("Content-Length: %d\r\nContent-Length: 5\r\n\r\n", len(body))) + body},
		{"Content-Length and chunked", put(fmt.Sprintf("Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n", len(body))) + body},
		{"bad chunk size", put("Transfer-Encoding: chunked\r\n\r\nzz\r\n" + body + "\r\n0\r\n\r\n")},
		{"chunk longer than said", put("Transfer-Encoding: chunked\r\n\r\n5\r\n" + body + "\r\n0\r\n\r\n")},
		{"unknown transfer encoding", put("Transfer-Encoding: gzip\r\n\r\n") + body},
		{"oversized chunked body", put("Transfer-Encoding: chunked\r\n\r\n") + chunked(`{"resourceType":"Patient","id":"p1","name":[{"family":"`+strings.Repeat("x", hostileBodyLimit)+`"}]}`)},
		{"invalid method token", "G(T /Patient/p1 HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"lower-case method", "get /Patient/p1 HTTP/1.1\r\nHost: x\r\n\r\n"},
	}
	before := objects(t, bucket)
	byNetHTTP := 0
	for _, c := range cases {
		status, ct, respBody := rawExchange(t, addr, c.request)
		if want, ok := netHTTP5xx[c.name]; ok {
			if status != want || strings.HasPrefix(ct, "application/fhir+json") {
				t.Errorf("%s: status %d (%s), want net/http's own %d", c.name, status, ct, want)
			}
		} else if status < 400 || status >= 500 {
			t.Errorf("%s: status %d, want 4xx: %.200s", c.name, status, respBody)
		}
		if strings.HasPrefix(ct, "application/fhir+json") {
			if outcomeCode(respBody) == "" {
				t.Errorf("%s: FHIR body is not an OperationOutcome: %.200s", c.name, respBody)
			}
		} else {
			byNetHTTP++
		}
		if now := objects(t, bucket); !slices.Equal(before, now) {
			t.Fatalf("%s changed the bucket", c.name)
		}
	}
	t.Logf("%d raw requests, %d answered by net/http before the FHIR handler", len(cases), byNetHTTP)
}

func chunked(s string) string {
	var b strings.Builder
	for len(s) > 0 {
		n := min(len(s), 4096)
		fmt.Fprintf(&b, "%x\r\n%s\r\n", n, s[:n])
		s = s[n:]
	}
	b.WriteString("0\r\n\r\n")
	return b.String()
}

// rawExchange writes request on a new connection and reads one response
// (status 0 when the server closed the connection without one).
func rawExchange(t *testing.T, addr, request string) (status int, contentType string, body []byte) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		// The server may answer before reading it all. Closing the write
		// side afterwards tells it that no more body is coming.
		_, _ = io.WriteString(conn, request)
		_ = conn.(*net.TCPConn).CloseWrite()
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, "", nil
	}
	defer resp.Body.Close()
	body, _ = io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Content-Type"), body
}

// TestHostileSlowClients: a client that sends its headers slower than the
// server's ReadHeaderTimeout is cut off; the server keeps answering
// others meanwhile, and nothing is written.
func TestHostileSlowClients(t *testing.T) {
	bucket := memstore.New()
	const timeout = 300 * time.Millisecond
	l := start(t, server.Config{Store: prefixStore(t, bucket)}, func(s *http.Server) { s.ReadHeaderTimeout = timeout })
	addr := strings.TrimPrefix(l.url, "http://")
	before := objects(t, bucket)

	slowloris := func(first string) time.Duration {
		conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		begin := time.Now()
		if _, err := io.WriteString(conn, first); err != nil {
			t.Fatal(err)
		}
		// One more header line every 50 ms, for at most 5 s: each line
		// arrives well within any per-read timeout, so only a deadline on
		// the whole header block stops it.
		for i := 0; time.Since(begin) < 5*time.Second; i++ {
			time.Sleep(50 * time.Millisecond)
			if _, err := fmt.Fprintf(conn, "X-Slow-%d: 1\r\n", i); err != nil {
				return time.Since(begin)
			}
			_ = conn.SetReadDeadline(time.Now().Add(time.Millisecond))
			if _, err := conn.Read(make([]byte, 1)); err != nil && !isTimeout(err) {
				return time.Since(begin)
			}
		}
		return time.Since(begin)
	}
	for _, first := range []string{
		"GET /Patient HTTP/1.1\r\nHost: x\r\n",
		"PUT /Patient/p1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n",
		"GET /Pat", // not even a full request line
	} {
		done := make(chan time.Duration, 1)
		go func() { done <- slowloris(first) }()
		// Meanwhile an ordinary client is served.
		if r := l.send("GET", "/metadata", "", nil); r.status != 200 {
			t.Errorf("an ordinary request during a slow one: %d", r.status)
		}
		if d := <-done; d > timeout+2*time.Second {
			t.Errorf("slow client %q held its connection for %s with ReadHeaderTimeout %s", first, d, timeout)
		} else {
			t.Logf("slow client %q cut off after %s", first, d.Round(10*time.Millisecond))
		}
	}
	if now := objects(t, bucket); !slices.Equal(before, now) {
		t.Errorf("slow clients changed the bucket")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

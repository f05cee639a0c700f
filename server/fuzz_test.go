package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage/memstore"
)

// FuzzServer sends arbitrary requests (method, target, headers, body) to
// the handler: the answer is never a 500, and every error is an
// OperationOutcome. It covers the parsers of outside input the server
// owns: paths, query parameters, Accept, Content-Type, Prefer, If-Match,
// If-None-Match, If-Modified-Since and the tenant header.
func FuzzServer(f *testing.F) {
	seeds := []struct{ method, target, accept, ctype, prefer, ifMatch, tenant, body string }{
		{"GET", "/Patient/p1", "", "", "", "", "", ""},
		{"PUT", "/Patient/p1", "application/fhir+json", "application/fhir+json", "return=minimal", `W/"1"`, "acme", patient("p1", "F")},
		{"POST", "/Patient", "application/json", "application/json; charset=utf-8", "return=OperationOutcome", "", "", patient("", "F")},
		{"GET", "/Patient?_count=2&_id=a,b&_summary=count", "*/*", "", "handling=lenient", "", "", ""},
		{"GET", "/_history?_since=2024-01-01T00:00:00Z&_cursor=abc", "application/fhir+xml", "", "", "", "", ""},
		{"DELETE", "/Patient/p1", "", "", "", "*", "..", ""},
		{"GET", "/Patient/p1/_history/1?_format=json", "", "", "", "", "", ""},
		{"PATCH", "/Patient/%2e%2e/x", "", "text/plain", "", `W/"x`, "", "[]"},
		{"GET", "/metadata", "", "", "", "", "", ""},
		{"POST", "/", "", "application/fhir+json", "", "", "", `{"resourceType":"Bundle","type":"batch"}`},
	}
	for _, s := range seeds {
		f.Add(s.method, s.target, s.accept, s.ctype, s.prefer, s.ifMatch, s.tenant, s.body)
	}
	st, err := fhirstore.New(fhirstore.Config{Bucket: memstore.New(), Validator: testenv.Validator(f), Logger: testenv.QuietLogger()})
	if err != nil {
		f.Fatal(err)
	}
	srv, err := New(Config{Store: st, Logger: testenv.QuietLogger(), TenantRouting: TenantBoth, MaxBodyBytes: 1 << 16})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, method, target, accept, ctype, prefer, ifMatch, tenant, body string) {
		if !validMethod(method) || !strings.HasPrefix(target, "/") {
			return
		}
		req, err := http.NewRequest(method, "http://fhir.test"+target, strings.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		for k, v := range map[string]string{"Accept": accept, "Content-Type": ctype, "Prefer": prefer, "If-Match": ifMatch, TenantHeaderName: tenant, "If-None-Match": ifMatch, "If-Modified-Since": accept} {
			if v != "" {
				req.Header.Set(k, v)
			}
		}
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		if rec.Code >= 500 && rec.Code != http.StatusNotImplemented {
			t.Fatalf("%s %s: status %d: %s", method, target, rec.Code, rec.Body)
		}
		if rec.Code >= 400 {
			var oo fhir.OperationOutcome
			if err := json.Unmarshal(rec.Body.Bytes(), &oo); err != nil || oo.ResourceType != "OperationOutcome" || len(oo.Issue) == 0 {
				t.Fatalf("%s %s: status %d without OperationOutcome: %s", method, target, rec.Code, rec.Body)
			}
		}
	})
}

func validMethod(m string) bool {
	switch m {
	case "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS":
		return true
	}
	return false
}

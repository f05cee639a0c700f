package metrics_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"fhirbucket/auth"
	"fhirbucket/metrics"
	"fhirbucket/server"
)

// FuzzInteraction sends arbitrary methods and paths through the metrics
// middleware to the FHIR handler in every tenant routing, with and without
// a base path: nothing panics, and every request is counted under one of
// the bounded label values (a route's label, operation, health, metrics,
// other), whatever a client sends.
func FuzzInteraction(f *testing.F) {
	for _, seed := range []struct{ method, path string }{
		{"GET", "/Patient/1"}, {"GET", "/acme/Patient/1/_history/2"}, {"POST", "/"}, {"PUT", "/Patient"},
		{"GET", "/fhir/metadata"}, {"GET", "//"}, {"DELETE", "/Patient/%2F"}, {"BREW", "/$everything"},
		{"GET", "/Patient/1/_history/2/3/4"}, {"POST", "/metrics"}, {"HEAD", "/fhir"},
	} {
		f.Add(seed.method, seed.path)
	}
	m := metrics.New(metrics.Options{})
	var handlers []http.Handler
	valid := map[string]bool{
		string(auth.Operation): true, "health": true, metrics.InteractionMetrics: true, metrics.InteractionOther: true,
	}
	for _, base := range []string{"", "/fhir"} {
		for _, routing := range []server.TenantRouting{server.TenantHeader, server.TenantPath, server.TenantBoth} {
			h := fhirHandler(f, server.Config{BasePath: base, TenantRouting: routing})
			for _, rt := range h.Routes() {
				valid[rt.Label] = true
			}
			handlers = append(handlers, m.Middleware(h))
		}
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		for _, h := range handlers {
			r := &http.Request{Method: method, URL: &url.URL{Path: path}, Header: http.Header{}, Body: http.NoBody, Host: "h"}
			h.ServeHTTP(httptest.NewRecorder(), r)
		}
		fams, err := m.Registry().Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, fam := range fams {
			if fam.GetName() != "fhirbucket_http_requests_total" {
				continue
			}
			for _, s := range fam.GetMetric() {
				for _, l := range s.GetLabel() {
					if l.GetName() == "interaction" && !valid[l.GetValue()] {
						t.Fatalf("%q %q counted under %q, not a label value", method, path, l.GetValue())
					}
				}
			}
		}
	})
}

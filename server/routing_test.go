package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/internal/testenv"
)

func TestMetadata(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do("GET", "/metadata", "", nil)
	mustStatus(t, "metadata", r, 200)
	if _, err := testenv.Validator(t).Validate(r.body); err != nil {
		t.Fatalf("CapabilityStatement does not validate: %v", err)
	}
	etag := r.header.Get("ETag")
	if !strings.HasPrefix(etag, `W/"`) {
		t.Errorf("ETag %q", etag)
	}
	var cs struct {
		FhirVersion string
		Format      []string
		Kind        string
		Rest        []struct {
			Mode        string
			Interaction []struct{ Code string }
			Resource    []struct {
				Type              string
				Interaction       []struct{ Code string }
				Versioning        string
				ReadHistory       bool
				UpdateCreate      bool
				ConditionalCreate bool
				ConditionalUpdate bool
				ConditionalDelete string
				ConditionalRead   string
				SearchParam       []struct{ Name string }
			}
		}
	}
	if err := json.Unmarshal(r.body, &cs); err != nil {
		t.Fatal(err)
	}
	if cs.FhirVersion != "4.0.1" || !slices.Equal(cs.Format, []string{"json"}) || cs.Kind != "instance" || len(cs.Rest) != 1 {
		t.Fatalf("header fields: %+v", cs)
	}
	rest := cs.Rest[0]
	var sys []string
	for _, i := range rest.Interaction {
		sys = append(sys, i.Code)
	}
	// Batch and transaction answer 501, so they must not be advertised.
	if !slices.Equal(sys, []string{"history-system"}) {
		t.Errorf("system interactions %q", sys)
	}
	if len(rest.Resource) != len(fhir.ResourceTypes()) {
		t.Errorf("%d resource entries, want %d", len(rest.Resource), len(fhir.ResourceTypes()))
	}
	for _, res := range rest.Resource {
		var codes []string
		for _, i := range res.Interaction {
			codes = append(codes, i.Code)
		}
		slices.Sort(codes)
		want := []string{"create", "delete", "history-instance", "history-type", "read", "search-type", "update", "vread"}
		if !slices.Equal(codes, want) || res.Versioning != "versioned-update" || !res.ReadHistory || !res.UpdateCreate ||
			res.ConditionalCreate || res.ConditionalUpdate || res.ConditionalDelete != "not-supported" ||
			res.ConditionalRead != "full-support" || len(res.SearchParam) != 1 || res.SearchParam[0].Name != "_id" {
			t.Errorf("%s: %+v", res.Type, res)
		}
	}

	// Every advertised interaction answers something other than 404/405/501
	// on one type: the statement tells the truth.
	mustStatus(t, "create", e.do("PUT", "/Basic/m1", `{"resourceType":"Basic","id":"m1","code":{"text":"x"}}`, jsonCT), 201)
	for _, probe := range []struct{ method, path, body string }{
		{"GET", "/Basic/m1", ""}, {"GET", "/Basic/m1/_history/1", ""}, {"PUT", "/Basic/m1", `{"resourceType":"Basic","id":"m1","code":{"text":"y"}}`},
		{"GET", "/Basic/m1/_history", ""}, {"GET", "/Basic/_history", ""}, {"POST", "/Basic", `{"resourceType":"Basic","code":{"text":"z"}}`},
		{"GET", "/Basic?_id=m1", ""}, {"GET", "/_history", ""}, {"DELETE", "/Basic/m1", ""},
	} {
		r := e.do(probe.method, probe.path, probe.body, jsonCT)
		if r.status >= 300 {
			t.Errorf("advertised %s %s answers %d: %s", probe.method, probe.path, r.status, r.body)
		}
	}

	r2 := e.do("GET", "/metadata", "", hdr("If-None-Match: "+etag))
	mustStatus(t, "metadata 304", r2, 304)
	r3 := e.do("GET", "/metadata?_format=json", "", hdr("Accept: application/fhir+xml"))
	mustStatus(t, "_format wins over Accept", r3, 200)
}

func TestNegotiation(t *testing.T) {
	e := newEnv(t, nil)
	mustStatus(t, "seed", e.do("PUT", "/Patient/n1", patient("n1", "N"), jsonCT), 201)
	for _, c := range []struct {
		name   string
		path   string
		header http.Header
		status int
	}{
		{"no Accept", "/Patient/n1", nil, 200},
		{"fhir+json", "/Patient/n1", hdr("Accept: application/fhir+json"), 200},
		{"json", "/Patient/n1", hdr("Accept: application/json"), 200},
		{"browser", "/Patient/n1", hdr("Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"), 200},
		{"json with fhirVersion", "/Patient/n1", hdr("Accept: application/fhir+json; fhirVersion=4.0"), 200},
		{"xml preferred json allowed", "/Patient/n1", hdr("Accept: application/fhir+xml, application/fhir+json;q=0.5"), 200},
		{"json refused by q=0", "/Patient/n1", hdr("Accept: application/fhir+json;q=0, application/fhir+xml"), 406},
		{"_format json", "/Patient/n1?_format=json", nil, 200},
		{"_format application/json", "/Patient/n1?_format=application/json", nil, 200},
		{"_format fhir+json", "/Patient/n1?_format=application%2Ffhir%2Bjson", nil, 200},
		{"_format xml", "/Patient/n1?_format=xml", nil, 406},
		{"_format wins", "/Patient/n1?_format=json", hdr("Accept: application/fhir+xml"), 200},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.do("GET", c.path, "", c.header)
			mustStatus(t, c.name, r, c.status)
			if ct := r.header.Get("Content-Type"); ct != fhirJSON {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
	for _, ct := range []string{"application/fhir+json", "application/json", "application/fhir+json; charset=utf-8", "application/json+fhir", "application/fhir+json;fhirVersion=4.0"} {
		r := e.do("PUT", "/Patient/n1", patient("n1", "N"), hdr("Content-Type: "+ct))
		mustStatus(t, "Content-Type "+ct, r, 200)
	}
}

func TestTenants(t *testing.T) {
	for _, routing := range []TenantRouting{TenantHeader, TenantPath, TenantBoth} {
		t.Run(routing.String(), func(t *testing.T) {
			e := newEnv(t, nil, func(c *Config, _ *fhirstoreConfig) { c.TenantRouting = routing })
			// paths addresses one tenant's resource as this routing allows.
			path := func(tenant, p string) (string, http.Header) {
				if routing == TenantHeader || (routing == TenantBoth && tenant == "acme") {
					return p, hdr(TenantHeaderName+": "+tenant, "Content-Type: application/fhir+json")
				}
				return "/" + tenant + p, jsonCT
			}
			pa, ha := path("acme", "/Patient/t1")
			pb, hb := path("other", "/Patient/t1")
			r := e.do("PUT", pa, patient("t1", "Acme"), ha)
			mustStatus(t, "acme create", r, 201)
			wantLoc := e.url + strings.TrimSuffix(pa, "/Patient/t1") + "/Patient/t1/_history/1"
			if loc := r.header.Get("Location"); loc != wantLoc {
				t.Errorf("Location %q, want %q", loc, wantLoc)
			}
			mustStatus(t, "other tenant does not see it", e.do("GET", pb, "", hb), 404)
			mustStatus(t, "other create", e.do("PUT", pb, patient("t1", "Other"), hb), 201)
			r = e.do("GET", pa, "", ha)
			mustStatus(t, "acme read", r, 200)
			wantBody("Acme")(t, r)
			h, hh := path("acme", "/_history")
			r = e.do("GET", h, "", hh)
			mustStatus(t, "acme history", r, 200)
			if b := decodeBundle(t, r); len(b.Entry) != 1 || !strings.HasPrefix(b.Entry[0].FullURL, e.url+strings.TrimSuffix(pa, "/Patient/t1")+"/Patient/") {
				t.Errorf("acme system history: %s", r.body)
			}
			tenants, err := e.store.Tenants(t.Context())
			if err != nil || !slices.Equal(tenants, []string{"acme", "other"}) {
				t.Errorf("tenants %q, %v", tenants, err)
			}
			// An invalid tenant in the URL answers 400.
			if routing != TenantHeader {
				r := e.do("GET", "/resources/Patient/t1", "", nil)
				mustStatus(t, "reserved tenant in path", r, 400)
				isOutcome(t, "reserved tenant", r, "invalid")
			}
			// metadata needs no tenant.
			mustStatus(t, "metadata", e.do("GET", "/metadata", "", nil), 200)
			if routing == TenantHeader {
				// The default tenant is used without the header.
				mustStatus(t, "default tenant", e.do("PUT", "/Patient/d", patient("d", "D"), jsonCT), 201)
				mustStatus(t, "default tenant read", e.do("GET", "/Patient/d", "", hdr(TenantHeaderName+": "+fhirstore.DefaultTenant)), 200)
			}
		})
	}
}

func TestBasePathAndURL(t *testing.T) {
	e := newEnv(t, nil, func(c *Config, _ *fhirstoreConfig) {
		c.BasePath = "/fhir/r4/"
		c.BaseURL = "https://fhir.example.org/api/"
	})
	r := e.do("PUT", "/fhir/r4/Patient/b1", patient("b1", "B"), jsonCT)
	mustStatus(t, "create under base path", r, 201)
	if loc := r.header.Get("Location"); loc != "https://fhir.example.org/api/Patient/b1/_history/1" {
		t.Errorf("Location %q", loc)
	}
	mustStatus(t, "outside base path", e.do("GET", "/Patient/b1", "", nil), 404)
	mustStatus(t, "metadata", e.do("GET", "/fhir/r4/metadata", "", nil), 200)
	mustStatus(t, "healthz at root", e.do("GET", "/healthz", "", nil), 200)

	for _, bad := range []Config{{BasePath: "/a/../b"}, {BasePath: "/a b"}, {BaseURL: "ftp://x"}, {BaseURL: "/relative"}, {BaseURL: "http://h/?q=1"}, {MaxBodyBytes: -1}, {TenantRouting: 7}} {
		bad.Store = e.store
		if _, err := New(bad); err == nil {
			t.Errorf("New(%+v) accepted a bad config", bad)
		}
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New without a store succeeded")
	}
}

func TestHealthAndReady(t *testing.T) {
	var failing atomic.Bool
	e := newEnv(t, nil, func(c *Config, _ *fhirstoreConfig) {
		c.TenantRouting = TenantPath
		c.Ready = func(ctx context.Context) error {
			if failing.Load() {
				return errors.New("bucket gone")
			}
			return nil
		}
	})
	mustStatus(t, "healthz", e.do("GET", "/healthz", "", nil), 200)
	mustStatus(t, "readyz", e.do("GET", "/readyz", "", nil), 200)
	failing.Store(true)
	r := e.do("GET", "/readyz", "", nil)
	mustStatus(t, "readyz failing", r, 503)
	if r.header.Get("Retry-After") == "" || strings.Contains(string(r.body), "bucket gone") {
		t.Errorf("readyz 503: headers %v body %s", r.header, r.body)
	}
	mustStatus(t, "healthz while not ready", e.do("GET", "/healthz", "", nil), 200)
}

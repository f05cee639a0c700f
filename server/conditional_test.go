package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"fhirbucket/fhirstore"
	"fhirbucket/index"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
)

// newIndexedEnv starts a server with the identifier index on base (nil: a
// new memstore).
func newIndexedEnv(t testing.TB, base storage.Bucket) *env {
	t.Helper()
	return startEnv(t, base, []envOpt{withIndexer}, func(st *fhirstore.Store, cfg *Config) { cfg.Index = newIndex(t, st) })
}

// withIndexer makes the store keep the identifier index.
func withIndexer(_ *Config, sc *fhirstore.Config) { sc.Indexer = &index.Keys{} }

func newIndex(t testing.TB, st *fhirstore.Store) *index.Index {
	t.Helper()
	ix, err := index.New(index.Config{Store: st, Validator: testenv.Validator(t), Logger: testenv.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func identifiedPatient(id string, idents ...string) string {
	var list []string
	for _, i := range idents {
		sys, val, _ := strings.Cut(i, "|")
		list = append(list, fmt.Sprintf(`{"system":%q,"value":%q}`, sys, val))
	}
	idField := ""
	if id != "" {
		idField = fmt.Sprintf(`"id":%q,`, id)
	}
	return fmt.Sprintf(`{"resourceType":"Patient",%s"identifier":[%s]}`, idField, strings.Join(list, ","))
}

func idOf(t testing.TB, r *response) string {
	t.Helper()
	var m struct{ ID string }
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	return m.ID
}

// TestConditionalHTTP: the R4 outcomes of search by identifier,
// If-None-Exist, PUT and DELETE [type]?identifier over HTTP, and the
// precise 4xx of bad criteria with nothing written.
func TestConditionalHTTP(t *testing.T) {
	e := newIndexedEnv(t, nil)
	const sys = "http://example.org/mrn"
	q := url.QueryEscape(sys + "|m1")
	ine := hdr("Content-Type: application/fhir+json", "If-None-Exist: identifier="+q)

	r := e.do("POST", "/Patient", identifiedPatient("", sys+"|m1"), ine)
	mustStatus(t, "conditional create (new)", r, http.StatusCreated)
	id := idOf(t, r)
	r = e.do("POST", "/Patient", identifiedPatient("", sys+"|m1"), ine)
	mustStatus(t, "conditional create (exists)", r, http.StatusOK)
	if got := idOf(t, r); got != id {
		t.Fatalf("conditional create answered %s, want %s", got, id)
	}

	r = e.do("GET", "/Patient?identifier="+q, "", nil)
	mustStatus(t, "search", r, http.StatusOK)
	b := decodeBundle(t, r)
	if b.Total == nil || *b.Total != 1 || len(b.Entry) != 1 {
		t.Fatalf("search: %s", r.body)
	}
	r = e.do("GET", "/Patient?identifier=m1&_summary=count", "", nil)
	mustStatus(t, "search count", r, http.StatusOK)
	if b := decodeBundle(t, r); b.Total == nil || *b.Total != 1 {
		t.Fatalf("count: %s", r.body)
	}
	r = e.do("GET", "/Patient?identifier=m1&_id=other", "", nil)
	if b := decodeBundle(t, r); b.Total == nil || *b.Total != 0 {
		t.Fatalf("identifier with another _id: %s", r.body)
	}

	// Conditional update: the match; a body id naming another -> 400.
	r = e.do("PUT", "/Patient?identifier="+q, identifiedPatient("", sys+"|m1"), jsonCT)
	mustStatus(t, "conditional update", r, http.StatusOK)
	if idOf(t, r) != id {
		t.Fatalf("conditional update wrote %s", r.body)
	}
	r = e.do("PUT", "/Patient?identifier="+q, identifiedPatient("other", sys+"|m1"), jsonCT)
	mustStatus(t, "conditional update, other id", r, http.StatusBadRequest)
	// No match: create.
	r = e.do("PUT", "/Patient?identifier="+url.QueryEscape(sys+"|m2"), identifiedPatient("", sys+"|m2"), jsonCT)
	mustStatus(t, "conditional update (create)", r, http.StatusCreated)

	// Two sharing an identifier: 412 for conditional create, update, delete.
	mustStatus(t, "plain create", e.do("POST", "/Patient", identifiedPatient("", sys+"|m1"), jsonCT), http.StatusCreated)
	mustStatus(t, "conditional create, 2 matches", e.do("POST", "/Patient", identifiedPatient("", sys+"|m1"), ine), http.StatusPreconditionFailed)
	mustStatus(t, "conditional update, 2 matches", e.do("PUT", "/Patient?identifier="+q, identifiedPatient("", sys+"|m1"), jsonCT), http.StatusPreconditionFailed)
	mustStatus(t, "conditional delete, 2 matches", e.do("DELETE", "/Patient?identifier="+q, "", nil), http.StatusPreconditionFailed)

	// Conditional delete: one match, then none.
	mustStatus(t, "conditional delete", e.do("DELETE", "/Patient?identifier="+url.QueryEscape(sys+"|m2"), "", nil), http.StatusNoContent)
	mustStatus(t, "conditional delete of nothing", e.do("DELETE", "/Patient?identifier="+url.QueryEscape(sys+"|m2"), "", nil), http.StatusNoContent)
	if b := decodeBundle(t, e.do("GET", "/Patient?identifier=m2", "", nil)); *b.Total != 0 {
		t.Fatalf("deleted resource still found")
	}

	// Bad input: precise 4xx, nothing written.
	before := snapshot(t, e.bucket)
	bad := []struct {
		method, path, body string
		h                  http.Header
		status             int
	}{
		{"GET", "/Patient?identifier=", "", nil, 400},
		{"GET", "/Patient?identifier=a|b|c", "", nil, 400},
		{"GET", "/Patient?identifier=a&name=x", "", nil, 501},
		{"GET", "/Patient?identifier=" + url.QueryEscape(sys+"|"), "", nil, 501},
		{"GET", "/Patient?identifier=a&_id=b%20ad", "", nil, 400},
		{"GET", "/Binary?identifier=a", "", nil, 501},
		{"PUT", "/Patient", identifiedPatient("", sys+"|x"), jsonCT, 400},
		{"DELETE", "/Patient", "", nil, 400},
		{"PUT", "/Patient?name=x", identifiedPatient("", sys+"|x"), jsonCT, 501},
		{"DELETE", "/Patient?_id=x", "", nil, 501},
		{"POST", "/Patient", identifiedPatient("", sys+"|x"), hdr("Content-Type: application/fhir+json", "If-None-Exist: name=x"), 501},
		{"POST", "/Patient", identifiedPatient("", sys+"|x"), hdr("Content-Type: application/fhir+json", "If-None-Exist: identifier=a|b|c"), 400},
		{"POST", "/Patient", `{"resourceType":"Patient","birthDate":"no"}`, ine, 400},
		{"PUT", "/Patient/x", identifiedPatient("x", sys+"|x"), hdr("Content-Type: application/fhir+json", "If-None-Exist: identifier=x"), 400},
		{"GET", "/Patient?identifier=" + strings.Repeat("a,", index.MaxValues) + "a", "", nil, 400},
		{"DELETE", "/Patient?identifier=" + strings.Repeat("a", index.MaxCriteriaBytes), "", nil, 400},
	}
	for _, c := range bad {
		r := e.do(c.method, c.path, c.body, c.h)
		what := c.method + " " + c.path[:min(len(c.path), 60)]
		mustStatus(t, what, r, c.status)
		isOutcome(t, what, r, "")
	}
	if after := snapshot(t, e.bucket); strings.Join(before, "\n") != strings.Join(after, "\n") {
		t.Errorf("bad requests wrote to the bucket")
	}
}

// TestConditionalCreateRaceHTTP: 32 concurrent If-None-Exist creates of
// one identifier through 3 servers on one bucket create one resource;
// every answer is 200 or 201 and names it.
func TestConditionalCreateRaceHTTP(t *testing.T) {
	b := memstore.New()
	servers := []*env{newIndexedEnv(t, b), newIndexedEnv(t, b), newIndexedEnv(t, b)}
	for round := range 5 {
		val := fmt.Sprintf("r%d", round)
		h := hdr("Content-Type: application/fhir+json", "If-None-Exist: identifier=urn:x|"+val)
		var mu sync.Mutex
		ids := map[string]int{}
		created := 0
		var wg sync.WaitGroup
		for i := range 32 {
			wg.Go(func() {
				r := servers[i%3].do("POST", "/Patient", identifiedPatient("", "urn:x|"+val), h)
				mu.Lock()
				defer mu.Unlock()
				if r.status != 200 && r.status != 201 {
					t.Errorf("round %d: status %d: %s", round, r.status, r.body)
					return
				}
				if r.status == 201 {
					created++
				}
				ids[idOf(t, r)]++
			})
		}
		wg.Wait()
		if len(ids) != 1 || created != 1 {
			t.Fatalf("round %d: ids %v, %d created", round, ids, created)
		}
	}
}

// TestCapabilityWithIndex: with the index, every type with an identifier
// element lists identifier and _id and claims the conditional
// interactions; a type without one claims none of it.
func TestCapabilityWithIndex(t *testing.T) {
	e := newIndexedEnv(t, nil)
	r := e.do("GET", "/metadata", "", nil)
	mustStatus(t, "metadata", r, 200)
	var cs capabilityStatement
	if err := json.Unmarshal(r.body, &cs); err != nil {
		t.Fatal(err)
	}
	for _, res := range cs.Rest[0].Resource {
		has := index.HasIdentifier(res.Type)
		names := []string{}
		for _, p := range res.SearchParam {
			names = append(names, p.Name)
		}
		want := "_id"
		if has {
			want = "_id,identifier"
		}
		if strings.Join(names, ",") != want || res.ConditionalCreate != has || res.ConditionalUpdate != has ||
			(res.ConditionalDelete == "single") != has {
			t.Errorf("%s: params %v, conditional %v/%v/%s", res.Type, names, res.ConditionalCreate, res.ConditionalUpdate, res.ConditionalDelete)
		}
	}
}

package server

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"fhirbucket/fhirstore"
)

// followPages reads a Bundle and every next page, returning all entries'
// "METHOD url status" lines and the number of pages.
func followPages(t *testing.T, e *env, path string) (lines []string, pages int, first *testBundle) {
	t.Helper()
	next := path
	for next != "" {
		r := e.do("GET", next, "", nil)
		mustStatus(t, "GET "+next, r, 200)
		b := decodeBundle(t, r)
		if first == nil {
			first = b
		}
		pages++
		if pages > 100 {
			t.Fatal("more than 100 pages: the next link does not advance")
		}
		if b.link("self") == "" {
			t.Errorf("page %d without self link", pages)
		}
		for _, en := range b.Entry {
			if b.Type == "history" {
				lines = append(lines, fmt.Sprintf("%s %s %s %s", en.Request.Method, en.Request.URL, en.Response.Status, en.Response.Etag))
				if (en.Resource == nil) != (en.Request.Method == "DELETE") {
					t.Errorf("entry %s %s: resource present=%v", en.Request.Method, en.Request.URL, en.Resource != nil)
				}
				if en.Response.LastModified == "" || !strings.HasPrefix(en.FullURL, e.url+"/") {
					t.Errorf("entry %s %s: lastModified %q fullUrl %q", en.Request.Method, en.Request.URL, en.Response.LastModified, en.FullURL)
				}
			} else {
				lines = append(lines, metaOf(t, en.Resource).ID)
				if en.Search == nil || en.Search.Mode != "match" {
					t.Errorf("searchset entry without search.mode=match")
				}
			}
		}
		next = b.link("next")
		if next != "" && !strings.HasPrefix(next, e.url+"/") {
			t.Fatalf("next link %q is not absolute on the server", next)
		}
	}
	return lines, pages, first
}

// steppingClock is the real clock, but at least 1 ms after its previous
// reading, so that successive writes never share a millisecond (events of
// one millisecond sort by key, not by the order they were written in).
func steppingClock() func(*Config, *fhirstore.Config) {
	var mu sync.Mutex
	var last time.Time
	return func(_ *Config, sc *fhirstore.Config) {
		sc.Now = func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			now := time.Now().UTC().Truncate(time.Millisecond)
			if !now.After(last) {
				now = last.Add(time.Millisecond)
			}
			last = now
			return now
		}
	}
}

func TestHistory(t *testing.T) {
	e := newEnv(t, nil, steppingClock())
	// a: POST (v1), PUT (v2), DELETE (v3), PUT (v4: restored)
	r := e.do("POST", "/Patient", patient("", "A1"), jsonCT)
	mustStatus(t, "create", r, 201)
	a := metaOf(t, r.body).ID
	mustStatus(t, "update", e.do("PUT", "/Patient/"+a, patient(a, "A2"), jsonCT), 200)
	mustStatus(t, "delete", e.do("DELETE", "/Patient/"+a, "", nil), 204)
	mustStatus(t, "restore", e.do("PUT", "/Patient/"+a, patient(a, "A4"), jsonCT), 200)
	// b: PUT-create
	mustStatus(t, "put-create", e.do("PUT", "/Patient/b", patient("b", "B"), jsonCT), 201)
	// an Observation, for the system level
	mustStatus(t, "observation", e.do("PUT", "/Observation/o", `{"resourceType":"Observation","id":"o","status":"final","code":{"text":"x"}}`, jsonCT), 201)

	instance := []string{
		"PUT Patient/" + a + " 200 OK W/\"4\"",
		"DELETE Patient/" + a + " 204 No Content W/\"3\"",
		"PUT Patient/" + a + " 200 OK W/\"2\"",
		"POST Patient 201 Created W/\"1\"",
	}
	cases := []struct {
		name  string
		path  string
		want  []string
		pages int
	}{
		{"instance", "/Patient/" + a + "/_history", instance, 1},
		{"instance paged by 1", "/Patient/" + a + "/_history?_count=1", instance, 4},
		{"instance paged by 3", "/Patient/" + a + "/_history?_count=3", instance, 2},
		{"type", "/Patient/_history", append([]string{"PUT Patient/b 201 Created W/\"1\""}, instance...), 1},
		{"type paged", "/Patient/_history?_count=2", append([]string{"PUT Patient/b 201 Created W/\"1\""}, instance...), 3},
		{"system", "/_history", append([]string{"PUT Observation/o 201 Created W/\"1\"", "PUT Patient/b 201 Created W/\"1\""}, instance...), 1},
		{"system paged", "/_history?_count=4", append([]string{"PUT Observation/o 201 Created W/\"1\"", "PUT Patient/b 201 Created W/\"1\""}, instance...), 2},
		{"unknown instance", "/Patient/none/_history", nil, 1},
		{"other type", "/Observation/_history", []string{"PUT Observation/o 201 Created W/\"1\""}, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.name == "unknown instance" {
				r := e.do("GET", c.path, "", nil)
				// An instance that never existed has no history: 404.
				mustStatus(t, c.path, r, 404)
				isOutcome(t, c.path, r, "not-found")
				return
			}
			got, pages, first := followPages(t, e, c.path)
			if !slices.Equal(got, c.want) {
				t.Errorf("entries:\n got %q\nwant %q", got, c.want)
			}
			if pages != c.pages {
				t.Errorf("%d pages, want %d", pages, c.pages)
			}
			if first.Type != "history" {
				t.Errorf("Bundle.type %q", first.Type)
			}
			if self := first.link("self"); self != e.url+c.path {
				t.Errorf("self %q, want %q", self, e.url+c.path)
			}
		})
	}

	t.Run("_since", func(t *testing.T) {
		time.Sleep(5 * time.Millisecond)
		since := time.Now().UTC()
		time.Sleep(5 * time.Millisecond)
		mustStatus(t, "late update", e.do("PUT", "/Patient/b", patient("b", "B2"), jsonCT), 200)
		for _, p := range []string{"/_history", "/Patient/_history", "/Patient/b/_history"} {
			got, _, _ := followPages(t, e, p+"?_since="+url.QueryEscape(since.Format(time.RFC3339Nano)))
			if want := []string{"PUT Patient/b 200 OK W/\"2\""}; !slices.Equal(got, want) {
				t.Errorf("%s?_since: %q, want %q", p, got, want)
			}
		}
	})
}

func TestSearch(t *testing.T) {
	e := newEnv(t, nil)
	var ids []string
	for i := range 7 {
		id := fmt.Sprintf("p%d", i)
		ids = append(ids, id)
		mustStatus(t, "put", e.do("PUT", "/Patient/"+id, patient(id, "S"), jsonCT), 201)
	}
	mustStatus(t, "delete p3", e.do("DELETE", "/Patient/p3", "", nil), 204)
	live := slices.DeleteFunc(slices.Clone(ids), func(s string) bool { return s == "p3" })

	cases := []struct {
		name  string
		path  string
		want  []string
		pages int
	}{
		{"all", "/Patient", live, 1},
		{"paged", "/Patient?_count=2", live, 3},
		{"_id", "/Patient?_id=p1,p5,p3,nope", []string{"p1", "p5"}, 1},
		{"other type empty", "/Observation", nil, 1},
		{"lenient drops unknown", "/Patient?name=x&_count=10", live, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			var pages int
			var first *testBundle
			if strings.Contains(c.path, "name=") {
				r := e.do("GET", c.path, "", hdr("Prefer: handling=lenient"))
				mustStatus(t, c.path, r, 200)
				first = decodeBundle(t, r)
				for _, en := range first.Entry {
					got = append(got, metaOf(t, en.Resource).ID)
				}
				pages = 1
				if self := first.link("self"); strings.Contains(self, "name=") || !strings.Contains(self, "_count=10") {
					t.Errorf("self link %q must drop the ignored parameter and keep _count", self)
				}
			} else {
				got, pages, first = followPages(t, e, c.path)
			}
			slices.Sort(got)
			want := slices.Clone(c.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("ids %q, want %q", got, want)
			}
			if pages != c.pages {
				t.Errorf("%d pages, want %d", pages, c.pages)
			}
			if first.Type != "searchset" {
				t.Errorf("type %q", first.Type)
			}
		})
	}

	for _, c := range []struct {
		path string
		want int
	}{{"/Patient?_summary=count", len(live)}, {"/Observation?_summary=count", 0}, {"/Patient?_summary=count&_id=p1,p3,p4", 2}} {
		r := e.do("GET", c.path, "", nil)
		mustStatus(t, c.path, r, 200)
		b := decodeBundle(t, r)
		if b.Total == nil || *b.Total != c.want || len(b.Entry) != 0 {
			t.Errorf("%s: total %v, %d entries; want total %d and no entries", c.path, b.Total, len(b.Entry), c.want)
		}
	}

	r := e.do("GET", "/Patient?name=x", "", nil)
	mustStatus(t, "unknown parameter", r, 501)
	isOutcome(t, "unknown parameter", r, "not-supported")
}

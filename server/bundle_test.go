package server

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fhirbucket/bundle"
	"fhirbucket/fhirstore"
	"fhirbucket/internal/layout"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage"
	"fhirbucket/storage/storagetest"
)

// bundleEnv is a server with batch and transaction Bundles over a store
// on bucket base, reached over real HTTP.
type bundleEnv struct {
	*env
	tr *bundle.Transactor
}

func newBundleEnv(t testing.TB, base storage.Bucket, mod ...func(*bundle.Config)) *bundleEnv {
	t.Helper()
	be := &bundleEnv{}
	be.env = newEnv(t, base, func(cfg *Config, scfg *fhirstore.Config) {
		// The store is built after the options run: the Transactor
		// reaches it through a forwarding Store.
		cfg.Bundles = &BundleConfig{Transactions: txFunc(func() Transactions { return be.tr }), Validator: testenv.Validator(t)}
	})
	bcfg := bundle.Config{Store: be.store, Owner: "test-" + t.Name(), Logger: testenv.QuietLogger()}
	for _, m := range mod {
		m(&bcfg)
	}
	tr, err := bundle.New(bcfg)
	if err != nil {
		t.Fatal(err)
	}
	be.tr = tr
	return be
}

// txFunc defers to the Transactions the function returns at call time.
type txFunc func() Transactions

func (f txFunc) Commit(ctx context.Context, tenant string, p *bundle.Plan) ([]bundle.Written, error) {
	return f().Commit(ctx, tenant, p)
}

// bundleResponse is the part of a batch/transaction response the tests read.
type bundleResponse struct {
	ResourceType string
	Type         string
	Entry        []struct {
		FullURL  string          `json:"fullUrl"`
		Resource json.RawMessage `json:"resource"`
		Response struct {
			Status       string          `json:"status"`
			Location     string          `json:"location"`
			Etag         string          `json:"etag"`
			LastModified string          `json:"lastModified"`
			Outcome      json.RawMessage `json:"outcome"`
		} `json:"response"`
	} `json:"entry"`
}

func (e *env) postBundle(body string, h ...string) (*response, *bundleResponse) {
	e.t.Helper()
	r := e.do("POST", "/", body, hdr(append([]string{"Content-Type: application/fhir+json"}, h...)...))
	if r.status != http.StatusOK {
		return r, nil
	}
	var br bundleResponse
	if err := json.Unmarshal(r.body, &br); err != nil {
		e.t.Fatalf("response is not a Bundle: %v: %s", err, r.body)
	}
	return r, &br
}

// bucketState is every key with its ETag: what "nothing changed" compares.
func bucketState(t testing.TB, b storage.Bucket) map[string]string {
	t.Helper()
	out := map[string]string{}
	for a, err := range storage.Walk(t.Context(), b, storage.ListOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		out[a.Key] = a.ETag
	}
	return out
}

func TestBatchMixedResults(t *testing.T) {
	testenv.EachBackend(t, func(t *testing.T, bk testenv.Backend) {
		e := newBundleEnv(t, bk.Open(t))
		mustStatus(t, "seed", e.do("PUT", "/Patient/p1", `{"resourceType":"Patient","id":"p1","gender":"male"}`, jsonCT), 201)
		mustStatus(t, "seed", e.do("PUT", "/Patient/p3", `{"resourceType":"Patient","id":"p3"}`, jsonCT), 201)
		body := `{"resourceType":"Bundle","type":"batch","entry":[
{"request":{"method":"GET","url":"Patient/p1"}},
{"request":{"method":"GET","url":"Patient/missing"}},
{"resource":{"resourceType":"Patient","id":"p2"},"request":{"method":"PUT","url":"Patient/p2"}},
{"resource":{"resourceType":"Patient","gender":"bogus"},"request":{"method":"POST","url":"Patient"}},
{"request":{"method":"DELETE","url":"Patient/p3"}},
{"resource":{"resourceType":"Patient","id":"p1"},"request":{"method":"PUT","url":"Patient/p1","ifMatch":"W/\"9\""}},
{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"}},"request":{"method":"POST","url":"Observation"}},
{"request":{"method":"GET","url":"Patient?name=x"}},
{"request":{"method":"PATCH","url":"Patient/p1"}}
]}`
		r, br := e.postBundle(body)
		mustStatus(t, "batch", r, 200)
		if br.Type != "batch-response" || len(br.Entry) != 9 {
			t.Fatalf("type %q with %d entries, want batch-response with 9", br.Type, len(br.Entry))
		}
		want := []string{"200 OK", "404 Not Found", "201 Created", "400 Bad Request", "204 No Content",
			"412 Precondition Failed", "201 Created", "501 Not Implemented", "501 Not Implemented"}
		for i, w := range want {
			got := br.Entry[i].Response
			if got.Status != w {
				t.Errorf("entry %d: status %q, want %q (outcome %s)", i, got.Status, w, got.Outcome)
			}
			if strings.HasPrefix(w, "2") == (len(got.Outcome) > 0) && !strings.HasPrefix(w, "2") {
				t.Errorf("entry %d: a failure without an outcome", i)
			}
			if !strings.HasPrefix(w, "2") && len(got.Outcome) == 0 {
				t.Errorf("entry %d (%s): no outcome", i, w)
			}
		}
		if loc := br.Entry[2].Response.Location; loc != "Patient/p2/_history/1" {
			t.Errorf("PUT entry location %q, want Patient/p2/_history/1", loc)
		}
		if loc := br.Entry[4].Response.Location; loc != "Patient/p3/_history/2" {
			t.Errorf("DELETE entry location %q, want Patient/p3/_history/2", loc)
		}
		if loc := br.Entry[6].Response.Location; !strings.HasPrefix(loc, "Observation/") || !strings.HasSuffix(loc, "/_history/1") {
			t.Errorf("POST entry location %q, want Observation/{id}/_history/1", loc)
		}
		if br.Entry[6].Response.Etag != `W/"1"` || br.Entry[6].Response.LastModified == "" {
			t.Errorf("POST entry etag %q lastModified %q", br.Entry[6].Response.Etag, br.Entry[6].Response.LastModified)
		}
		if !json.Valid(br.Entry[0].Resource) || !strings.Contains(string(br.Entry[0].Resource), `"gender":"male"`) {
			t.Errorf("GET entry resource %s", br.Entry[0].Resource)
		}
		// The failed entries wrote nothing; the others did.
		mustStatus(t, "p3 deleted", e.do("GET", "/Patient/p3", "", nil), 410)
		mustStatus(t, "p1 unchanged", e.do("GET", "/Patient/p1/_history/2", "", nil), 404)
		mustStatus(t, "p2 created", e.do("GET", "/Patient/p2", "", nil), 200)
	})
}

func TestBatchOfficialExamples(t *testing.T) {
	e := newBundleEnv(t, nil)
	files, _ := filepath.Glob(filepath.Join(testenv.ExamplesDir(), "bundle-request-*.json"))
	if len(files) == 0 {
		t.Fatal("no bundle-request-*.json examples found")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var in struct {
			Type  string
			Entry []json.RawMessage
		}
		_ = json.Unmarshal(data, &in)
		r, br := e.postBundle(string(data))
		if in.Type != "batch" && in.Type != "transaction" {
			continue
		}
		if in.Type == "transaction" {
			// Official transaction examples use conditional entries.
			if r.status != 200 && r.status != 501 && r.status != 400 {
				t.Errorf("%s: status %d: %s", filepath.Base(f), r.status, r.body)
			}
			continue
		}
		mustStatus(t, filepath.Base(f), r, 200)
		if len(br.Entry) != len(in.Entry) {
			t.Errorf("%s: %d response entries for %d requests", filepath.Base(f), len(br.Entry), len(in.Entry))
		}
		for i, en := range br.Entry {
			if en.Response.Status == "" {
				t.Errorf("%s: entry %d has no status", filepath.Base(f), i)
			}
		}
	}
}

// synthea reads the Synthea transaction bundles of testdata/synthea.
func synthea(t testing.TB) map[string][]byte {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(testenv.RepoRoot(), "testdata", "synthea", "*.json.gz"))
	if len(files) != 5 {
		t.Fatalf("want 5 Synthea bundles in testdata/synthea, found %d", len(files))
	}
	out := map[string][]byte{}
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(fh)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(zr)
		fh.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = data
	}
	return out
}

func TestTransactionSynthea(t *testing.T) {
	testenv.EachBackend(t, func(t *testing.T, bk testenv.Backend) {
		e := newBundleEnv(t, bk.Open(t))
		for name, data := range synthea(t) {
			if bk.S3 && !strings.HasPrefix(name, "Lupe") && !strings.HasPrefix(name, "Brendan") {
				continue // two of five on S3 servers: the rest is the same work
			}
			var in struct {
				Entry []struct {
					Resource struct{ ResourceType string }
				}
			}
			if err := json.Unmarshal(data, &in); err != nil {
				t.Fatal(err)
			}
			wantTypes := map[string]int{}
			for _, en := range in.Entry {
				wantTypes[en.Resource.ResourceType]++
			}
			r, br := e.postBundle(string(data))
			mustStatus(t, name, r, 200)
			if br.Type != "transaction-response" || len(br.Entry) != len(in.Entry) {
				t.Fatalf("%s: %s with %d entries, want transaction-response with %d", name, br.Type, len(br.Entry), len(in.Entry))
			}
			gotTypes := map[string]int{}
			stored := map[string]bool{}
			for i, en := range br.Entry {
				if en.Response.Status != "201 Created" {
					t.Fatalf("%s entry %d: %s", name, i, en.Response.Status)
				}
				typ, rest, _ := strings.Cut(en.Response.Location, "/")
				id, _, _ := strings.Cut(rest, "/")
				gotTypes[typ]++
				stored[typ+"/"+id] = true
			}
			if !maps.Equal(gotTypes, wantTypes) {
				t.Errorf("%s: types %v, want %v", name, gotTypes, wantTypes)
			}
			// Every stored resource: no urn:uuid left, every reference
			// resolves to a stored resource.
			refs := 0
			for ref := range stored {
				g := e.do("GET", "/"+ref, "", nil)
				mustStatus(t, ref, g, 200)
				if strings.Contains(string(g.body), "urn:uuid:") {
					t.Fatalf("%s: %s still holds a urn:uuid reference: %.300s", name, ref, g.body)
				}
				for _, target := range referencesIn(t, g.body) {
					refs++
					if !stored[target] {
						if mustExist := e.do("GET", "/"+target, "", nil); mustExist.status != 200 {
							t.Errorf("%s: %s refers to %s, which is not stored (%d)", name, ref, target, mustExist.status)
						}
					}
				}
			}
			if refs == 0 {
				t.Errorf("%s: no references checked", name)
			}
		}
	})
}

// referencesIn returns every relative "Type/id" reference value of a
// resource.
func referencesIn(t testing.TB, data []byte) []string {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				if s, ok := c.(string); ok && k == "reference" && strings.Count(s, "/") == 1 && !strings.Contains(s, ":") {
					out = append(out, s)
				}
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(v)
	return out
}

// contentAndHistory is what a resource reads as: its current body (or
// status) and its instance history.
func contentAndHistory(e *env, ref string) string {
	g := e.do("GET", "/"+ref, "", nil)
	h := e.do("GET", "/"+ref+"/_history", "", nil)
	var hb struct {
		Entry []struct {
			Resource json.RawMessage
			Request  struct{ Method, URL string }
		}
	}
	_ = json.Unmarshal(h.body, &hb)
	var hist []string
	for _, en := range hb.Entry {
		hist = append(hist, en.Request.Method+" "+string(en.Resource))
	}
	return fmt.Sprintf("%d %s | %d %v", g.status, g.body, h.status, hist)
}

func TestTransactionRollback(t *testing.T) {
	testenv.EachBackend(t, func(t *testing.T, bk testenv.Backend) {
		faulty := storagetest.NewFaulty(bk.Open(t))
		e := newBundleEnv(t, faulty)
		for i := 1; i <= 4; i++ {
			mustStatus(t, "seed", e.do("PUT", fmt.Sprintf("/Patient/r%d", i), fmt.Sprintf(`{"resourceType":"Patient","id":"r%d","gender":"male"}`, i), jsonCT), 201)
		}
		mustStatus(t, "seed delete", e.do("DELETE", "/Patient/r4", "", nil), 204)
		refs := []string{"Patient/r1", "Patient/r2", "Patient/r3", "Patient/r4", "Patient/r5"}
		before := map[string]string{}
		for _, ref := range refs {
			before[ref] = contentAndHistory(e.env, ref)
		}
		// 8 entries: the 5th (a PUT of r3) fails while applying.
		body := `{"resourceType":"Bundle","type":"transaction","entry":[
{"fullUrl":"urn:uuid:00000000-0000-0000-0000-000000000001","resource":{"resourceType":"Observation","status":"final","code":{"text":"a"},"subject":{"reference":"Patient/r1"}},"request":{"method":"POST","url":"Observation"}},
{"request":{"method":"DELETE","url":"Patient/r2"}},
{"resource":{"resourceType":"Patient","id":"r1","gender":"female"},"request":{"method":"PUT","url":"Patient/r1"}},
{"fullUrl":"urn:uuid:00000000-0000-0000-0000-000000000002","resource":{"resourceType":"Patient","gender":"other"},"request":{"method":"POST","url":"Patient"}},
{"resource":{"resourceType":"Patient","id":"r3","gender":"female"},"request":{"method":"PUT","url":"Patient/r3"}},
{"resource":{"resourceType":"Patient","id":"r4","gender":"female"},"request":{"method":"PUT","url":"Patient/r4"}},
{"resource":{"resourceType":"Patient","id":"r5","gender":"female"},"request":{"method":"PUT","url":"Patient/r5"}},
{"request":{"method":"GET","url":"Patient/r1"}}
]}`
		rule := faulty.Add(storagetest.Fault{Op: storage.OpPut, KeyContains: "resources/Patient/r3/_history/", Nth: 1, Err: storage.ErrUnavailable})
		r, _ := e.postBundle(body)
		if r.status != 503 {
			t.Fatalf("transaction with a failing entry: status %d, want 503: %s", r.status, r.body)
		}
		isOutcome(t, "failed transaction", r, "")
		if !strings.Contains(string(r.body), "entry[4]") {
			t.Errorf("the outcome does not name entry 4: %s", r.body)
		}
		if rule.Fired() != 1 {
			t.Fatalf("fault fired %d times", rule.Fired())
		}
		for _, ref := range refs {
			if got := contentAndHistory(e.env, ref); got != before[ref] {
				t.Errorf("%s after the rollback:\n got %s\nwant %s", ref, got, before[ref])
			}
		}
		// The created ones are not there, at any level.
		for _, typ := range []string{"Observation", "Patient"} {
			lp := e.do("GET", "/"+typ+"?_summary=count", "", nil)
			want := map[string]string{"Observation": `"total":0`, "Patient": `"total":3`}[typ]
			if !strings.Contains(string(lp.body), want) {
				t.Errorf("%s count after rollback: %s, want %s", typ, lp.body, want)
			}
		}
		sys := e.do("GET", "/_history", "", nil)
		if strings.Contains(string(sys.body), "Observation") || strings.Contains(string(sys.body), `"gender":"other"`) {
			t.Errorf("system history shows an aborted version: %.500s", sys.body)
		}
		// The journal says aborted, and the store still takes writes.
		journals := keysUnder(t, faulty, "default/"+layout.TransactionsPrefix)
		if len(journals) != 1 {
			t.Fatalf("journals %v, want one", journals)
		}
		data, _, _ := storage.ReadAll(t.Context(), faulty, journals[0])
		if !strings.Contains(string(data), `"status":"aborted"`) {
			t.Errorf("journal: %s", data)
		}
		mustStatus(t, "update after abort", e.do("PUT", "/Patient/r3", `{"resourceType":"Patient","id":"r3","gender":"other"}`, hdr("Content-Type: application/fhir+json", `If-Match: W/"1"`)), 200)
	})
}

func keysUnder(t testing.TB, b storage.Bucket, prefix string) []string {
	var out []string
	for a, err := range storage.Walk(t.Context(), b, storage.ListOptions{Prefix: prefix}) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, a.Key)
	}
	return out
}

func TestTransactionBadInput(t *testing.T) {
	e := newBundleEnv(t, nil)
	mustStatus(t, "seed", e.do("PUT", "/Patient/x1", `{"resourceType":"Patient","id":"x1"}`, jsonCT), 201)
	tx := func(entries string) string {
		return `{"resourceType":"Bundle","type":"transaction","entry":[` + entries + `]}`
	}
	put := `{"resource":{"resourceType":"Patient","id":"x1"},"request":{"method":"PUT","url":"Patient/x1"}}`
	cases := []struct {
		name, body, ct string
		status         int
		want           string // in the diagnostics
	}{
		{"not JSON", `{"resourceType":`, "", 400, "bundle"},
		{"not a Bundle", `{"resourceType":"Patient"}`, "", 400, "Bundle"},
		{"document Bundle", `{"resourceType":"Bundle","type":"document"}`, "", 400, "document"},
		{"entry not an array", `{"resourceType":"Bundle","type":"transaction","entry":{}}`, "", 400, "entry"},
		{"entry without request", tx(`{"resource":{"resourceType":"Patient"}}`), "", 400, "entry[0]"},
		{"unknown method", tx(`{"request":{"method":"FETCH","url":"Patient/x1"}}`), "", 400, "entry[0]"},
		{"unknown type", tx(`{"request":{"method":"DELETE","url":"Patiente/x1"}}`), "", 400, "entry[0]"},
		{"bad id", tx(`{"request":{"method":"DELETE","url":"Patient/x_1"}}`), "", 400, "entry[0]"},
		{"dot dot", tx(`{"request":{"method":"DELETE","url":"Patient/../x1"}}`), "", 400, "entry[0]"},
		{"extra segments", tx(`{"request":{"method":"DELETE","url":"Patient/x1/y/z"}}`), "", 400, "entry[0]"},
		{"other server", tx(`{"request":{"method":"DELETE","url":"https://elsewhere.example/fhir/Patient/x1"}}`), "", 400, "entry[0]"},
		{"PATCH", tx(`{"request":{"method":"PATCH","url":"Patient/x1"}}`), "", 501, "entry[0]"},
		{"conditional create", tx(`{"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=a|b"}}`), "", 501, "entry[0]"},
		{"POST without resource", tx(`{"request":{"method":"POST","url":"Patient"}}`), "", 400, "entry[0]"},
		{"type mismatch", tx(`{"resource":{"resourceType":"Observation"},"request":{"method":"POST","url":"Patient"}}`), "", 400, "entry[0]"},
		{"id mismatch", tx(`{"resource":{"resourceType":"Patient","id":"x2"},"request":{"method":"PUT","url":"Patient/x1"}}`), "", 400, "entry[0]"},
		{"duplicate fullUrl", tx(`{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}`), "", 400, "entry[1]"},
		{"same resource twice", tx(put + "," + put), "", 400, "entry[1]"},
		{"invalid resource", tx(`{"resource":{"resourceType":"Patient","gender":"bogus"},"request":{"method":"POST","url":"Patient"}}`), "", 400, "entry[0]"},
		{"stale ifMatch", tx(`{"resource":{"resourceType":"Patient","id":"x1"},"request":{"method":"PUT","url":"Patient/x1","ifMatch":"W/\"7\""}}`), "", 412, "entry[0]"},
		{"bad ifMatch", tx(`{"resource":{"resourceType":"Patient","id":"x1"},"request":{"method":"PUT","url":"Patient/x1","ifMatch":"7"}}`), "", 400, "entry[0]"},
		{"XML", `<Bundle xmlns="http://hl7.org/fhir"/>`, "application/fhir+xml", 415, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := bucketState(t, e.bucket)
			ct := c.ct
			if ct == "" {
				ct = "application/fhir+json"
			}
			r := e.do("POST", "/", c.body, hdr("Content-Type: "+ct))
			mustStatus(t, c.name, r, c.status)
			isOutcome(t, c.name, r, "")
			if !strings.Contains(string(r.body), c.want) {
				t.Errorf("diagnostics do not mention %q: %s", c.want, r.body)
			}
			if after := bucketState(t, e.bucket); !maps.Equal(before, after) {
				t.Errorf("the bucket changed: before %d keys, after %d", len(before), len(after))
			}
		})
	}
	t.Run("too many entries", func(t *testing.T) {
		var entries []string
		for range bundle.DefaultMaxEntries + 1 {
			entries = append(entries, `{"request":{"method":"GET","url":"Patient/x1"}}`)
		}
		before := bucketState(t, e.bucket)
		r := e.do("POST", "/", tx(strings.Join(entries, ",")), jsonCT)
		mustStatus(t, "too many", r, 413)
		isOutcome(t, "too many", r, "too-costly")
		if after := bucketState(t, e.bucket); !maps.Equal(before, after) {
			t.Error("the bucket changed")
		}
	})
}

// TestTransactionAtomicVisibility polls the touched resources while a
// transaction of 300 updates commits: each poll sees either the old or
// the new version, and once any new version has been seen no old one is
// seen again. During a transaction that aborts, no new version is seen.
func TestTransactionAtomicVisibility(t *testing.T) {
	testenv.EachBackend(t, func(t *testing.T, bk testenv.Backend) {
		n := 300
		if bk.S3 {
			n = 60
		}
		faulty := storagetest.NewFaulty(bk.Open(t))
		e := newBundleEnv(t, faulty)
		var entries []string
		var ids []string
		for i := range n {
			id := fmt.Sprintf("v%03d", i)
			ids = append(ids, id)
			if err := putPlain(e.env, id, "old"); err != nil {
				t.Fatal(err)
			}
			entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Patient","id":"%s","name":[{"family":"new"}]},"request":{"method":"PUT","url":"Patient/%s"}}`, id, id))
		}
		body := `{"resourceType":"Bundle","type":"transaction","entry":[` + strings.Join(entries, ",") + `]}`

		poll := func(stop *atomic.Bool, seenNew *atomic.Int64, fail func(string)) {
			sawNew := false
			for !stop.Load() {
				for _, id := range ids {
					g := e.do("GET", "/Patient/"+id, "", nil)
					isNew := strings.Contains(string(g.body), `"family":"new"`)
					switch {
					case g.status != 200:
						fail(fmt.Sprintf("GET %s: %d", id, g.status))
						return
					case isNew:
						sawNew = true
						seenNew.Add(1)
					case sawNew:
						fail("saw the old version of " + id + " after a new version of another")
						return
					}
				}
			}
		}
		run := func(wantStatus int) (newSeen int64) {
			var stop atomic.Bool
			var seenNew atomic.Int64
			var mu sync.Mutex
			var failures []string
			var wg sync.WaitGroup
			for range 2 {
				wg.Go(func() {
					poll(&stop, &seenNew, func(s string) { mu.Lock(); failures = append(failures, s); mu.Unlock() })
				})
			}
			time.Sleep(20 * time.Millisecond)
			r := e.do("POST", "/", body, jsonCT)
			time.Sleep(50 * time.Millisecond)
			stop.Store(true)
			wg.Wait()
			if r.status != wantStatus {
				t.Fatalf("transaction: %d, want %d: %.300s", r.status, wantStatus, r.body)
			}
			for _, f := range failures {
				t.Error(f)
			}
			return seenNew.Load()
		}
		// First a transaction whose last write fails: nothing new is ever seen.
		faulty.Add(storagetest.Fault{Op: storage.OpPut, KeyContains: "resources/Patient/" + ids[n-1] + "/_history/", Nth: 1,
			Err: storage.ErrUnavailable, Delay: 200 * time.Millisecond})
		if got := run(503); got != 0 {
			t.Errorf("an aborted transaction's versions were seen %d times", got)
		}
		faulty.Reset()
		run(200)
		for _, id := range ids {
			if g := e.do("GET", "/Patient/"+id, "", nil); !strings.Contains(string(g.body), `"family":"new"`) {
				t.Fatalf("%s after commit: %s", id, g.body)
			}
		}
	})
}

func putPlain(e *env, id, family string) error {
	r := e.do("PUT", "/Patient/"+id, fmt.Sprintf(`{"resourceType":"Patient","id":"%s","name":[{"family":"%s"}]}`, id, family), jsonCT)
	if r.status != 200 && r.status != 201 {
		return fmt.Errorf("PUT %s: %d %s", id, r.status, r.body)
	}
	return nil
}

// TestTransactionConcurrent: two transactions touching the same resource
// at once; one wins, the other fails and leaves nothing visible.
func TestTransactionConcurrent(t *testing.T) {
	testenv.EachBackend(t, func(t *testing.T, bk testenv.Backend) {
		e := newBundleEnv(t, bk.Open(t))
		if err := putPlain(e.env, "shared", "zero"); err != nil {
			t.Fatal(err)
		}
		rounds := 10
		if bk.S3 {
			rounds = 4
		}
		for round := range rounds {
			var wg sync.WaitGroup
			statuses := make([]int, 2)
			for k := range 2 {
				wg.Go(func() {
					body := fmt.Sprintf(`{"resourceType":"Bundle","type":"transaction","entry":[
{"resource":{"resourceType":"Patient","id":"shared","name":[{"family":"t%d-%d"}]},"request":{"method":"PUT","url":"Patient/shared"}},
{"resource":{"resourceType":"Patient","id":"own%d-%d","name":[{"family":"t%d"}]},"request":{"method":"PUT","url":"Patient/own%d-%d"}}]}`, round, k, round, k, k, round, k)
					statuses[k] = e.do("POST", "/", body, jsonCT).status
				})
			}
			wg.Wait()
			wins := 0
			for k, st := range statuses {
				own := e.do("GET", fmt.Sprintf("/Patient/own%d-%d", round, k), "", nil)
				switch st {
				case 200:
					wins++
					mustStatus(t, "winner's own resource", own, 200)
					shared := e.do("GET", "/Patient/shared", "", nil)
					if !strings.Contains(string(shared.body), fmt.Sprintf("t%d-%d", round, k)) {
						// the other one may have won a later race only if it also got 200
						if statuses[1-k] != 200 {
							t.Errorf("round %d: winner %d's write is not current: %s", round, k, shared.body)
						}
					}
				case 409, 412:
					if own.status != 404 {
						t.Errorf("round %d: the loser's own resource is visible: %d", round, own.status)
					}
				default:
					t.Fatalf("round %d: transaction %d answered %d", round, k, st)
				}
			}
			if wins == 0 {
				t.Errorf("round %d: no transaction won (%v)", round, statuses)
			}
		}
	})
}

// TestTransactionRecovery: a transaction whose process stops after some of
// its writes (the storage fails every write after the 3rd; its abort
// cannot be recorded either) leaves an open journal; every touched
// resource reads as before meanwhile, and Recover by another Transactor
// after the lease expired aborts it for good.
func TestTransactionRecovery(t *testing.T) {
	testenv.EachBackend(t, func(t *testing.T, bk testenv.Backend) {
		base := bk.Open(t)
		faulty := storagetest.NewFaulty(base)
		e := newBundleEnv(t, faulty, func(c *bundle.Config) { c.LeaseTTL = 3 * time.Second })
		for _, id := range []string{"c1", "c2", "c3"} {
			if err := putPlain(e.env, id, "old"); err != nil {
				t.Fatal(err)
			}
		}
		var entries []string
		for _, id := range []string{"c1", "c2", "c3"} {
			entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Patient","id":"%s","name":[{"family":"new"}]},"request":{"method":"PUT","url":"Patient/%s"}}`, id, id))
		}
		var puts atomic.Int64
		faulty.Add(storagetest.Fault{Op: storage.OpPut, Match: func(string) bool { return puts.Add(1) > 3 }, Err: storage.ErrUnavailable})
		r := e.do("POST", "/", `{"resourceType":"Bundle","type":"transaction","entry":[`+strings.Join(entries, ",")+`]}`, jsonCT)
		if r.status != 503 {
			t.Fatalf("status %d, want 503: %s", r.status, r.body)
		}
		faulty.Reset()
		journals := keysUnder(t, base, "default/"+layout.TransactionsPrefix)
		if len(journals) != 1 {
			t.Fatalf("journals %v", journals)
		}
		data, _, _ := storage.ReadAll(t.Context(), base, journals[0])
		if !strings.Contains(string(data), `"status":"open"`) {
			t.Fatalf("journal is not left open: %s", data)
		}
		// Meanwhile every touched resource reads as before, from a fresh
		// process too (no cache).
		other := newBundleEnv(t, base, func(c *bundle.Config) { c.LeaseTTL = 3 * time.Second })
		for _, id := range []string{"c1", "c2", "c3"} {
			for _, env := range []*env{e.env, other.env} {
				g := env.do("GET", "/Patient/"+id, "", nil)
				if !strings.Contains(string(g.body), `"family":"old"`) {
					t.Errorf("%s while the journal is open: %s", id, g.body)
				}
			}
		}
		// Before the lease expires Recover leaves it alone.
		rep, err := other.tr.Recover(t.Context(), "default")
		if err != nil || rep.Open != 1 || rep.Aborted != 0 {
			t.Fatalf("Recover before expiry: %+v, %v", rep, err)
		}
		time.Sleep(3*time.Second + 700*time.Millisecond)
		rep, err = other.tr.Recover(t.Context(), "default")
		if err != nil || rep.Aborted != 1 {
			t.Fatalf("Recover after expiry: %+v, %v", rep, err)
		}
		data, _, _ = storage.ReadAll(t.Context(), base, journals[0])
		if !strings.Contains(string(data), `"status":"aborted"`) {
			t.Fatalf("journal after recovery: %s", data)
		}
		for _, id := range []string{"c1", "c2", "c3"} {
			g := other.do("GET", "/Patient/"+id, "", nil)
			if !strings.Contains(string(g.body), `"family":"old"`) {
				t.Errorf("%s after recovery: %s", id, g.body)
			}
			// A writer builds on the visible version.
			mustStatus(t, "update after recovery", other.do("PUT", "/Patient/"+id, fmt.Sprintf(`{"resourceType":"Patient","id":"%s"}`, id),
				hdr("Content-Type: application/fhir+json", `If-Match: W/"1"`)), 200)
		}
	})
}

// TestTransactionCost pins the storage requests of a transaction: per
// POST entry the 4 PUTs of a single create, per PUT entry the 1 GET + 4
// PUTs of a single update, plus 2 PUTs for the journal (create, commit)
// for the whole transaction. Readers of the committed versions pay one
// GET of the journal per transaction and process, and nothing after.
func TestTransactionCost(t *testing.T) {
	e := newBundleEnv(t, nil)
	const n = 100
	var posts, puts []string
	for i := range n {
		posts = append(posts, fmt.Sprintf(`{"fullUrl":"urn:uuid:00000000-0000-0000-0000-%012d","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}`, i))
		puts = append(puts, fmt.Sprintf(`{"resource":{"resourceType":"Patient","id":"q%d","gender":"male"},"request":{"method":"PUT","url":"Patient/q%d"}}`, i, i))
	}
	for i := range n {
		if err := putPlain(e.env, fmt.Sprintf("q%d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name     string
		entries  []string
		get, put int64
	}{
		{"100 POST", posts, 0, 4*n + 2},
		{"100 PUT", puts, n, 4*n + 2},
	} {
		before := e.count.Counts()
		r, _ := e.postBundle(`{"resourceType":"Bundle","type":"transaction","entry":[` + strings.Join(c.entries, ",") + `]}`)
		mustStatus(t, c.name, r, 200)
		got := e.count.Counts().Sub(before)
		if got.Get != c.get || got.Put != c.put || got.List != 0 || got.Delete != 0 || got.Head != 0 {
			t.Errorf("%s: %+v, want %d GETs and %d PUTs", c.name, got, c.get, c.put)
		}
		t.Logf("%s: %.2f requests per entry", c.name, float64(got.Total())/n)
	}
	// Reading a committed version costs its GET and, once per process
	// and transaction, nothing more (the commit was noted in-process).
	before := e.count.Counts()
	mustStatus(t, "read", e.do("GET", "/Patient/q1", "", nil), 200)
	if got := e.count.Counts().Sub(before); got.Total() != 1 {
		t.Errorf("read of a committed version: %+v, want 1 GET", got)
	}
	// Another process pays one journal GET, the first time only.
	other := newBundleEnv(t, e.bucket)
	before = other.count.Counts()
	mustStatus(t, "read elsewhere", other.do("GET", "/Patient/q1", "", nil), 200)
	mustStatus(t, "read elsewhere again", other.do("GET", "/Patient/q2", "", nil), 200)
	if got := other.count.Counts().Sub(before); got.Get != 3 {
		t.Errorf("two reads in another process: %+v, want 3 GETs (2 versions + 1 journal)", got)
	}
}

// TestBundleCapability: the statement claims batch and transaction only
// when the server processes Bundles.
func TestBundleCapability(t *testing.T) {
	for _, c := range []struct {
		name string
		e    *env
		want bool
	}{{"with bundles", newBundleEnv(t, nil).env, true}, {"without", newEnv(t, nil), false}} {
		r := c.e.do("GET", "/metadata", "", nil)
		mustStatus(t, c.name, r, 200)
		var cs struct {
			Rest []struct{ Interaction []struct{ Code string } }
		}
		if err := json.Unmarshal(r.body, &cs); err != nil || len(cs.Rest) != 1 {
			t.Fatalf("%s: %v %s", c.name, err, r.body)
		}
		var codes []string
		for _, in := range cs.Rest[0].Interaction {
			codes = append(codes, in.Code)
		}
		has := strings.Contains(strings.Join(codes, " "), "batch transaction")
		if has != c.want {
			t.Errorf("%s: system interactions %v", c.name, codes)
		}
		if !c.want {
			mustStatus(t, "POST / without bundles", c.e.do("POST", "/", `{"resourceType":"Bundle","type":"batch"}`, jsonCT), 501)
		}
	}
}

// TestTransactionOutlivesItsClient: a client that gives up while the
// writes are being applied does not stop the commit half way: the
// transaction commits (or, had a write failed, aborts) as a whole.
func TestTransactionOutlivesItsClient(t *testing.T) {
	base := newEnv(t, nil).bucket
	slow := storagetest.NewFaulty(base)
	e := newBundleEnv(t, slow)
	var entries []string
	for i := range 20 {
		entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Patient","id":"d%d","name":[{"family":"new"}]},"request":{"method":"PUT","url":"Patient/d%d"}}`, i, i))
	}
	slow.Add(storagetest.Fault{Op: storage.OpPut, KeyContains: "/_history/", Delay: 300 * time.Millisecond})
	req, _ := http.NewRequestWithContext(t.Context(), "POST", e.url+"/", strings.NewReader(`{"resourceType":"Bundle","type":"transaction","entry":[`+strings.Join(entries, ",")+`]}`))
	req.Header.Set("Content-Type", "application/fhir+json")
	client := &http.Client{Timeout: 200 * time.Millisecond}
	if resp, err := client.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the client was expected to time out, got %d", resp.StatusCode)
	}
	// The commit goes on without the client.
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var j []string
		for a, err := range storage.Walk(t.Context(), base, storage.ListOptions{Prefix: "default/" + layout.TransactionsPrefix}) {
			if err == nil {
				data, _, _ := storage.ReadAll(t.Context(), base, a.Key)
				j = append(j, string(data))
			}
		}
		if len(j) == 1 && !strings.Contains(j[0], `"status":"open"`) {
			if !strings.Contains(j[0], `"status":"committed"`) {
				t.Fatalf("journal: %s", j[0])
			}
			for i := range 20 {
				if g := e.do("GET", fmt.Sprintf("/Patient/d%d", i), "", nil); g.status != 200 || !strings.Contains(string(g.body), "new") {
					t.Fatalf("d%d after the commit: %d %s", i, g.status, g.body)
				}
			}
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the transaction did not finish after its client left")
}

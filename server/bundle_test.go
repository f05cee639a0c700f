package server

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"fhirbucket/bundle"
	"fhirbucket/fhirstore"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage"
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
	be.env = startEnv(t, base, nil, func(st *fhirstore.Store, cfg *Config) {
		be.tr = newTransactor(t, st, mod...)
		cfg.Bundles = &BundleConfig{Transactions: be.tr, Validator: testenv.Validator(t)}
	})
	return be
}

// newTransactor is a Transactor over st, quiet, owned by the test.
func newTransactor(t testing.TB, st *fhirstore.Store, mod ...func(*bundle.Config)) *bundle.Transactor {
	t.Helper()
	cfg := bundle.Config{Store: st, Owner: "test-" + t.Name(), Logger: testenv.QuietLogger()}
	for _, m := range mod {
		m(&cfg)
	}
	tr, err := bundle.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tr
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
	out := map[string][]byte{}
	for _, f := range testenv.SyntheaFiles(t) {
		out[filepath.Base(f)] = testenv.ReadGzip(t, f)
	}
	return out
}

// referencesIn returns every relative "Type/id" reference value of a
// resource.
// contentAndHistory is what a resource reads as: its current body (or
// status) and its instance history.
// TestTransactionAtomicVisibility polls the touched resources while a
// transaction of 300 updates commits: each poll sees either the old or
// the new version, and once any new version has been seen no old one is
// seen again. During a transaction that aborts, no new version is seen.
// TestTransactionConcurrent: two transactions touching the same resource
// at once; one wins, the other fails and leaves nothing visible.
// TestTransactionRecovery: a transaction whose process stops after some of
// its writes (the storage fails every write after the 3rd; its abort
// cannot be recorded either) leaves an open journal; every touched
// resource reads as before meanwhile, and Recover by another Transactor
// after the lease expired aborts it for good.
// TestTransactionCost pins the storage requests of a transaction: per
// POST entry the 4 PUTs of a single create, per PUT entry the 1 GET + 4
// PUTs of a single update, plus 2 PUTs for the journal (create, commit)
// for the whole transaction. Readers of the committed versions pay one
// GET of the journal per transaction and process, and nothing after.
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

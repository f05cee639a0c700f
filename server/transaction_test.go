package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fhirbucket/bundle"
	"fhirbucket/internal/layout"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage"
	"fhirbucket/storage/storagetest"
)

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

// TestRecoverCost: a recovery pass reads only the journals its
// Transactor does not know finished: after the first pass, a pass costs
// its LIST and nothing more.
func TestRecoverCost(t *testing.T) {
	e := newBundleEnv(t, nil)
	for i := range 3 {
		r, _ := e.postBundle(fmt.Sprintf(`{"resourceType":"Bundle","type":"transaction","entry":[{"resource":{"resourceType":"Patient","id":"rc%d"},"request":{"method":"PUT","url":"Patient/rc%d"}}]}`, i, i))
		mustStatus(t, "transaction", r, 200)
	}
	pass := func(be *bundleEnv) storage.Counts {
		before := be.count.Counts()
		rep, err := be.tr.Recover(t.Context(), "default")
		if err != nil || rep.Aborted != 0 || rep.Failed != 0 {
			t.Fatalf("Recover: %+v %v", rep, err)
		}
		return be.count.Counts().Sub(before)
	}
	if got := pass(e); got.Get != 0 || got.List != 1 || got.Put != 0 {
		t.Errorf("pass of the process that ran them: %+v, want 1 LIST", got)
	}
	other := newBundleEnv(t, e.bucket)
	if got := pass(other); got.Get != 3 || got.List != 1 {
		t.Errorf("first pass elsewhere: %+v, want 1 LIST + 3 GETs", got)
	}
	if got := pass(other); got.Get != 0 || got.List != 1 {
		t.Errorf("second pass elsewhere: %+v, want 1 LIST", got)
	}
}

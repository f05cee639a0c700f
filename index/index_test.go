package index

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"fhirbucket/fhirstore"
	"fhirbucket/internal/layout"
	"fhirbucket/internal/s3test"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
	"fhirbucket/storage/storagetest"
	"time"
)

func TestMain(m *testing.M) { s3test.Main(m) }

const tenant = "t1"

// env is a store with the identifier index on one bucket.
type env struct {
	b     storage.Bucket
	store *fhirstore.Store
	ix    *Index
}

func newEnv(t testing.TB, b storage.Bucket) *env {
	t.Helper()
	v := testenv.Validator(t)
	st, err := fhirstore.New(fhirstore.Config{Bucket: b, Validator: v, Logger: testenv.QuietLogger(), Indexer: &Keys{}})
	if err != nil {
		t.Fatal(err)
	}
	ix, err := New(Config{Store: st, Validator: v, Logger: testenv.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	return &env{b: b, store: st, ix: ix}
}

func patient(ids ...Identifier) []byte {
	type ident struct {
		System string `json:"system,omitempty"`
		Value  string `json:"value"`
	}
	p := map[string]any{"resourceType": "Patient", "active": true}
	var list []ident
	for _, i := range ids {
		list = append(list, ident(i))
	}
	if list != nil {
		p["identifier"] = list
	}
	data, _ := json.Marshal(p)
	return data
}

func withBodyID(body []byte, id string) []byte {
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	m["id"] = id
	data, _ := json.Marshal(m)
	return data
}

func crit(t testing.TB, q string) Criteria {
	t.Helper()
	c, err := ParseCriteria(q)
	if err != nil {
		t.Fatalf("ParseCriteria(%q): %v", q, err)
	}
	return c
}

func tok(t testing.TB, s string) Criteria {
	t.Helper()
	ts, err := ParseTokens(s)
	if err != nil {
		t.Fatalf("ParseTokens(%q): %v", s, err)
	}
	return Criteria{Tokens: ts}
}

func (e *env) ids(t testing.TB, c Criteria) []string {
	t.Helper()
	res, err := e.ix.Search(t.Context(), tenant, "Patient", c)
	if err != nil {
		t.Fatalf("Search: %v", err)
	}
	out := []string{}
	for _, r := range res {
		out = append(out, r.ID)
	}
	return out
}

func same(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

const sysA, sysB = "http://example.org/mrn", "urn:oid:1.2.3"

// TestSearchFollowsCurrentState: search sees exactly the current state
// after creates, an update that changes identifiers, a delete and a
// restore, with Unicode, 1,000-character and "|"-containing values, on
// every backend.
func TestSearchFollowsCurrentState(t *testing.T) {
	testenv.EachBackend(t, func(t *testing.T, bk testenv.Backend) {
		e := newEnv(t, bk.Open(t))
		ctx := t.Context()
		long := strings.Repeat("x/é|", 250) // 1,000 characters
		uni := "Ünïcødé-患者-🙂"
		pipe := "a|b/c,d$e\\f"
		p1, err := e.store.Create(ctx, tenant, "Patient", patient(Identifier{sysA, "1"}, Identifier{sysB, uni}))
		if err != nil {
			t.Fatal(err)
		}
		p2, err := e.store.Create(ctx, tenant, "Patient", patient(Identifier{"", long}, Identifier{sysA, pipe}))
		if err != nil {
			t.Fatal(err)
		}
		sorted := func(ids ...string) []string {
			if len(ids) == 2 && ids[0] > ids[1] {
				ids[0], ids[1] = ids[1], ids[0]
			}
			return ids
		}
		cases := []struct {
			c    Criteria
			want []string
		}{
			{tok(t, sysA+"|1"), []string{p1.ID}},
			{tok(t, "1"), []string{p1.ID}},
			{tok(t, "|1"), []string{}},
			{tok(t, sysB+"|1"), []string{}},
			{tok(t, escape(uni)), []string{p1.ID}},
			{tok(t, sysB+"|"+escape(uni)), []string{p1.ID}},
			{tok(t, "|"+escape(long)), []string{p2.ID}},
			{tok(t, escape(long)), []string{p2.ID}},
			{tok(t, sysA+"|"+escape(long)), []string{}},
			{tok(t, sysA+"|"+escape(pipe)), []string{p2.ID}},
			{tok(t, sysA+"|1,"+sysA+"|"+escape(pipe)), sorted(p1.ID, p2.ID)},
			{Criteria{Tokens: tok(t, "1,"+escape(long)).Tokens, IDs: []string{p2.ID}}, []string{p2.ID}},
		}
		for i, c := range cases {
			if got := e.ids(t, c.c); !same(got, c.want) {
				t.Errorf("case %d (%s): got %v, want %v", i, describe(c.c), got, c.want)
			}
		}
		// An update that changes the identifier: the old one no longer
		// matches, the new one does.
		if _, _, err := e.store.Update(ctx, tenant, "Patient", p1.ID, withBodyID(patient(Identifier{sysA, "2"}), p1.ID), fhirstore.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := e.ids(t, tok(t, sysA+"|1")); len(got) != 0 {
			t.Errorf("after the update, the dropped identifier still matches %v", got)
		}
		if got := e.ids(t, tok(t, sysA+"|2")); !same(got, []string{p1.ID}) {
			t.Errorf("after the update, the new identifier matches %v", got)
		}
		// The update removed the replaced version's entries.
		if n := countEntries(t, e.b, "Patient", "1"); n != 0 {
			t.Errorf("%d stale entries of the dropped identifier remain", n)
		}
		// Delete, then restore.
		if _, err := e.store.Delete(ctx, tenant, "Patient", p1.ID, fhirstore.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := e.ids(t, tok(t, "2")); len(got) != 0 {
			t.Errorf("after the delete: %v", got)
		}
		if _, _, err := e.store.Update(ctx, tenant, "Patient", p1.ID, withBodyID(patient(Identifier{sysA, "2"}), p1.ID), fhirstore.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := e.ids(t, tok(t, "2")); !same(got, []string{p1.ID}) {
			t.Errorf("after the restore: %v", got)
		}
	})
}

// countEntries counts the entries of value in the tenant.
func countEntries(t testing.TB, b storage.Bucket, typ, value string) int {
	t.Helper()
	tb, err := storage.Prefixed(b, tenant)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for a, err := range storage.Walk(t.Context(), tb, storage.ListOptions{Prefix: layout.IdentifierValuePrefix(typ, layout.IdentifierValueHash(value))}) {
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := layout.ParseIdentifierEntry(a.Key); ok {
			n++
		}
	}
	return n
}

// TestConditionalInteractions: If-None-Exist, conditional update and
// conditional delete with the R4 outcomes, on every backend.
func TestConditionalInteractions(t *testing.T) {
	testenv.EachBackend(t, func(t *testing.T, bk testenv.Backend) {
		e := newEnv(t, bk.Open(t))
		ctx := t.Context()
		c := crit(t, "identifier="+sysA+"|c1")
		body := patient(Identifier{sysA, "c1"})
		r1, created, err := e.ix.CreateIfNoneExist(ctx, tenant, "Patient", c, body)
		if err != nil || !created {
			t.Fatalf("first conditional create: created %v, %v", created, err)
		}
		r2, created, err := e.ix.CreateIfNoneExist(ctx, tenant, "Patient", c, body)
		if err != nil || created || r2.ID != r1.ID {
			t.Fatalf("second conditional create: %v created %v, %v; want %s", r2, created, err, r1.ID)
		}
		// Conditional update of the match, then with a body id naming
		// another resource (400).
		u, created, err := e.ix.ConditionalUpdate(ctx, tenant, "Patient", c, body, nil)
		if err != nil || created || u.ID != r1.ID || u.Version != 2 {
			t.Fatalf("conditional update: %+v created %v, %v", u, created, err)
		}
		if _, _, err := e.ix.ConditionalUpdate(ctx, tenant, "Patient", c, withBodyID(body, "other"), nil); !errors.Is(err, fhirstore.ErrInvalid) {
			t.Fatalf("conditional update with a different body id: %v, want ErrInvalid", err)
		}
		// If-Match on the match.
		m, _ := fhirstore.ParseIfMatch(`W/"1"`)
		if _, _, err := e.ix.ConditionalUpdate(ctx, tenant, "Patient", c, body, m); !errors.Is(err, fhirstore.ErrPreconditionFailed) {
			t.Fatalf("conditional update with a stale If-Match: %v", err)
		}
		// Conditional update with no match creates (with the body id).
		c2 := crit(t, "identifier="+sysA+"|c2")
		n, created, err := e.ix.ConditionalUpdate(ctx, tenant, "Patient", c2, withBodyID(patient(Identifier{sysA, "c2"}), "given"), nil)
		if err != nil || !created || n.ID != "given" {
			t.Fatalf("conditional update as create: %+v created %v, %v", n, created, err)
		}
		// A second resource sharing the identifier: 412 everywhere.
		if _, err := e.store.Create(ctx, tenant, "Patient", body); err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.ix.CreateIfNoneExist(ctx, tenant, "Patient", c, body); !errors.Is(err, fhirstore.ErrPreconditionFailed) {
			t.Fatalf("conditional create with 2 matches: %v, want 412", err)
		}
		if _, _, err := e.ix.ConditionalUpdate(ctx, tenant, "Patient", c, body, nil); !errors.Is(err, fhirstore.ErrPreconditionFailed) {
			t.Fatalf("conditional update with 2 matches: %v, want 412", err)
		}
		if _, err := e.ix.ConditionalDelete(ctx, tenant, "Patient", c, nil); !errors.Is(err, fhirstore.ErrPreconditionFailed) {
			t.Fatalf("conditional delete with 2 matches: %v, want 412", err)
		}
		// Conditional delete: one match, then none.
		d, err := e.ix.ConditionalDelete(ctx, tenant, "Patient", c2, nil)
		if err != nil || d == nil || d.ID != "given" || !d.Deleted() {
			t.Fatalf("conditional delete: %+v, %v", d, err)
		}
		if d, err := e.ix.ConditionalDelete(ctx, tenant, "Patient", c2, nil); err != nil || d != nil {
			t.Fatalf("conditional delete of nothing: %+v, %v", d, err)
		}
		// After the delete, a conditional create creates again.
		if _, created, err := e.ix.CreateIfNoneExist(ctx, tenant, "Patient", c2, patient(Identifier{sysA, "c2"})); err != nil || !created {
			t.Fatalf("conditional create after the delete: created %v, %v", created, err)
		}
	})
}

// TestConcurrentConditionalCreate: 32 concurrent conditional creates of
// one identifier through 3 Index values (as 3 replicas) on one bucket
// create exactly one resource, and every call answers with it; mixed
// with conditional updates as well.
func TestConcurrentConditionalCreate(t *testing.T) {
	testenv.EachBackend(t, func(t *testing.T, bk testenv.Backend) {
		b := bk.Open(t)
		replicas := []*env{newEnv(t, b), newEnv(t, b), newEnv(t, b)}
		rounds := 10
		if bk.S3 {
			rounds = 3
		}
		for round := range rounds {
			value := fmt.Sprintf("race-%d", round)
			c := crit(t, "identifier="+sysA+"|"+value)
			body := patient(Identifier{sysA, value})
			var mu sync.Mutex
			ids := map[string]int{}
			created := 0
			var wg sync.WaitGroup
			for i := range 32 {
				wg.Go(func() {
					e := replicas[i%3]
					var res *fhirstore.Resource
					var made bool
					var err error
					if round%2 == 1 && i%4 == 0 {
						res, made, err = e.ix.ConditionalUpdate(context.Background(), tenant, "Patient", c, body, nil)
					} else {
						res, made, err = e.ix.CreateIfNoneExist(context.Background(), tenant, "Patient", c, body)
					}
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						t.Errorf("round %d request %d: %v", round, i, err)
						return
					}
					ids[res.ID]++
					if made {
						created++
					}
				})
			}
			wg.Wait()
			if len(ids) != 1 || created != 1 {
				t.Fatalf("round %d: ids %v, %d created; want one id, created once", round, ids, created)
			}
			if got := replicas[0].ids(t, c); len(got) != 1 {
				t.Fatalf("round %d: search finds %v", round, got)
			}
		}
	})
}

// TestClaimOfStoppedHolder: a claim whose holder stopped (it never
// released it) blocks the identifier only until it expires; the next
// request creates the id the claim names, or answers with the resource
// the stopped holder created without its index entries.
func TestClaimOfStoppedHolder(t *testing.T) {
	for _, wrote := range []bool{false, true} {
		t.Run(fmt.Sprintf("created=%v", wrote), func(t *testing.T) {
			b := memstore.New()
			e := newEnv(t, b)
			e.ix.ttl = 60 * 1e6 // 60ms
			ctx := t.Context()
			tb, _ := storage.Prefixed(b, tenant)
			m, err := e.ix.claimManager(tb)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.ix.Complete(ctx, tenant); err != nil {
				t.Fatal(err)
			}
			key := layout.IdentifierClaimKey("Patient", layout.IdentifierValueHash("s1"))
			if _, err := m.Create(ctx, key, encodeClaim("stopped")); err != nil {
				t.Fatal(err)
			}
			if wrote {
				// The stopped holder's create landed, its index entries did not.
				st, _ := fhirstore.New(fhirstore.Config{Bucket: b, Validator: testenv.Validator(t), Logger: testenv.QuietLogger()})
				if _, _, err := st.Apply(ctx, tenant, fhirstore.Change{Type: "Patient", ID: "stopped", Method: fhirstore.MethodPost, Content: patient(Identifier{sysA, "s1"})}); err != nil {
					t.Fatal(err)
				}
			}
			res, created, err := e.ix.CreateIfNoneExist(ctx, tenant, "Patient", crit(t, "identifier="+sysA+"|s1"), patient(Identifier{sysA, "s1"}))
			if err != nil || res.ID != "stopped" || created == wrote {
				t.Fatalf("got %+v created %v, %v; want id stopped, created %v", res, created, err, !wrote)
			}
			if got := e.ids(t, tok(t, "s1")); !same(got, []string{"stopped"}) {
				t.Fatalf("search finds %v", got)
			}
		})
	}
}

// TestIncomplete: a tenant with resources written without the index
// answers ErrIncomplete until Reindex, which makes them findable.
func TestIncomplete(t *testing.T) {
	b := memstore.New()
	ctx := t.Context()
	old, _ := fhirstore.New(fhirstore.Config{Bucket: b, Validator: testenv.Validator(t), Logger: testenv.QuietLogger()})
	p, err := old.Create(ctx, tenant, "Patient", patient(Identifier{sysA, "old"}))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, b)
	if _, err := e.ix.Search(ctx, tenant, "Patient", tok(t, "old")); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("search before reindex: %v, want ErrIncomplete", err)
	}
	var last Progress
	if err := e.ix.Reindex(ctx, tenant, func(p Progress) { last = p }); err != nil {
		t.Fatal(err)
	}
	if last.Indexed != 1 || last.Types != last.Total {
		t.Errorf("progress %+v", last)
	}
	if got := e.ids(t, tok(t, "old")); !same(got, []string{p.ID}) {
		t.Fatalf("after reindex: %v", got)
	}
	// A fresh Index (another process) reads the marker.
	if got := newEnv(t, b).ids(t, tok(t, "old")); !same(got, []string{p.ID}) {
		t.Fatalf("another process after reindex: %v", got)
	}
}

// TestCosts states the requests of an indexed write and of a lookup.
func TestCosts(t *testing.T) {
	c := storage.NewCounter(memstore.New())
	e := newEnv(t, c)
	ctx := t.Context()
	// The first write of the tenant marks its index complete (1 HEAD +
	// 1 LIST + 1 PUT, once per process); later ones cost nothing extra.
	if _, err := e.store.Create(ctx, tenant, "Patient", patient()); err != nil {
		t.Fatal(err)
	}
	if err := e.ix.Complete(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	measure := func(f func()) storage.Counts {
		before := c.Counts()
		f()
		after := c.Counts()
		return storage.Counts{Get: after.Get - before.Get, Put: after.Put - before.Put, Head: after.Head - before.Head,
			List: after.List - before.List, Delete: after.Delete - before.Delete}
	}
	for n, want := range map[int]int64{0: 4, 1: 5, 3: 7} {
		var ids []Identifier
		for i := range n {
			ids = append(ids, Identifier{sysA, fmt.Sprintf("cost-%d-%d", n, i)})
		}
		got := measure(func() {
			if _, err := e.store.Create(ctx, tenant, "Patient", patient(ids...)); err != nil {
				t.Fatal(err)
			}
		})
		if got != (storage.Counts{Put: want}) {
			t.Errorf("create with %d identifiers: %+v, want %d PUTs", n, got, want)
		}
	}
	p, _ := e.store.Create(ctx, tenant, "Patient", patient(Identifier{sysA, "u"}))
	got := measure(func() {
		if _, _, err := e.store.Update(ctx, tenant, "Patient", p.ID, withBodyID(patient(Identifier{sysA, "u"}), p.ID), fhirstore.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	})
	if got != (storage.Counts{Get: 1, Put: 5, Delete: 1}) {
		t.Errorf("update with 1 identifier: %+v, want 1 GET + 5 PUTs + 1 DELETE", got)
	}
	got = measure(func() { e.ids(t, tok(t, sysA+"|u")) })
	if got != (storage.Counts{List: 1, Get: 1}) {
		t.Errorf("lookup with one match: %+v, want 1 LIST + 1 GET", got)
	}
	got = measure(func() {
		if _, created, err := e.ix.CreateIfNoneExist(ctx, tenant, "Patient", crit(t, "identifier="+sysA+"|u"), patient(Identifier{sysA, "u"})); err != nil || created {
			t.Fatal(created, err)
		}
	})
	if got != (storage.Counts{List: 1, Get: 1}) {
		t.Errorf("conditional create of an existing resource: %+v, want 1 LIST + 1 GET", got)
	}
	got = measure(func() {
		if _, created, err := e.ix.CreateIfNoneExist(ctx, tenant, "Patient", crit(t, "identifier="+sysA+"|new"), patient(Identifier{sysA, "new"})); err != nil || !created {
			t.Fatal(created, err)
		}
	})
	t.Logf("conditional create of a new resource: %+v", got)
	if got != (storage.Counts{List: 2, Put: 7}) {
		t.Errorf("conditional create of a new resource: %+v, want 2 LISTs + 7 PUTs", got)
	}
}

// TestCrashAtEveryStep fails each storage request of an indexed
// conditional create in turn (as a crash at that step would leave it):
// an acknowledged create is always found, a search never returns a
// resource without the identifier, and after fsck --repair (Verify) a
// retry of the conditional create leaves exactly one resource.
func TestCrashAtEveryStep(t *testing.T) {
	for step := 1; ; step++ {
		base := memstore.New()
		f := storagetest.NewFaulty(base)
		e := newEnv(t, f)
		e.ix.ttl = 30 * time.Millisecond
		ctx := t.Context()
		if _, err := e.store.Create(ctx, tenant, "Patient", patient()); err != nil { // marks the tenant complete
			t.Fatal(err)
		}
		n := 0
		var mu sync.Mutex
		nth := func(string) bool { mu.Lock(); defer mu.Unlock(); n++; return n == step }
		for _, op := range []storage.Op{storage.OpGet, storage.OpPut, storage.OpHead, storage.OpList, storage.OpDelete} {
			f.Add(storagetest.Fault{Op: op, Match: nth, Err: storage.ErrUnavailable})
		}
		c := crit(t, "identifier="+sysA+"|crash")
		body := patient(Identifier{sysA, "crash"})
		res, _, err := e.ix.CreateIfNoneExist(ctx, tenant, "Patient", c, body)
		mu.Lock()
		fired := n >= step
		mu.Unlock()
		f.Reset()
		if err == nil {
			if got := e.ids(t, c); !same(got, []string{res.ID}) {
				t.Fatalf("step %d: acknowledged %s, search finds %v", step, res.ID, got)
			}
		}
		if _, err := e.store.Verify(ctx, tenant, true); err != nil {
			t.Fatalf("step %d: repair: %v", step, err)
		}
		// A later request after the claim expired.
		time.Sleep(50 * time.Millisecond)
		again, _, err := e.ix.CreateIfNoneExist(ctx, tenant, "Patient", c, body)
		if err != nil {
			t.Fatalf("step %d: retry: %v", step, err)
		}
		got := e.ids(t, c)
		if !same(got, []string{again.ID}) {
			t.Fatalf("step %d: after the retry search finds %v, want [%s]", step, got, again.ID)
		}
		page, err := e.store.List(ctx, tenant, "Patient", fhirstore.ListQuery{Count: 100})
		if err != nil {
			t.Fatal(err)
		}
		matching := 0
		for _, r := range page.Resources {
			if c.Match(r.Content) {
				matching++
			}
		}
		if matching != 1 {
			t.Fatalf("step %d: %d resources carry the identifier, want 1", step, matching)
		}
		if !fired {
			t.Logf("a conditional create makes %d storage requests; each one failed in turn", step-1)
			return
		}
	}
}

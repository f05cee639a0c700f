// Package leasetest holds the lease conformance suite (Run), which states
// the guarantees of package lease as executable checks against any
// storage.Bucket, and Clock, the fake clock the suite and the packages
// built on lease use to move time without sleeping.
//
// Every case counts its storage requests with storage.Counter, so the
// cost of each operation stated in docs/leases.md is checked on every
// backend.
package leasetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"fhirbucket/lease"
	"fhirbucket/storage"
	"fhirbucket/storage/storagetest"
)

// Start is the fake time every case begins at.
var Start = time.Date(2026, 1, 2, 3, 4, 5, 678_000_000, time.UTC)

// The lease timings of the suite; the fake clock makes their size
// irrelevant to the run time.
const (
	TTL  = 30 * time.Second
	Skew = 5 * time.Second
	tick = TTL / 3
)

// Run runs the lease conformance suite. Each call of newBucket must return
// a fresh, empty namespace.
func Run(t *testing.T, newBucket func(t *testing.T) storage.Bucket) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, e *env)
	}{
		{"create-race", testCreateRace},
		{"create-exists", testCreateExists},
		{"read", testRead},
		{"document-format", testDocumentFormat},
		{"state-round-trip", testStateRoundTrip},
		{"invalid-state", testInvalidState},
		{"corrupt", testCorrupt},
		{"renew-by-holder", testRenewByHolder},
		{"not-holder", testNotHolder},
		{"takeover-before-expiry", testTakeOverBeforeExpiry},
		{"takeover-after-expiry", testTakeOverAfterExpiry},
		{"fencing", testFencing},
		{"takeover-race", testTakeOverRace},
		{"update", testUpdate},
		{"release", testRelease},
		{"unknown-outcome", testUnknownOutcome},
		{"scan", testScan},
		{"keep-renews", testKeepRenews},
		{"keep-update", testKeepUpdate},
		{"keep-loss", testKeepLoss},
		{"keep-release", testKeepRelease},
		{"keep-store-down", testKeepStoreDown},
		{"keep-paused", testKeepPaused},
		{"keep-lost-response", testKeepLostResponse},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := storagetest.NewFaulty(newBucket(t))
			e := &env{t: t, faulty: f, counter: storage.NewCounter(f), clock: NewClock(Start)}
			tc.fn(t, e)
		})
	}
}

// env is one case's bucket (counted, over a fault injector) and clock.
type env struct {
	t       *testing.T
	faulty  *storagetest.Faulty
	counter *storage.Counter
	clock   *Clock
}

// manager returns a Manager for owner on the case's bucket and clock.
func (e *env) manager(owner string) *lease.Manager {
	return e.managerAt(owner, e.clock)
}

func (e *env) managerAt(owner string, c lease.Clock) *lease.Manager {
	e.t.Helper()
	m, err := lease.New(lease.Config{Bucket: e.counter, Owner: owner, TTL: TTL, Skew: Skew, Clock: c})
	if err != nil {
		e.t.Fatalf("lease.New: %v", err)
	}
	return m
}

// cost returns the requests f made.
func (e *env) cost(f func()) storage.Counts {
	before := e.counter.Counts()
	f()
	return e.counter.Counts().Sub(before)
}

// wantCost fails unless f made exactly want.
func (e *env) wantCost(what string, want storage.Counts, f func()) {
	e.t.Helper()
	if got := e.cost(f); got != want {
		e.t.Errorf("%s cost %+v, want %+v", what, got, want)
	}
}

var (
	onePut = storage.Counts{Put: 1}
	oneGet = storage.Counts{Get: 1}
	none   = storage.Counts{}
)

func (e *env) create(m *lease.Manager, key, state string) lease.Doc {
	e.t.Helper()
	d, err := m.Create(e.t.Context(), key, json.RawMessage(state))
	if err != nil {
		e.t.Fatalf("Create(%q): %v", key, err)
	}
	return d
}

func (e *env) read(m *lease.Manager, key string) lease.Doc {
	e.t.Helper()
	d, err := m.Read(e.t.Context(), key)
	if err != nil {
		e.t.Fatalf("Read(%q): %v", key, err)
	}
	return d
}

// raw is the stored object's body.
func (e *env) raw(key string) string {
	e.t.Helper()
	data, _, err := storage.ReadAll(e.t.Context(), e.faulty.Inner(), key)
	if err != nil {
		e.t.Fatalf("reading %q: %v", key, err)
	}
	return string(data)
}

// waitTimers waits for the code under test to arm n timers of the clock.
func (e *env) waitTimers(c *Clock, n int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 30*time.Second)
	defer cancel()
	if err := c.WaitTimers(ctx, n); err != nil {
		e.t.Fatalf("waiting for %d armed timers (have %d): %v", n, c.Timers(), err)
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
}

// wantLease fails unless d's lease is owner's with token, expiring at exp.
func wantLease(t *testing.T, what string, d lease.Doc, owner string, token int64, exp time.Time) {
	t.Helper()
	if d.Lease.Owner != owner || d.Lease.Token != token || !d.Lease.Expires.Equal(exp) {
		t.Fatalf("%s: lease %+v, want owner %q token %d expiring %v", what, d.Lease, owner, token, exp)
	}
}

// wantDoc fails unless the document read from the store equals d.
func (e *env) wantDoc(what string, m *lease.Manager, d lease.Doc) {
	e.t.Helper()
	got := e.read(m, d.Key)
	if got.ETag != d.ETag || got.Lease != d.Lease || !bytes.Equal(got.State, d.State) {
		e.t.Fatalf("%s: stored %+v (state %s), want %+v (state %s)", what, got, got.State, d, d.State)
	}
}

// race runs fn in n goroutines released together and returns the results.
func race[T any](n int, fn func(i int) T) []T {
	out := make([]T, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			out[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return out
}

const racers = 16

func testCreateRace(t *testing.T, e *env) {
	results := race(racers, func(i int) error {
		_, err := e.manager(fmt.Sprintf("owner-%02d", i)).Create(t.Context(), "tx/race.json", json.RawMessage(fmt.Sprintf(`{"by":%d}`, i)))
		return err
	})
	winner := -1
	for i, err := range results {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("creates %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		default:
			wantErr(t, fmt.Sprintf("create %d", i), err, lease.ErrExists)
		}
	}
	if winner < 0 {
		t.Fatalf("no create succeeded: %v", results)
	}
	d := e.read(e.manager("reader"), "tx/race.json")
	wantLease(t, "winner", d, fmt.Sprintf("owner-%02d", winner), 1, Start.Add(TTL))
	if want := fmt.Sprintf(`{"by":%d}`, winner); string(d.State) != want {
		t.Fatalf("state %s, want the winner's %s", d.State, want)
	}
	if c := e.counter.Counts(); c.Put != racers {
		t.Errorf("%d creates made %d PUTs, want one each", racers, c.Put)
	}
}

func testCreateExists(t *testing.T, e *env) {
	m := e.manager("a")
	var d lease.Doc
	e.wantCost("Create", onePut, func() { d = e.create(m, "k", `{}`) })
	wantLease(t, "created", d, "a", 1, Start.Add(TTL))
	if d.Key != "k" || d.ETag == "" {
		t.Fatalf("created %+v", d)
	}
	e.wantCost("Create of an existing key", onePut, func() {
		_, err := e.manager("b").Create(t.Context(), "k", nil)
		wantErr(t, "Create of an existing key", err, lease.ErrExists)
		wantErr(t, "Create of an existing key", err, storage.ErrPreconditionFailed)
	})
	e.wantDoc("after the failed create", m, d)
}

func testRead(t *testing.T, e *env) {
	m := e.manager("a")
	e.wantCost("Read of a missing key", oneGet, func() {
		_, err := m.Read(t.Context(), "missing")
		wantErr(t, "Read of a missing key", err, storage.ErrNotExist)
	})
	d := e.create(m, "k", `{"x":1}`)
	e.wantCost("Read", oneGet, func() { e.wantDoc("read", m, d) })
}

func testDocumentFormat(t *testing.T, e *env) {
	m := e.manager(`replica "a"`)
	d := e.create(m, "k", ` {"x": 1} `+"\n")
	want := `{"lease":{"owner":"replica \"a\"","expires":"2026-01-02T03:04:35.678Z","token":1},"state":{"x": 1}}`
	if got := e.raw("k"); got != want {
		t.Fatalf("stored\n%s\nwant\n%s", got, want)
	}
	if _, err := m.Release(t.Context(), d, json.RawMessage(`"done"`)); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if got, want := e.raw("k"), `{"lease":{"token":1},"state":"done"}`; got != want {
		t.Fatalf("released document\n%s\nwant\n%s", got, want)
	}
}

// states are kept byte for byte: numbers never become float64, strings
// are not re-escaped, inner whitespace stays.
var states = []string{
	`{"n":1.50,"big":12345678901234567890,"tiny":1e-400,"huge":1E+400}`,
	`{"html":"<a href=\"x\">&amp;</a>","esc":"\u00e9\u2028\ud83d\ude00","utf8":"é😀"}`,
	"{\n  \"indented\": [1, 2 ,3],\n\t\"empty\": {}\n}",
	`[0.1,-0,1.0e0]`,
	`"just a string"`,
	`12345678901234567890.000000000000000001`,
	`true`,
	`null`,
}

func testStateRoundTrip(t *testing.T, e *env) {
	m := e.manager("a")
	for i, s := range states {
		key := fmt.Sprintf("s/%d", i)
		d := e.create(m, key, s)
		if got := e.read(m, key).State; string(got) != s {
			t.Fatalf("create: state\n%s\nread back as\n%s", s, got)
		}
		next := states[(i+1)%len(states)]
		d, err := m.Update(t.Context(), d, json.RawMessage(next))
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
		if got := e.read(m, key).State; string(got) != next {
			t.Fatalf("update: state\n%s\nread back as\n%s", next, got)
		}
		d, err = m.Renew(t.Context(), d)
		if err != nil {
			t.Fatalf("Renew: %v", err)
		}
		if got := e.read(m, key).State; string(got) != next {
			t.Fatalf("renew: state\n%s\nread back as\n%s", next, got)
		}
		if _, err := m.Release(t.Context(), d, json.RawMessage(s)); err != nil {
			t.Fatalf("Release: %v", err)
		}
		if got := e.read(m, key).State; string(got) != s {
			t.Fatalf("release: state\n%s\nread back as\n%s", s, got)
		}
	}
	// Whitespace around the value is not part of it; an empty state is null.
	e.create(m, "ws", " \t\r\n[1] \n")
	if got := e.read(m, "ws").State; string(got) != "[1]" {
		t.Fatalf("state with surrounding whitespace read back as %q", got)
	}
	e.create(m, "empty", "")
	if got := e.read(m, "empty").State; string(got) != "null" {
		t.Fatalf("empty state read back as %q", got)
	}
}

func testInvalidState(t *testing.T, e *env) {
	m := e.manager("a")
	d := e.create(m, "k", `{}`)
	for _, s := range []string{`{`, `{}{}`, `{} x`, `nul`, `'x'`, "\xff"} {
		e.wantCost(fmt.Sprintf("invalid state %q", s), none, func() {
			_, err := m.Create(t.Context(), "new", json.RawMessage(s))
			wantErr(t, "Create", err, lease.ErrInvalid)
			_, err = m.Update(t.Context(), d, json.RawMessage(s))
			wantErr(t, "Update", err, lease.ErrInvalid)
			_, err = m.Release(t.Context(), d, json.RawMessage(s))
			wantErr(t, "Release", err, lease.ErrInvalid)
		})
	}
	// A document without an ETag would make the change a blind create.
	e.wantCost("changes without an ETag", none, func() {
		noETag := lease.Doc{Key: "absent", Lease: d.Lease, State: d.State}
		_, err := m.Renew(t.Context(), noETag)
		wantErr(t, "Renew without an ETag", err, lease.ErrInvalid)
		_, err = m.TakeOver(t.Context(), lease.Doc{Key: "absent"})
		wantErr(t, "TakeOver without an ETag", err, lease.ErrInvalid)
	})
	e.wantDoc("after invalid writes", m, d)
}

func testCorrupt(t *testing.T, e *env) {
	m := e.manager("a")
	for i, body := range []string{
		``,
		`not json`,
		`{"state":1}`,
		`{"lease":{"owner":"a","expires":"2026-01-02T03:04:05.000Z","token":1}}`,
		`{"lease":{"token":0},"state":1}`,
		`{"lease":{"token":1.5},"state":1}`,
		`{"lease":{"owner":"a","token":1},"state":1}`,
		`{"lease":{"owner":"a","expires":"yesterday","token":1},"state":1}`,
		`{"lease":{"expires":"2026-01-02T03:04:05.000Z","token":1},"state":1}`,
		`{"lease":{"token":1},"state":1,"more":2}`,
		`{"lease":{"token":1},"state":1} {}`,
	} {
		key := fmt.Sprintf("c/%d", i)
		if _, err := e.faulty.Inner().Put(t.Context(), key, strings.NewReader(body), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		d, err := m.Read(t.Context(), key)
		wantErr(t, fmt.Sprintf("Read of %q", body), err, lease.ErrCorrupt)
		if d.Key != key || d.ETag == "" {
			t.Errorf("Read of %q returned %+v, want the key and ETag", body, d)
		}
	}
}

func testRenewByHolder(t *testing.T, e *env) {
	m := e.manager("a")
	d := e.create(m, "k", `{"x":1}`)
	e.clock.Advance(tick)
	var r lease.Doc
	e.wantCost("Renew", onePut, func() {
		var err error
		if r, err = m.Renew(t.Context(), d); err != nil {
			t.Fatalf("Renew: %v", err)
		}
	})
	wantLease(t, "renewed", r, "a", 1, Start.Add(tick+TTL))
	if r.ETag == d.ETag {
		t.Fatalf("renewal kept the ETag %q", r.ETag)
	}
	e.wantDoc("renewed", m, r)
	// Renewal needs no unexpired lease, only an unchanged object.
	e.clock.Advance(10 * TTL)
	r2, err := m.Renew(t.Context(), r)
	if err != nil {
		t.Fatalf("Renew past the expiry of an untouched lease: %v", err)
	}
	wantLease(t, "renewed late", r2, "a", 1, Start.Add(tick+11*TTL))
	// A stale ETag loses, even for the owner.
	_, err = m.Renew(t.Context(), d)
	wantErr(t, "Renew with a stale ETag", err, lease.ErrLost)
	e.wantDoc("after the stale renewal", m, r2)
}

func testNotHolder(t *testing.T, e *env) {
	a, b := e.manager("a"), e.manager("b")
	e.create(a, "k", `{}`)
	d := e.read(b, "k")
	e.clock.Advance(10 * TTL) // expired: still not b's to renew
	e.wantCost("holder operations by a non-holder", none, func() {
		_, err := b.Renew(t.Context(), d)
		wantErr(t, "Renew by a non-holder", err, lease.ErrHeld)
		_, err = b.Update(t.Context(), d, json.RawMessage(`1`))
		wantErr(t, "Update by a non-holder", err, lease.ErrHeld)
		_, err = b.Release(t.Context(), d, json.RawMessage(`1`))
		wantErr(t, "Release by a non-holder", err, lease.ErrHeld)
		_, err = b.Keep(t.Context(), d)
		wantErr(t, "Keep by a non-holder", err, lease.ErrHeld)
	})
	e.wantDoc("after the refused operations", a, d)
}

func testTakeOverBeforeExpiry(t *testing.T, e *env) {
	a, b := e.manager("a"), e.manager("b")
	e.create(a, "k", `{}`)
	d := e.read(b, "k")
	for _, at := range []time.Duration{0, TTL, TTL + Skew} {
		e.clock.Advance(at - e.clock.Now().Sub(Start))
		if s := b.Status(d.Lease); s != lease.Held {
			t.Fatalf("status %v at expiry%+v, want held", s, at-TTL)
		}
		e.wantCost("refused takeover", none, func() {
			_, err := b.TakeOver(t.Context(), d)
			wantErr(t, fmt.Sprintf("TakeOver at expiry%+v", at-TTL), err, lease.ErrHeld)
		})
	}
	e.clock.Advance(time.Millisecond)
	if s := b.Status(d.Lease); s != lease.Expired {
		t.Fatalf("status %v just past expiry+skew, want expired", s)
	}
	if _, err := b.TakeOver(t.Context(), d); err != nil {
		t.Fatalf("TakeOver just past expiry+skew: %v", err)
	}
}

func testTakeOverAfterExpiry(t *testing.T, e *env) {
	a, b := e.manager("a"), e.manager("b")
	e.create(a, "k", `{"plan":[1.0]}`)
	e.clock.Advance(TTL + Skew + time.Second)
	d := e.read(b, "k")
	var tk lease.Doc
	e.wantCost("TakeOver", onePut, func() {
		var err error
		if tk, err = b.TakeOver(t.Context(), d); err != nil {
			t.Fatalf("TakeOver: %v", err)
		}
	})
	wantLease(t, "taken over", tk, "b", 2, e.clock.Now().Add(TTL))
	if string(tk.State) != `{"plan":[1.0]}` {
		t.Fatalf("takeover changed the state to %s", tk.State)
	}
	e.wantDoc("taken over", b, tk)
	// The taker renews without a new token; the next takeover adds one.
	e.clock.Advance(tick)
	r, err := b.Renew(t.Context(), tk)
	if err != nil {
		t.Fatalf("Renew by the taker: %v", err)
	}
	wantLease(t, "renewed by the taker", r, "b", 2, e.clock.Now().Add(TTL))
	e.clock.Advance(TTL + Skew + time.Second)
	tk3, err := a.TakeOver(t.Context(), r)
	if err != nil {
		t.Fatalf("second TakeOver: %v", err)
	}
	wantLease(t, "taken back", tk3, "a", 3, e.clock.Now().Add(TTL))
}

func testFencing(t *testing.T, e *env) {
	a := e.manager("a")
	old := e.create(a, "k", `{"step":1}`)
	// b's clock runs ahead by more than the skew bound: it takes over
	// while a still believes it holds the lease.
	b := e.managerAt("b", NewClock(Start.Add(TTL+Skew+time.Second)))
	tk, err := b.TakeOver(t.Context(), e.read(b, "k"))
	if err != nil {
		t.Fatalf("TakeOver: %v", err)
	}
	e.wantCost("the old holder's writes", storage.Counts{Put: 3}, func() {
		_, err := a.Renew(t.Context(), old)
		wantErr(t, "Renew by the old holder", err, lease.ErrLost)
		wantErr(t, "Renew by the old holder", err, storage.ErrPreconditionFailed)
		_, err = a.Update(t.Context(), old, json.RawMessage(`{"step":2}`))
		wantErr(t, "Update by the old holder", err, lease.ErrLost)
		_, err = a.Release(t.Context(), old, json.RawMessage(`{"step":3}`))
		wantErr(t, "Release by the old holder", err, lease.ErrLost)
	})
	e.wantDoc("after the old holder's writes", b, tk)
	if tk.Lease.Token <= old.Lease.Token {
		t.Fatalf("token %d after takeover, was %d", tk.Lease.Token, old.Lease.Token)
	}
}

func testTakeOverRace(t *testing.T, e *env) {
	e.create(e.manager("dead"), "k", `{}`)
	e.clock.Advance(TTL + Skew + time.Second)
	d := e.read(e.manager("reader"), "k")
	results := race(racers, func(i int) error {
		_, err := e.manager(fmt.Sprintf("taker-%02d", i)).TakeOver(t.Context(), d)
		return err
	})
	winner := -1
	for i, err := range results {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("takeovers %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		default:
			wantErr(t, fmt.Sprintf("takeover %d", i), err, lease.ErrLost)
		}
	}
	if winner < 0 {
		t.Fatalf("no takeover succeeded: %v", results)
	}
	wantLease(t, "after the race", e.read(e.manager("reader"), "k"), fmt.Sprintf("taker-%02d", winner), 2, e.clock.Now().Add(TTL))
}

func testUpdate(t *testing.T, e *env) {
	m := e.manager("a")
	d := e.create(m, "k", `{"step":1}`)
	e.clock.Advance(tick)
	var u lease.Doc
	e.wantCost("Update", onePut, func() {
		var err error
		if u, err = m.Update(t.Context(), d, json.RawMessage(`{"step":2}`)); err != nil {
			t.Fatalf("Update: %v", err)
		}
	})
	wantLease(t, "updated", u, "a", 1, Start.Add(tick+TTL))
	e.wantDoc("updated", m, u)
	_, err := m.Update(t.Context(), d, json.RawMessage(`{"step":3}`))
	wantErr(t, "Update with a stale ETag", err, lease.ErrLost)
	e.wantDoc("after the stale update", m, u)
}

func testRelease(t *testing.T, e *env) {
	a, b := e.manager("a"), e.manager("b")
	d := e.create(a, "k", `{"step":1}`)
	var r lease.Doc
	e.wantCost("Release", onePut, func() {
		var err error
		if r, err = a.Release(t.Context(), d, json.RawMessage(`{"outcome":"committed"}`)); err != nil {
			t.Fatalf("Release: %v", err)
		}
	})
	if !r.Lease.Released() || r.Lease.Token != 1 || !r.Lease.Expires.IsZero() {
		t.Fatalf("released lease %+v, want no owner, no expiry, token 1", r.Lease)
	}
	e.wantDoc("released", a, r)
	if s := b.Status(r.Lease); s != lease.Released {
		t.Fatalf("status %v, want released", s)
	}
	e.wantCost("holder operations on a released document", none, func() {
		_, err := a.Renew(t.Context(), r)
		wantErr(t, "Renew of a released document", err, lease.ErrLost)
		_, err = a.Update(t.Context(), r, nil)
		wantErr(t, "Update of a released document", err, lease.ErrLost)
		_, err = a.Release(t.Context(), r, nil)
		wantErr(t, "Release of a released document", err, lease.ErrLost)
		_, err = a.Keep(t.Context(), r)
		wantErr(t, "Keep of a released document", err, lease.ErrLost)
	})
	_, err := a.Renew(t.Context(), d)
	wantErr(t, "Renew with the ETag from before the release", err, lease.ErrLost)
	// A released lease is free: taking it needs no wait, and the token
	// still grows.
	tk, err := b.TakeOver(t.Context(), r)
	if err != nil {
		t.Fatalf("TakeOver of a released lease: %v", err)
	}
	wantLease(t, "taken after release", tk, "b", 2, Start.Add(TTL))
}

func testUnknownOutcome(t *testing.T, e *env) {
	m := e.manager("a")
	d := e.create(m, "k", `{}`)
	for _, landed := range []bool{false, true} {
		e.faulty.Add(storagetest.Fault{Op: storage.OpPut, Nth: 1, Err: storage.ErrUnavailable, AfterWrite: landed})
		_, err := m.Renew(t.Context(), d)
		wantErr(t, fmt.Sprintf("Renew (landed %v) on an unavailable store", landed), err, lease.ErrUnknown)
		wantErr(t, fmt.Sprintf("Renew (landed %v) on an unavailable store", landed), err, storage.ErrUnavailable)
		if errors.Is(err, lease.ErrLost) {
			t.Fatalf("an unknown outcome reported as lost: %v", err)
		}
		e.faulty.Reset()
		// Re-reading tells: still ours (owner and token) either way,
		// with the ETag of whichever write is stored.
		d = e.read(m, "k")
		wantLease(t, "re-read", d, "a", 1, Start.Add(TTL))
	}
	e.faulty.Add(storagetest.Fault{Op: storage.OpPut, Nth: 1, Err: storage.ErrUnavailable, AfterWrite: true})
	_, err := m.Create(t.Context(), "new", nil)
	wantErr(t, "Create on an unavailable store", err, lease.ErrUnknown)
	e.faulty.Reset()
	if got := e.read(m, "new"); got.Lease.Owner != "a" || got.Lease.Token != 1 {
		t.Fatalf("the create that landed unseen shows %+v", got.Lease)
	}
	// A context that ended before the request was sent is a known outcome.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	e.wantCost("Renew with a cancelled context", none, func() {
		_, err := m.Renew(ctx, d)
		wantErr(t, "Renew with a cancelled context", err, context.Canceled)
		if errors.Is(err, lease.ErrUnknown) {
			t.Fatalf("a request never sent reported as unknown: %v", err)
		}
	})
}

func testScan(t *testing.T, e *env) {
	m := e.manager("scanner")
	old := e.create(e.manager("dead"), "jobs/c", `{"old":true}`)
	e.clock.Advance(TTL + Skew + time.Second)
	held := e.create(e.manager("live"), "jobs/a", `{}`)
	rel, err := m.Release(t.Context(), e.create(m, "jobs/b", `{}`), json.RawMessage(`"done"`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.faulty.Inner().Put(t.Context(), "jobs/d", strings.NewReader("garbage"), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	e.create(m, "other/x", `{}`)
	type seen struct {
		key    string
		status lease.Status
		etag   string
		err    error
	}
	var got []seen
	cost := e.cost(func() {
		for en, err := range m.Scan(t.Context(), "jobs/") {
			got = append(got, seen{en.Key, en.Status, en.ETag, err})
		}
	})
	want := []seen{{"jobs/a", lease.Held, held.ETag, nil}, {"jobs/b", lease.Released, rel.ETag, nil}, {"jobs/c", lease.Expired, old.ETag, nil}}
	if len(got) != 4 {
		t.Fatalf("Scan yielded %+v, want 4 entries", got)
	}
	for i, w := range want {
		if got[i] != w {
			t.Fatalf("Scan entry %d is %+v, want %+v", i, got[i], w)
		}
	}
	if got[3].key != "jobs/d" || !errors.Is(got[3].err, lease.ErrCorrupt) {
		t.Fatalf("Scan entry 3 is %+v, want jobs/d with ErrCorrupt", got[3])
	}
	if want := (storage.Counts{List: 1, Get: 4}); cost != want {
		t.Errorf("Scan of 4 keys cost %+v, want %+v", cost, want)
	}
	e.wantCost("Scan stopped after one entry", storage.Counts{List: 1, Get: 1}, func() {
		for range m.Scan(t.Context(), "jobs/") {
			break
		}
	})
}

// keep starts a Holder and stops it at the end of the test.
func (e *env) keep(m *lease.Manager, d lease.Doc) *lease.Holder {
	e.t.Helper()
	h, err := m.Keep(e.t.Context(), d)
	if err != nil {
		e.t.Fatalf("Keep: %v", err)
	}
	e.t.Cleanup(func() { h.Stop() })
	return h
}

// step advances the clock by d once the holder has armed its timer, and
// waits until it has armed the next one (or ended).
func (e *env) step(h *lease.Holder, d time.Duration) {
	e.t.Helper()
	e.waitTimers(e.clock, 1)
	e.clock.Advance(d)
	ctx, cancel := context.WithTimeout(e.t.Context(), 30*time.Second)
	defer cancel()
	armed := make(chan error, 1)
	go func() { armed <- e.clock.WaitTimers(ctx, 1) }()
	select {
	case err := <-armed:
		if err != nil {
			e.t.Fatalf("the holder armed no timer after the clock moved: %v", err)
		}
	case <-h.Done():
	}
}

func wantDone(t *testing.T, h *lease.Holder) {
	t.Helper()
	select {
	case <-h.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("the holder's loop did not end")
	}
}

func testKeepRenews(t *testing.T, e *env) {
	m := e.manager("a")
	h := e.keep(m, e.create(m, "k", `{"x":1}`))
	const rounds = 6 // twice the TTL
	cost := e.cost(func() {
		for range rounds {
			e.step(h, tick)
		}
	})
	if want := (storage.Counts{Put: rounds}); cost != want {
		t.Errorf("%d renewal ticks cost %+v, want %+v", rounds, cost, want)
	}
	if err := h.Err(); err != nil {
		t.Fatalf("holder: %v", err)
	}
	d := h.Doc()
	wantLease(t, "kept", d, "a", 1, Start.Add(rounds*tick+TTL))
	e.wantDoc("kept", m, d)
	if h.Context().Err() != nil {
		t.Fatal("the holder's context ended while the lease is held")
	}
	_, err := e.manager("b").TakeOver(t.Context(), e.read(m, "k"))
	wantErr(t, "TakeOver of a kept lease", err, lease.ErrHeld)
	if err := h.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	wantDone(t, h)
	if h.Context().Err() == nil {
		t.Fatal("the holder's context survived Stop")
	}
}

func testKeepUpdate(t *testing.T, e *env) {
	m := e.manager("a")
	h := e.keep(m, e.create(m, "k", `{"step":1}`))
	e.waitTimers(e.clock, 1)
	e.clock.Advance(tick / 2)
	u, err := h.Update(h.Context(), json.RawMessage(`{"step":2}`))
	if err != nil {
		t.Fatalf("Update: %v", err)
	}
	wantLease(t, "updated", u, "a", 1, Start.Add(tick/2+TTL))
	// The renewal due at tick comes tick after the update instead, and
	// uses the update's ETag: no false loss.
	e.step(h, tick/2)
	if c := e.cost(func() { e.step(h, tick/2) }); c != onePut {
		t.Errorf("renewal after the update cost %+v", c)
	}
	if err := h.Err(); err != nil {
		t.Fatalf("holder after the update: %v", err)
	}
	d := h.Doc()
	wantLease(t, "renewed after the update", d, "a", 1, Start.Add(3*tick/2+TTL))
	if string(d.State) != `{"step":2}` {
		t.Fatalf("state %s after renewal, want the update's", d.State)
	}
	e.wantDoc("renewed after the update", m, d)
}

func testKeepLoss(t *testing.T, e *env) {
	a := e.manager("a")
	h := e.keep(a, e.create(a, "k", `{}`))
	b := e.managerAt("b", NewClock(Start.Add(TTL+Skew+time.Second)))
	tk, err := b.TakeOver(t.Context(), e.read(b, "k"))
	if err != nil {
		t.Fatalf("TakeOver: %v", err)
	}
	cost := e.cost(func() { e.step(h, tick) })
	wantDone(t, h)
	if want := (storage.Counts{Put: 1, Get: 1}); cost != want {
		t.Errorf("the renewal that found the takeover cost %+v, want %+v", cost, want)
	}
	wantErr(t, "holder after the takeover", h.Err(), lease.ErrLost)
	if !errors.Is(context.Cause(h.Context()), lease.ErrLost) {
		t.Fatalf("context cause %v, want ErrLost", context.Cause(h.Context()))
	}
	got, err := h.Refresh(t.Context())
	wantErr(t, "Refresh after the loss", err, lease.ErrLost)
	if got.Lease != tk.Lease {
		t.Fatalf("Refresh after the loss returned %+v, want the taker's %+v", got.Lease, tk.Lease)
	}
	_, err = h.Update(t.Context(), json.RawMessage(`{"late":true}`))
	wantErr(t, "Update after the loss", err, lease.ErrLost)
	_, err = h.Release(t.Context(), nil)
	wantErr(t, "Release after the loss", err, lease.ErrLost)
	e.wantDoc("after the old holder gave up", b, tk)
}

func testKeepRelease(t *testing.T, e *env) {
	m := e.manager("a")
	h := e.keep(m, e.create(m, "k", `{}`))
	e.step(h, tick)
	var r lease.Doc
	e.wantCost("Holder.Release", onePut, func() {
		var err error
		if r, err = h.Release(h.Context(), json.RawMessage(`"done"`)); err != nil {
			t.Fatalf("Release: %v", err)
		}
	})
	wantDone(t, h)
	if err := h.Err(); err != nil {
		t.Fatalf("holder after release: %v", err)
	}
	if !r.Lease.Released() || r.Lease.Token != 1 {
		t.Fatalf("released %+v", r.Lease)
	}
	e.wantDoc("released", m, r)
}

func testKeepStoreDown(t *testing.T, e *env) {
	m := e.manager("a")
	d := e.create(m, "k", `{}`)
	h := e.keep(m, d)
	e.faulty.Add(storagetest.Fault{Op: storage.OpPut, Err: storage.ErrUnavailable})
	cost := e.cost(func() {
		e.step(h, tick) // fails
		e.step(h, tick) // fails
		if h.Context().Err() != nil {
			t.Fatalf("the holder gave up before its deadline: %v", h.Err())
		}
		e.step(h, TTL-Skew-2*tick) // the deadline
	})
	wantDone(t, h)
	if want := (storage.Counts{Put: 2}); cost != want {
		t.Errorf("renewals on a store that is down cost %+v, want %+v", cost, want)
	}
	wantErr(t, "holder on a store that is down", h.Err(), lease.ErrExpired)
	wantErr(t, "holder on a store that is down", h.Err(), storage.ErrUnavailable)
	e.faulty.Reset()
	// Nobody took it over: re-reading shows the lease still ours.
	got, err := h.Refresh(t.Context())
	if err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	wantLease(t, "refreshed", got, "a", 1, d.Lease.Expires)
}

func testKeepPaused(t *testing.T, e *env) {
	m := e.manager("a")
	h := e.keep(m, e.create(m, "k", `{}`))
	// A process paused past its deadline must not renew and carry on as
	// if nothing happened.
	e.wantCost("waking past the deadline", none, func() { e.step(h, TTL-Skew) })
	wantDone(t, h)
	wantErr(t, "holder woken past its deadline", h.Err(), lease.ErrExpired)
}

func testKeepLostResponse(t *testing.T, e *env) {
	m := e.manager("a")
	h := e.keep(m, e.create(m, "k", `{}`))
	e.faulty.Add(storagetest.Fault{Op: storage.OpPut, Nth: 1, Err: storage.ErrUnavailable, AfterWrite: true})
	// The first renewal lands but its answer is lost; the second finds the
	// object changed, reads it, recognises its own write and goes on.
	cost := e.cost(func() {
		e.step(h, tick)
		e.step(h, tick)
	})
	if want := (storage.Counts{Put: 3, Get: 1}); cost != want {
		t.Errorf("renewals around a lost response cost %+v, want %+v", cost, want)
	}
	if err := h.Err(); err != nil {
		t.Fatalf("holder after a lost response: %v", err)
	}
	d := h.Doc()
	wantLease(t, "renewed after a lost response", d, "a", 1, Start.Add(2*tick+TTL))
	e.wantDoc("renewed after a lost response", m, d)
}

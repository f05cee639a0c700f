package leasetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"fhirbucket/lease"
	"fhirbucket/storage"
	"fhirbucket/storage/storagetest"
)

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

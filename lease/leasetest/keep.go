package leasetest

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"fhirbucket/lease"
	"fhirbucket/storage"
	"fhirbucket/storage/storagetest"
)

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

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

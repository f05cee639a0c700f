// Package jepsen checks, in the manner of Jepsen, that fhirbucket keeps
// its promises when several servers share one bucket and things fail: its
// test starts MinIO and three `fhirbucket serve` processes, runs concurrent
// clients against all of them while it kills servers, restarts MinIO and
// injects S3 faults (package internal/faultproxy), records every operation
// with its invocation and return time, and checks the history for
// linearizability with porcupine against Model.
//
// The model is a versioned resource as package fhirstore implements it.
// A write is two steps in the store: the claim of version N+1 (after which
// a vread of N+1 succeeds) and the move of current.json to N+1 (after which
// a read returns it). A write is therefore recorded as two porcupine
// operations over the same time interval, a claim (KindPut or KindDelete)
// and a completion (KindComplete), so that the checker may place them at
// different points: that is exactly the freedom fhirstore's documentation
// gives a write, and no more. A claimed version can also be completed by
// another writer that meets it (roll-forward): the model lets every write
// that may have met a claim complete it first, as fhirstore does, and
// KindRepair stands for `fhirbucket fsck --repair`.
//
// A write whose outcome the client could not learn (an error, a timeout, a
// killed server) is recorded with an unknown outcome: each half may have
// happened or not. Its own requests to the storage can still land after
// the client gave up, but not indefinitely: the server stops working on a
// request when the client goes away or the server dies, and what it had
// already sent lands within the storage's answer time. The test gives such
// an operation a return time that much later (UnknownWindow) instead of
// never, which keeps the checker's search small; a later effect of the
// write can only come from a roll-forward, which the model attributes to
// the write or repair that performs it.
//
// A transaction Bundle that updates several of the resources is recorded
// as one claim (KindTxPut) and one completion (KindComplete) per entry,
// each checked like a single write's halves, and one commit (KindTxEnd)
// at which every version the transaction wrote becomes visible at once.
// Until then those versions are hidden: reads, vreads and histories skip
// them, but they hold their version numbers, so the next writer of the
// resource builds on top of them and visible version numbers skip the
// version of a transaction that never commits. A transaction that failed
// definitely (409, 412) has no commit; its claims are of unknown outcome,
// since some of its entries may have been written (hidden for good)
// before another one failed. The commit couples the resources a
// transaction touches, so the model's state is that of every resource of
// a partition, and the resources are partitioned by the transactions
// that join them (in the default run: all of them).
//
// Running it: the cluster test needs RUN_MINIO_S3_TESTS=1 and the minio
// binary (as `make test` provides) and takes about a minute.
// FHIRBUCKET_TEST_JEPSEN_LONG=1 runs five minutes with more clients and
// faults; FHIRBUCKET_TEST_JEPSEN_SEED repeats a run's random choices (not
// its timing); FHIRBUCKET_TEST_JEPSEN_CHECK_TIMEOUT bounds the checker;
// FHIRBUCKET_TEST_JEPSEN_DUMP=file writes the history, which
// TestCheckHistory checks again with FHIRBUCKET_TEST_JEPSEN_HISTORY=file.
// When the history is not linearizable the test writes porcupine's
// visualization to a temporary HTML file and prints its path and the
// operations that cannot be placed.
package jepsen

import (
	"fmt"

	"github.com/anishathalye/porcupine"
)

// Kind is the kind of one recorded operation.
type Kind uint8

// The operation kinds.
const (
	// KindRead is GET /{type}/{id}.
	KindRead Kind = iota
	// KindVRead is GET /{type}/{id}/_history/{Version}.
	KindVRead
	// KindHistory is GET /{type}/{id}/_history?_count={Count}, first page.
	KindHistory
	// KindPut is the claim half of PUT /{type}/{id} (IfMatch > 0: with
	// If-Match W/"IfMatch").
	KindPut
	// KindDelete is the claim half of DELETE /{type}/{id}.
	KindDelete
	// KindComplete is the current-pointer half of the write numbered
	// Write (Version: the version it was acknowledged with, 0 if unknown).
	KindComplete
	// KindRepair is `fhirbucket fsck --repair`: it rolls a claimed
	// version forward.
	KindRepair
	// KindTxPut is the claim half of one PUT entry (Write) of transaction
	// Tx (IfMatch > 0: the entry's request.ifMatch): a version that stays
	// hidden until the transaction's KindTxEnd.
	KindTxPut
	// KindTxEnd is the commit of transaction Tx, whose entries are
	// Entries: every version it claimed becomes visible at once.
	KindTxEnd
)

var kindNames = []string{"read", "vread", "history", "put", "delete", "complete", "repair", "tx-put", "tx-commit"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Input is what a client asked.
type Input struct {
	ID      string // the resource id ("" for KindTxEnd, which names Entries)
	Kind    Kind
	Write   int    // KindPut, KindDelete, KindComplete, KindTxPut: the write's number, unique in the history
	Marker  string // KindPut, KindTxPut: the content marker the new version carries
	IfMatch int    // KindPut, KindTxPut: 0 = unconditional, else the version named by If-Match
	Version int    // KindVRead: the version asked for; KindComplete: the version acknowledged
	Count   int    // KindHistory: the page size asked for
	Tx      int    // KindTxPut, KindTxEnd: the transaction's number, unique in the history
	// Entries are the writes of transaction Tx (KindTxEnd).
	Entries []TxEntry
}

// TxEntry is one write of a transaction: resource and write number.
type TxEntry struct {
	ID    string
	Write int
}

// Output is what the client got.
type Output struct {
	// Unknown: the client got no definite answer (transport error,
	// timeout, 5xx): the operation may or may not have taken effect.
	Unknown bool
	// Status is the HTTP status (of the entry, for KindTxPut; 0 for a
	// KindTxPut whose claim of Version was learnt from the bucket).
	Status int
	// Version is the version the answer names (its ETag; 0 when none:
	// 404, or a delete that found nothing to delete).
	Version int
	// Marker is the content marker of a 200 read, vread or write.
	Marker string
	// Entries is the first history page, newest first.
	Entries []Entry
}

// Entry is one version in a history page.
type Entry struct {
	Version int
	Deleted bool
	Marker  string // "" for a deletion, whose entry carries no resource
}

// version is one version in a resource's log.
type version struct {
	write   int // the write that claimed it
	marker  string
	deleted bool
	tx      int  // the transaction that wrote it; 0: a single write
	hidden  bool // a transaction's version before its commit (for good if it never commits)
}

// node is one element of a log, newest first. Logs are persistent: a
// new version or a commit makes new nodes on top and shares the rest, so
// the states the checker keeps cost little.
type node struct {
	v    version
	prev *node
}

// resState is the model state of one resource: the claimed versions
// (numbered densely from 1, hidden ones included) and the version
// current.json points at. At most one version is claimed beyond current
// (n <= cur+1): the store's invariant I2.
type resState struct {
	cur int
	n   int   // versions claimed
	log *node // version n first
}

// at returns version v (1 <= v <= n).
func (r resState) at(v int) version {
	nd := r.log
	for i := r.n; i > v; i-- {
		nd = nd.prev
	}
	return nd.v
}

// pending reports a claimed version beyond current.
func (r resState) pending() bool { return r.n > r.cur }

// rolled is r with the claimed version made current (roll-forward).
func (r resState) rolled() resState { return resState{cur: r.n, n: r.n, log: r.log} }

// before are the states a write may start from: r, and r rolled forward
// when the write may have met a claim and completed it.
func (r resState) before() []resState {
	if r.pending() {
		return []resState{r, r.rolled()}
	}
	return []resState{r}
}

// settled is the state a write that claims starts from: it can only have
// claimed after completing the claim it met.
func (r resState) settled() resState {
	if r.pending() {
		return r.rolled()
	}
	return r
}

// claim returns r with v claimed as the next version.
func (r resState) claim(v version) resState {
	return resState{cur: r.cur, n: r.n + 1, log: &node{v: v, prev: r.log}}
}

// visible returns what readers see: the newest version at or below
// current that is not hidden (ok false: none).
func (r resState) visible() (int, version, bool) {
	nd := r.log
	for i := r.n; i > r.cur; i-- {
		nd = nd.prev
	}
	for v := r.cur; v >= 1; v-- {
		if !nd.v.hidden {
			return v, nd.v, true
		}
		nd = nd.prev
	}
	return 0, version{}, false
}

// matches reports whether If-Match W/"ifMatch" holds (0: no If-Match):
// it names the visible version (a tombstone's too).
func (r resState) matches(ifMatch int) bool {
	if ifMatch == 0 {
		return true
	}
	v, _, ok := r.visible()
	return ok && v == ifMatch
}

func equalRes(a, b resState) bool {
	if a.cur != b.cur || a.n != b.n {
		return false
	}
	for x, y := a.log, b.log; x != y; x, y = x.prev, y.prev {
		if x == nil || y == nil || x.v != y.v {
			return false
		}
	}
	return true
}

// step returns every state the partition can be in after in answered out
// in state s; none when the answer is impossible.
func step(s State, in Input, out Output) []State {
	if in.Kind == KindTxEnd {
		return stepCommit(s, in, out)
	}
	next := stepResource(s.get(in.ID), in, out)
	states := make([]State, len(next))
	for i, r := range next {
		states[i] = s.with(in.ID, r)
	}
	return states
}

// commit makes the versions of the transaction visible: each must be
// the newest and current version of its resource (the transaction moved
// every current.json before it committed, and no writer builds on a
// version of an open transaction) and still hidden.
func commit(s State, in Input) (State, bool) {
	for _, e := range in.Entries {
		r := s.get(e.ID)
		if r.n == 0 || r.cur != r.n || r.log.v.write != e.Write || r.log.v.tx != in.Tx || !r.log.v.hidden {
			return s, false
		}
		v := r.log.v
		v.hidden = false
		s = s.with(e.ID, resState{cur: r.cur, n: r.n, log: &node{v: v, prev: r.log.prev}})
	}
	return s, true
}

func stepCommit(s State, in Input, out Output) []State {
	c, ok := commit(s, in)
	switch {
	case out.Unknown && ok:
		return []State{s, c}
	case out.Unknown:
		return []State{s}
	case ok && out.Status == 200:
		return []State{c}
	}
	return nil
}

// stepResource is step for an operation on one resource.
func stepResource(s resState, in Input, out Output) []resState {
	if out.Unknown && (in.Kind == KindRead || in.Kind == KindVRead || in.Kind == KindHistory) {
		return []resState{s} // a read without an answer changed nothing
	}
	ok := func(b bool) []resState {
		if b {
			return []resState{s}
		}
		return nil
	}
	switch in.Kind {
	case KindRead:
		v, top, exists := s.visible()
		switch out.Status {
		case 404:
			return ok(!exists)
		case 410:
			return ok(exists && top.deleted && out.Version == v)
		case 200:
			return ok(exists && !top.deleted && out.Version == v && out.Marker == top.marker)
		}
		return nil
	case KindVRead:
		v := in.Version
		if v > s.n || s.at(v).hidden {
			return ok(out.Status == 404)
		}
		at := s.at(v)
		switch out.Status {
		case 410:
			return ok(at.deleted && out.Version == v)
		case 200:
			return ok(!at.deleted && out.Version == v && out.Marker == at.marker)
		}
		return nil
	case KindHistory:
		_, _, exists := s.visible()
		switch out.Status {
		case 404:
			return ok(!exists)
		case 200:
			// The page covers the Count version numbers from current
			// down (below current when current is hidden) and lists the
			// visible ones.
			if !exists {
				return nil
			}
			hi := s.cur
			if s.at(s.cur).hidden {
				hi--
			}
			lo := max(1, hi-in.Count+1)
			i := 0
			nd := s.log
			for v := s.n; v >= lo; v-- {
				if v <= hi && !nd.v.hidden {
					if i >= len(out.Entries) {
						return nil
					}
					e := out.Entries[i]
					if e.Version != v || e.Deleted != nd.v.deleted || (!e.Deleted && e.Marker != nd.v.marker) {
						return nil
					}
					i++
				}
				nd = nd.prev
			}
			return ok(i == len(out.Entries))
		}
		return nil
	case KindPut, KindTxPut:
		// The claim of N+1 needs N current (nothing claimed beyond it) and
		// the If-Match, when given, naming the visible version.
		allowed := func(p resState) bool { return !p.pending() && p.matches(in.IfMatch) }
		claim := func(p resState) resState {
			return p.claim(version{write: in.Write, marker: in.Marker, tx: in.Tx, hidden: in.Kind == KindTxPut})
		}
		if out.Unknown {
			var next []resState
			for _, p := range s.before() {
				next = append(next, p)
				if allowed(p) {
					next = append(next, claim(p))
				}
			}
			return next
		}
		switch out.Status {
		case 0:
			// A transaction's claim of version Version, learnt from the
			// bucket after the run (its client got no such answer).
			if in.Kind == KindTxPut && allowed(s) && out.Version == s.n+1 {
				return []resState{claim(s)}
			}
			return nil
		case 200, 201:
			// 201 exactly when no version was visible: update-as-create;
			// a PUT on a tombstone restores it with 200. A single write
			// completes a claim it meets first; a transaction's write
			// fails then (its plan read the version before the claim).
			p := s
			if in.Kind == KindPut {
				p = s.settled()
			}
			_, _, exists := p.visible()
			if allowed(p) && out.Version == p.n+1 && (out.Status == 201) == !exists &&
				(out.Marker == "" || out.Marker == in.Marker) {
				return []resState{claim(p)}
			}
			return nil
		case 412:
			// Either the If-Match did not name the visible version, or it
			// did, the claim met another one, which the write rolled
			// forward.
			var next []resState
			for _, p := range s.before() {
				if in.IfMatch > 0 && !p.matches(in.IfMatch) {
					next = append(next, p)
				}
			}
			return next
		case 409:
			return s.before() // a conflict claims nothing
		}
		return nil
	case KindDelete:
		nothing := func(p resState) bool {
			_, top, exists := p.visible()
			return !exists || top.deleted
		}
		tombstone := func(p resState) resState {
			_, top, _ := p.visible()
			return p.claim(version{write: in.Write, marker: top.marker, deleted: true})
		}
		if out.Unknown {
			var next []resState
			for _, p := range s.before() {
				next = append(next, p)
				if !nothing(p) && !p.pending() {
					next = append(next, tombstone(p))
				}
			}
			return next
		}
		switch out.Status {
		case 200, 204:
			if out.Version == 0 {
				// Nothing to delete, possibly after completing a claim
				// (a deletion) the first attempt met.
				var next []resState
				for _, p := range s.before() {
					if nothing(p) {
						next = append(next, p)
					}
				}
				return next
			}
			p := s.settled()
			if !nothing(p) && out.Version == p.n+1 {
				return []resState{tombstone(p)}
			}
			return nil
		case 409:
			return s.before()
		}
		return nil
	case KindComplete:
		mine := s.n == s.cur+1 && s.log.v.write == in.Write
		moved := s.rolled()
		if out.Unknown {
			if mine {
				return []resState{s, moved}
			}
			return []resState{s}
		}
		if mine {
			return []resState{moved}
		}
		// Someone else already completed it (a roll-forward).
		v := in.Version
		return ok(v > 0 && v <= s.cur && s.at(v).write == in.Write)
	case KindRepair:
		return []resState{s.settled()}
	}
	return nil
}

// Model is the porcupine model of a set of versioned resources,
// partitioned by the transactions that join them.
func Model() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Partition: partition,
		Init:      func() []any { return []any{State{}} },
		Step: func(state, input, output any) []any {
			next := step(state.(State), input.(Input), output.(Output))
			out := make([]any, len(next))
			for i, s := range next {
				out[i] = s
			}
			return out
		},
		Equal: func(a, b any) bool { return equalState(a.(State), b.(State)) },
		Hash:  func(s any) uint64 { return hashState(s.(State)) },
		DescribeOperation: func(input, output any) string {
			return Describe(input.(Input), output.(Output))
		},
		DescribeState: func(state any) string { return DescribeState(state.(State)) },
	}
	return nm.ToModel()
}

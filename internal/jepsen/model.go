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
// Running it: the cluster test needs RUN_MINIO_S3_TESTS=1 and the minio
// binary (as `make test` provides) and takes about a minute.
// FHIRBUCKET_TEST_JEPSEN_LONG=1 runs five minutes with more clients and
// faults; FHIRBUCKET_TEST_JEPSEN_SEED repeats a run's random choices (not
// its timing); FHIRBUCKET_TEST_JEPSEN_CHECK_TIMEOUT bounds the checker.
// When the history is not linearizable the test writes porcupine's
// visualization to a temporary HTML file and prints its path and the
// operations that cannot be placed.
package jepsen

import (
	"fmt"
	"strings"

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
)

var kindNames = []string{"read", "vread", "history", "put", "delete", "complete", "repair"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Input is what a client asked.
type Input struct {
	ID      string // the resource id: the partition
	Kind    Kind
	Write   int    // KindPut, KindDelete, KindComplete: the write's number, unique in the history
	Marker  string // KindPut: the content marker the new version carries
	IfMatch int    // KindPut: 0 = unconditional, else the version named by If-Match
	Version int    // KindVRead: the version asked for; KindComplete: the version acknowledged
	Count   int    // KindHistory: the page size asked for
}

// Output is what the client got.
type Output struct {
	// Unknown: the client got no definite answer (transport error,
	// timeout, 5xx): the operation may or may not have taken effect.
	Unknown bool
	// Status is the HTTP status.
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

// version is one version in the model's log.
type version struct {
	write   int // the write that claimed it
	marker  string
	deleted bool
}

// State is the model state of one resource: the claimed versions (dense
// from 1) and the version current.json points at. At most one version is
// claimed beyond current (len(log) <= cur+1): the store's invariant I2.
type State struct {
	cur int
	log []version
}

func (s State) top() version { return s.log[s.cur-1] }

// pending reports a claimed version beyond current.
func (s State) pending() bool { return len(s.log) > s.cur }

// rolled is s with the claimed version made current (roll-forward).
func (s State) rolled() State { return State{cur: len(s.log), log: s.log} }

// before are the states a write may start from: s, and s rolled forward
// when the write may have met a claim and completed it.
func (s State) before() []State {
	if s.pending() {
		return []State{s, s.rolled()}
	}
	return []State{s}
}

// settled is the state a write that claims starts from: it can only have
// claimed after completing the claim it met.
func (s State) settled() State {
	if s.pending() {
		return s.rolled()
	}
	return s
}

// claim returns s with a version claimed by write w (s is not modified).
func (s State) claim(w int, marker string, deleted bool) State {
	log := make([]version, len(s.log), len(s.log)+1)
	copy(log, s.log)
	return State{cur: s.cur, log: append(log, version{write: w, marker: marker, deleted: deleted})}
}

func equalState(a, b State) bool {
	if a.cur != b.cur || len(a.log) != len(b.log) {
		return false
	}
	for i := range a.log {
		if a.log[i] != b.log[i] {
			return false
		}
	}
	return true
}

// step returns every state the resource can be in after in answered out
// in state s; none when the answer is impossible.
func step(s State, in Input, out Output) []State {
	if out.Unknown && (in.Kind == KindRead || in.Kind == KindVRead || in.Kind == KindHistory) {
		return []State{s} // a read without an answer changed nothing
	}
	ok := func(b bool) []State {
		if b {
			return []State{s}
		}
		return nil
	}
	switch in.Kind {
	case KindRead:
		switch out.Status {
		case 404:
			return ok(s.cur == 0)
		case 410:
			return ok(s.cur > 0 && s.top().deleted && out.Version == s.cur)
		case 200:
			return ok(s.cur > 0 && !s.top().deleted && out.Version == s.cur && out.Marker == s.top().marker)
		}
		return nil
	case KindVRead:
		v := in.Version
		switch out.Status {
		case 404:
			return ok(v > len(s.log))
		case 410:
			return ok(v <= len(s.log) && s.log[v-1].deleted && out.Version == v)
		case 200:
			return ok(v <= len(s.log) && !s.log[v-1].deleted && out.Version == v && out.Marker == s.log[v-1].marker)
		}
		return nil
	case KindHistory:
		switch out.Status {
		case 404:
			return ok(s.cur == 0)
		case 200:
			if s.cur == 0 || len(out.Entries) != min(in.Count, s.cur) {
				return nil
			}
			for i, e := range out.Entries {
				want := s.log[s.cur-1-i]
				if e.Version != s.cur-i || e.Deleted != want.deleted || (!e.Deleted && e.Marker != want.marker) {
					return nil
				}
			}
			return []State{s}
		}
		return nil
	case KindPut:
		// The claim of N+1 needs N current (nothing claimed beyond it) and
		// the If-Match, when given, naming N.
		allowed := func(p State) bool {
			return !p.pending() && (in.IfMatch == 0 || (p.cur > 0 && in.IfMatch == p.cur))
		}
		if out.Unknown {
			var next []State
			for _, p := range s.before() {
				next = append(next, p)
				if allowed(p) {
					next = append(next, p.claim(in.Write, in.Marker, false))
				}
			}
			return next
		}
		switch out.Status {
		case 200, 201:
			// 201 exactly when there was no resource: update-as-create;
			// a PUT on a tombstone restores it with 200.
			p := s.settled()
			if allowed(p) && out.Version == p.cur+1 && (out.Status == 201) == (p.cur == 0) &&
				(out.Marker == "" || out.Marker == in.Marker) {
				return []State{p.claim(in.Write, in.Marker, false)}
			}
			return nil
		case 412:
			// Either the If-Match did not name current, or it did, the
			// claim met another one, which the write rolled forward.
			var next []State
			for _, p := range s.before() {
				if in.IfMatch > 0 && (p.cur == 0 || in.IfMatch != p.cur) {
					next = append(next, p)
				}
			}
			return next
		case 409:
			return s.before() // a conflict claims nothing
		}
		return nil
	case KindDelete:
		nothing := func(p State) bool { return p.cur == 0 || p.top().deleted }
		if out.Unknown {
			var next []State
			for _, p := range s.before() {
				next = append(next, p)
				if !nothing(p) && !p.pending() {
					next = append(next, p.claim(in.Write, p.top().marker, true))
				}
			}
			return next
		}
		switch out.Status {
		case 200, 204:
			if out.Version == 0 {
				// Nothing to delete, possibly after completing a claim
				// (a deletion) the first attempt met.
				var next []State
				for _, p := range s.before() {
					if nothing(p) {
						next = append(next, p)
					}
				}
				return next
			}
			p := s.settled()
			if !nothing(p) && out.Version == p.cur+1 {
				return []State{p.claim(in.Write, p.top().marker, true)}
			}
			return nil
		case 409:
			return s.before()
		}
		return nil
	case KindComplete:
		mine := len(s.log) == s.cur+1 && s.log[s.cur].write == in.Write
		moved := s.rolled()
		if out.Unknown {
			if mine {
				return []State{s, moved}
			}
			return []State{s}
		}
		if mine {
			return []State{moved}
		}
		// Someone else already completed it (a roll-forward).
		v := in.Version
		return ok(v > 0 && v <= s.cur && s.log[v-1].write == in.Write)
	case KindRepair:
		return []State{s.settled()}
	}
	return nil
}

// Model is the porcupine model of a set of versioned resources,
// partitioned by resource id.
func Model() porcupine.Model {
	nm := porcupine.NondeterministicModel{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byID := map[string][]porcupine.Operation{}
			var ids []string
			for _, op := range history {
				id := op.Input.(Input).ID
				if _, seen := byID[id]; !seen {
					ids = append(ids, id)
				}
				byID[id] = append(byID[id], op)
			}
			out := make([][]porcupine.Operation, 0, len(ids))
			for _, id := range ids {
				out = append(out, byID[id])
			}
			return out
		},
		Init: func() []any { return []any{State{}} },
		Step: func(state, input, output any) []any {
			next := step(state.(State), input.(Input), output.(Output))
			out := make([]any, len(next))
			for i, s := range next {
				out[i] = s
			}
			return out
		},
		Equal: func(a, b any) bool { return equalState(a.(State), b.(State)) },
		DescribeOperation: func(input, output any) string {
			return Describe(input.(Input), output.(Output))
		},
		DescribeState: func(state any) string { return DescribeState(state.(State)) },
	}
	return nm.ToModel()
}

// Describe renders one operation for reports and the visualization.
func Describe(in Input, out Output) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", in.ID, in.Kind)
	switch in.Kind {
	case KindVRead:
		fmt.Fprintf(&b, "(v%d)", in.Version)
	case KindHistory:
		fmt.Fprintf(&b, "(_count=%d)", in.Count)
	case KindPut:
		fmt.Fprintf(&b, "(w%d %s", in.Write, in.Marker)
		if in.IfMatch > 0 {
			fmt.Fprintf(&b, ` If-Match W/"%d"`, in.IfMatch)
		}
		b.WriteString(")")
	case KindDelete:
		fmt.Fprintf(&b, "(w%d)", in.Write)
	case KindComplete:
		fmt.Fprintf(&b, "(w%d", in.Write)
		if in.Version > 0 {
			fmt.Fprintf(&b, " v%d", in.Version)
		}
		b.WriteString(")")
	}
	b.WriteString(" -> ")
	if out.Unknown {
		b.WriteString("unknown")
		return b.String()
	}
	fmt.Fprintf(&b, "%d", out.Status)
	if out.Version > 0 {
		fmt.Fprintf(&b, " v%d", out.Version)
	}
	if out.Marker != "" {
		fmt.Fprintf(&b, " %s", out.Marker)
	}
	if len(out.Entries) > 0 {
		parts := make([]string, len(out.Entries))
		for i, e := range out.Entries {
			parts[i] = fmt.Sprintf("v%d:%s", e.Version, entryText(e.Marker, e.Deleted))
		}
		fmt.Fprintf(&b, " [%s]", strings.Join(parts, " "))
	}
	return b.String()
}

// DescribeState renders a state: the versions, current marked with "*",
// a claimed version beyond current with "?".
func DescribeState(s State) string {
	if len(s.log) == 0 {
		return "(none)"
	}
	parts := make([]string, len(s.log))
	for i, v := range s.log {
		mark := ""
		switch {
		case i+1 == s.cur:
			mark = "*"
		case i+1 > s.cur:
			mark = "?"
		}
		parts[i] = fmt.Sprintf("v%d%s:%s(w%d)", i+1, mark, entryText(v.marker, v.deleted), v.write)
	}
	return strings.Join(parts, " ")
}

func entryText(marker string, deleted bool) string {
	if deleted {
		return "deleted"
	}
	return marker
}

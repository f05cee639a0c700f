package jepsen

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// hist builds porcupine histories for the model tests.
type hist struct{ ops []porcupine.Operation }

func (h *hist) op(call, ret int64, in Input, out Output) *hist {
	if out.Unknown && ret == 0 {
		ret = math.MaxInt64
	}
	h.ops = append(h.ops, porcupine.Operation{ClientId: len(h.ops), Input: in, Call: call, Output: out, Return: ret})
	return h
}

// write records both halves of a write, as the cluster test does (ret 0
// for an unknown outcome: it may take effect at any later time): the
// pointer half is known to have happened for a 2xx that names a version,
// unknown when the claim is, and absent when nothing was written.
func (h *hist) write(call, ret int64, in Input, out Output) *hist {
	h.op(call, ret, in, out)
	switch {
	case out.Unknown:
		h.op(call, ret, Input{ID: in.ID, Kind: KindComplete, Write: in.Write}, Output{Unknown: true})
	case out.Version > 0 && (out.Status == 200 || out.Status == 201 || out.Status == 204):
		h.op(call, ret, Input{ID: in.ID, Kind: KindComplete, Write: in.Write, Version: out.Version}, Output{Status: 200})
	}
	return h
}

func put(w int, marker string, ifMatch int) Input {
	return Input{ID: "a", Kind: KindPut, Write: w, Marker: marker, IfMatch: ifMatch}
}
func del(w int) Input { return Input{ID: "a", Kind: KindDelete, Write: w} }

var (
	read    = Input{ID: "a", Kind: KindRead}
	unknown = Output{Unknown: true}
)

func vread(v int) Input { return Input{ID: "a", Kind: KindVRead, Version: v} }

// TestModel checks the model on small histories whose verdict is known,
// including the anomalies the cluster test hunts for (lost and duplicated
// writes, stale reads, a 412 for a write that happened).
func TestModel(t *testing.T) {
	tests := []struct {
		name string
		h    *hist
		want bool
	}{
		{"create then read", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			op(20, 30, read, Output{Status: 200, Version: 1, Marker: "m1"}), true},
		{"read misses an acknowledged create", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			op(20, 30, read, Output{Status: 404}), false},
		{"read sees another marker", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			op(20, 30, read, Output{Status: 200, Version: 1, Marker: "m2"}), false},
		{"update on a missing resource answers 200", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 200, Version: 1, Marker: "m1"}), false},
		{"vread sees a claim before read sees the pointer", new(hist).
			write(0, 100, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			op(10, 20, vread(1), Output{Status: 200, Version: 1, Marker: "m1"}).
			op(30, 40, read, Output{Status: 404}), true},
		{"read goes back after the write returned", new(hist).
			write(0, 100, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			op(110, 120, vread(1), Output{Status: 200, Version: 1, Marker: "m1"}).
			op(130, 140, read, Output{Status: 404}), false},
		{"two writes acknowledged with one version", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			write(5, 30, put(2, "m2", 0), Output{Status: 201, Version: 1, Marker: "m2"}), false},
		{"concurrent writes take consecutive versions", new(hist).
			write(0, 30, put(1, "m1", 0), Output{Status: 200, Version: 2, Marker: "m1"}).
			write(5, 30, put(2, "m2", 0), Output{Status: 201, Version: 1, Marker: "m2"}).
			op(40, 50, vread(1), Output{Status: 200, Version: 1, Marker: "m2"}), true},
		{"one write stored twice", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			write(20, 30, put(2, "m2", 0), Output{Status: 200, Version: 3, Marker: "m2"}).
			op(40, 50, vread(2), Output{Status: 200, Version: 2, Marker: "m2"}), false},
		{"unknown write that landed", new(hist).
			write(0, 0, put(1, "m1", 0), unknown).
			op(20, 30, read, Output{Status: 404}).
			op(40, 50, read, Output{Status: 200, Version: 1, Marker: "m1"}), true},
		{"unknown write seen, then unseen", new(hist).
			write(0, 0, put(1, "m1", 0), unknown).
			op(20, 30, read, Output{Status: 200, Version: 1, Marker: "m1"}).
			op(40, 50, read, Output{Status: 404}), false},
		{"crashed claim rolled forward by the next writer", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			write(20, 30, put(2, "m2", 0), unknown).
			op(40, 50, vread(2), Output{Status: 200, Version: 2, Marker: "m2"}).
			op(60, 70, read, Output{Status: 200, Version: 1, Marker: "m1"}).
			write(80, 90, put(3, "m3", 0), Output{Status: 200, Version: 3, Marker: "m3"}).
			op(100, 110, vread(2), Output{Status: 200, Version: 2, Marker: "m2"}), true},
		{"unknown write completed late by its own server", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			write(20, 0, put(2, "m2", 0), unknown).
			op(40, 50, vread(2), Output{Status: 200, Version: 2, Marker: "m2"}).
			op(60, 70, read, Output{Status: 200, Version: 1, Marker: "m1"}).
			op(80, 90, read, Output{Status: 200, Version: 2, Marker: "m2"}), true},
		{"pointer moves after the unknown write's window, without a writer", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			write(20, 55, put(2, "m2", 0), unknown).
			op(40, 50, vread(2), Output{Status: 200, Version: 2, Marker: "m2"}).
			op(60, 70, read, Output{Status: 200, Version: 1, Marker: "m1"}).
			op(80, 90, read, Output{Status: 200, Version: 2, Marker: "m2"}), false},
		{"a 412 rolls forward a claim whose writer died", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			write(20, 25, put(2, "m2", 0), unknown).
			op(40, 50, vread(2), Output{Status: 200, Version: 2, Marker: "m2"}).
			op(60, 70, read, Output{Status: 200, Version: 1, Marker: "m1"}).
			write(80, 90, put(3, "m3", 1), Output{Status: 412}).
			op(100, 110, read, Output{Status: 200, Version: 2, Marker: "m2"}), true},
		{"a read does not roll forward", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			write(20, 25, put(2, "m2", 0), unknown).
			op(40, 50, vread(2), Output{Status: 200, Version: 2, Marker: "m2"}).
			op(60, 70, read, Output{Status: 200, Version: 1, Marker: "m1"}).
			op(80, 90, Input{ID: "a", Kind: KindHistory, Count: 5}, Output{Status: 200, Entries: []Entry{{1, false, "m1"}}}).
			op(100, 110, read, Output{Status: 200, Version: 2, Marker: "m2"}), false},
		{"repair rolls forward", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			write(20, 25, put(2, "m2", 0), unknown).
			op(40, 50, vread(2), Output{Status: 200, Version: 2, Marker: "m2"}).
			op(60, 70, read, Output{Status: 200, Version: 1, Marker: "m1"}).
			op(80, 90, Input{ID: "a", Kind: KindRepair}, Output{Status: 200}).
			op(100, 110, read, Output{Status: 200, Version: 2, Marker: "m2"}), true},
		{"a successful write completed by another writer's roll-forward", new(hist).
			write(0, 100, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			write(10, 50, put(2, "m2", 0), Output{Status: 200, Version: 2, Marker: "m2"}).
			op(60, 70, read, Output{Status: 200, Version: 2, Marker: "m2"}), true},
		{"If-Match on the current version answers 412", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			write(20, 30, put(2, "m2", 1), Output{Status: 412}), false},
		{"If-Match 412 after a crashed claim is rolled forward", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			write(20, 30, put(2, "m2", 0), unknown).
			write(40, 50, put(3, "m3", 1), Output{Status: 412}).
			op(60, 70, read, Output{Status: 200, Version: 2, Marker: "m2"}), true},
		{"a 412 write that happened anyway", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			write(20, 30, put(2, "m2", 1), Output{Status: 412}).
			op(40, 50, vread(2), Output{Status: 200, Version: 2, Marker: "m2"}), false},
		{"a 409 write that happened anyway", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			write(20, 30, put(2, "m2", 0), Output{Status: 409}).
			op(40, 50, vread(2), Output{Status: 200, Version: 2, Marker: "m2"}), false},
		{"delete, tombstone, restore", new(hist).
			write(0, 10, del(1), Output{Status: 204}).
			write(20, 30, put(2, "m2", 0), Output{Status: 201, Version: 1, Marker: "m2"}).
			write(40, 50, del(3), Output{Status: 204, Version: 2}).
			op(60, 70, read, Output{Status: 410, Version: 2}).
			op(60, 70, vread(2), Output{Status: 410, Version: 2}).
			write(80, 90, del(4), Output{Status: 204}).
			op(100, 110, Input{ID: "a", Kind: KindHistory, Count: 5}, Output{Status: 200, Entries: []Entry{{2, true, ""}, {1, false, "m2"}}}).
			write(120, 130, put(5, "m5", 2), Output{Status: 200, Version: 3, Marker: "m5"}).
			op(140, 150, read, Output{Status: 200, Version: 3, Marker: "m5"}), true},
		{"history with a hole", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			write(20, 30, put(2, "m2", 0), Output{Status: 200, Version: 2, Marker: "m2"}).
			op(40, 50, Input{ID: "a", Kind: KindHistory, Count: 5}, Output{Status: 200, Entries: []Entry{{2, false, "m2"}}}), false},
		{"delete of a deleted resource writes a version", new(hist).
			write(0, 10, put(1, "m1", 0), Output{Status: 201, Version: 1, Marker: "m1"}).
			write(20, 30, del(2), Output{Status: 204, Version: 2}).
			write(40, 50, del(3), Output{Status: 204, Version: 3}), false},
	}
	model := Model()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, info := porcupine.CheckOperationsVerbose(model, tc.h.ops, 10*time.Second)
			if got := res == porcupine.Ok; got != tc.want {
				t.Errorf("linearizable = %v (%s), want %v", got, res, tc.want)
				for _, p := range info.PartialLinearizationsOperations() {
					for _, lin := range p {
						for _, op := range lin {
							t.Logf("  %s", Describe(op.Input.(Input), op.Output.(Output)))
						}
					}
				}
			}
		})
	}
}

// TestPartition checks that resources are checked independently: a
// history that is fine per resource stays fine when interleaved.
func TestPartition(t *testing.T) {
	h := new(hist)
	for i, id := range []string{"a", "b", "c"} {
		h.write(int64(i), 100, Input{ID: id, Kind: KindPut, Write: i + 1, Marker: id}, Output{Status: 201, Version: 1, Marker: id})
	}
	for i, id := range []string{"a", "b", "c"} {
		h.op(200+int64(i), 300, Input{ID: id, Kind: KindRead}, Output{Status: 200, Version: 1, Marker: id})
	}
	if parts := Model().Partition(h.ops); len(parts) != 3 {
		t.Fatalf("%d partitions, want 3", len(parts))
	}
	if res := porcupine.CheckOperationsTimeout(Model(), h.ops, 10*time.Second); res != porcupine.Ok {
		t.Fatalf("got %s, want ok", res)
	}
}

// tx records a transaction of PUT entries, as the cluster test does: per
// entry a claim and a completion, and the commit. outs are the answers of
// the entries, Unknown when the transaction failed or its outcome is
// unknown; end is "committed", "unknown" (the commit is of unknown
// outcome) or "" (the transaction failed: there is no commit, and its
// claims, of unknown outcome, stay hidden for good).
func (h *hist) tx(call, ret int64, t int, ins []Input, outs []Output, end string) *hist {
	var entries []TxEntry
	for i, in := range ins {
		in.Kind, in.Tx = KindTxPut, t
		h.write(call, ret, in, outs[i])
		entries = append(entries, TxEntry{ID: in.ID, Write: in.Write})
	}
	switch end {
	case "committed":
		h.op(call, ret, Input{Kind: KindTxEnd, Tx: t, Entries: entries}, Output{Status: 200})
	case "unknown":
		h.op(call, ret, Input{Kind: KindTxEnd, Tx: t, Entries: entries}, unknown)
	}
	return h
}

func putOn(id string, w int, ifMatch int) Input {
	return Input{ID: id, Kind: KindPut, Write: w, Marker: fmt.Sprintf("m%d", w), IfMatch: ifMatch}
}

func ok(status, v int, marker string) Output {
	return Output{Status: status, Version: v, Marker: marker}
}

func readOf(id string) Input { return Input{ID: id, Kind: KindRead} }

// TestModelTransactions checks the model on histories with transactions:
// atomic visibility across resources, hidden versions of transactions
// that do not commit, and the version numbers they hold.
func TestModelTransactions(t *testing.T) {
	base := func() *hist {
		return new(hist).
			write(0, 10, putOn("a", 1, 0), ok(201, 1, "m1")).
			write(0, 10, putOn("b", 2, 0), ok(201, 1, "m2"))
	}
	ab := func(wa, wb, ifA, ifB int) []Input { return []Input{putOn("a", wa, ifA), putOn("b", wb, ifB)} }
	both := func(va, vb int, wa, wb int) []Output {
		return []Output{ok(200, va, fmt.Sprintf("m%d", wa)), ok(200, vb, fmt.Sprintf("m%d", wb))}
	}
	failed := []Output{unknown, unknown}
	tests := []struct {
		name string
		h    *hist
		want bool
	}{
		{"committed transaction read after", base().
			tx(20, 30, 1, ab(3, 4, 1, 0), both(2, 2, 3, 4), "committed").
			op(40, 50, readOf("a"), ok(200, 2, "m3")).
			op(40, 50, readOf("b"), ok(200, 2, "m4")), true},
		{"reads during a transaction see old or new", base().
			tx(20, 100, 1, ab(3, 4, 0, 0), both(2, 2, 3, 4), "committed").
			op(30, 40, readOf("a"), ok(200, 1, "m1")).
			op(50, 60, readOf("b"), ok(200, 2, "m4")).
			op(70, 80, readOf("a"), ok(200, 2, "m3")), true},
		{"fractured read: a new, then b old", base().
			tx(20, 100, 1, ab(3, 4, 0, 0), both(2, 2, 3, 4), "committed").
			op(30, 40, readOf("a"), ok(200, 2, "m3")).
			op(50, 60, readOf("b"), ok(200, 1, "m2")), false},
		{"fractured read of a transaction with an unknown outcome", base().
			tx(20, 0, 1, ab(3, 4, 0, 0), failed, "unknown").
			op(30, 40, readOf("a"), ok(200, 2, "m3")).
			op(50, 60, readOf("b"), ok(200, 1, "m2")), false},
		{"unknown transaction seen whole", base().
			tx(20, 0, 1, ab(3, 4, 0, 0), failed, "unknown").
			op(30, 40, readOf("b"), ok(200, 1, "m2")).
			op(50, 60, readOf("a"), ok(200, 2, "m3")).
			op(70, 80, readOf("b"), ok(200, 2, "m4")), true},
		{"dirty read of a failed transaction", base().
			tx(20, 100, 1, ab(3, 4, 0, 0), failed, "").
			op(30, 40, readOf("a"), ok(200, 2, "m3")), false},
		{"vread of a failed transaction's version", base().
			tx(20, 30, 1, ab(3, 4, 0, 0), failed, "").
			op(40, 50, vread(2), ok(200, 2, "m3")), false},
		{"a failed transaction's version is skipped", base().
			tx(20, 30, 1, ab(3, 4, 0, 0), failed, "").
			write(40, 50, putOn("a", 5, 0), ok(200, 3, "m5")).
			op(60, 70, vread(2), Output{Status: 404}).
			op(60, 70, Input{ID: "a", Kind: KindHistory, Count: 5}, Output{Status: 200, Entries: []Entry{{3, false, "m5"}, {1, false, "m1"}}}).
			op(60, 70, readOf("b"), ok(200, 1, "m2")), true},
		{"a skipped version without a transaction", base().
			write(40, 50, putOn("a", 5, 0), ok(200, 3, "m5")), false},
		{"If-Match names the visible version below a hidden one", base().
			tx(20, 30, 1, ab(3, 4, 0, 0), failed, "").
			write(40, 50, putOn("a", 5, 0), unknown).
			write(60, 70, putOn("a", 6, 1), ok(200, 3, "m6")), true},
		{"history page with a hidden current version", base().
			tx(20, 30, 1, ab(3, 4, 0, 0), []Output{unknown, unknown}, "").
			op(40, 50, Input{ID: "a", Kind: KindHistory, Count: 1}, Output{Status: 200, Entries: []Entry{{1, false, "m1"}}}), true},
		{"a transaction's stale If-Match commits", base().
			write(12, 18, putOn("a", 9, 0), ok(200, 2, "m9")).
			tx(20, 30, 1, ab(3, 4, 1, 0), both(3, 2, 3, 4), "committed"), false},
		{"a transaction's write that met a claim succeeds", base().
			write(11, 13, putOn("a", 9, 0), unknown).
			op(14, 15, vread(2), ok(200, 2, "m9")).
			op(14, 15, readOf("a"), ok(200, 1, "m1")).
			tx(20, 30, 1, ab(3, 4, 0, 0), both(3, 2, 3, 4), "committed").
			op(40, 50, readOf("a"), ok(200, 3, "m3")), false},
		{"a write on top of an open transaction that then commits", base().
			tx(20, 100, 1, ab(3, 4, 0, 0), both(2, 2, 3, 4), "committed").
			op(21, 22, vread(1), ok(200, 1, "m1")).
			write(25, 30, putOn("a", 5, 0), ok(200, 3, "m5")).
			op(110, 120, readOf("b"), ok(200, 2, "m4")).
			op(110, 120, vread(2), ok(200, 2, "m3")), true},
		{"a write acknowledged before the transaction claims", base().
			write(21, 22, putOn("a", 5, 0), ok(200, 2, "m5")).
			tx(25, 100, 1, ab(3, 4, 0, 0), both(3, 2, 3, 4), "committed").
			op(110, 120, readOf("a"), ok(200, 3, "m3")), true},
		{"a transaction whose version another write overtook", base().
			tx(20, 100, 1, ab(3, 4, 0, 0), both(2, 2, 3, 4), "committed").
			op(101, 102, readOf("a"), ok(200, 2, "m3")).
			write(103, 104, putOn("a", 5, 0), ok(200, 3, "m5")).
			op(105, 106, Input{ID: "a", Kind: KindHistory, Count: 5}, Output{Status: 200, Entries: []Entry{{3, false, "m5"}, {1, false, "m1"}}}), false},
		{"a failed transaction's claim learnt from the bucket", base().
			op(20, 30, Input{ID: "a", Kind: KindTxPut, Tx: 1, Write: 3, Marker: "m3"}, Output{Version: 2}).
			write(40, 50, putOn("a", 5, 0), ok(200, 3, "m5")), true},
		{"a claim learnt from the bucket that does not fit", base().
			op(20, 30, Input{ID: "a", Kind: KindTxPut, Tx: 1, Write: 3, Marker: "m3"}, Output{Version: 2}).
			write(40, 50, putOn("a", 5, 0), ok(200, 2, "m5")), false},
		{"created by a transaction: 201", new(hist).
			tx(20, 30, 1, ab(3, 4, 0, 0), []Output{ok(201, 1, "m3"), ok(201, 1, "m4")}, "committed").
			op(40, 50, readOf("b"), ok(200, 1, "m4")), true},
		{"created by a transaction after a failed one: still 201", new(hist).
			tx(0, 10, 1, ab(1, 2, 0, 0), failed, "").
			tx(20, 30, 2, ab(3, 4, 0, 0), []Output{ok(201, 2, "m3"), ok(201, 1, "m4")}, "committed").
			op(40, 50, Input{ID: "a", Kind: KindHistory, Count: 5}, Output{Status: 200, Entries: []Entry{{2, false, "m3"}}}), true},
	}
	model := Model()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, info := porcupine.CheckOperationsVerbose(model, tc.h.ops, 10*time.Second)
			if got := res == porcupine.Ok; got != tc.want {
				t.Errorf("linearizable = %v (%s), want %v", got, res, tc.want)
				for _, p := range info.PartialLinearizationsOperations() {
					for _, lin := range p {
						for _, op := range lin {
							t.Logf("  %s", Describe(op.Input.(Input), op.Output.(Output)))
						}
					}
				}
			}
		})
	}
	h := base().tx(20, 30, 1, ab(3, 4, 0, 0), failed, "unknown")
	h.write(0, 10, putOn("c", 9, 0), ok(201, 1, "m9"))
	if parts := model.Partition(h.ops); len(parts) != 2 {
		t.Errorf("%d partitions, want 2 (a and b joined by the transaction, c)", len(parts))
	}
}

package jepsen

import (
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

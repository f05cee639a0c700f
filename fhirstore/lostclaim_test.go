package fhirstore

import (
	"slices"
	"strings"
	"testing"

	"fhirbucket/storage"
	"fhirbucket/storage/storagetest"
)

// TestClaimLandedAnswerLost reproduces what S3 drivers do when the
// response to a claim is lost: the SDK retries the PUT, and the retry
// fails its own If-None-Match although the first attempt wrote the
// version. The write must recognise its own claim and succeed once: not
// store itself a second time as the next version (unconditional update,
// found by internal/jepsen with the fault proxy), not answer 412 for an
// update that happened (If-Match), not create a second resource (create).
func TestClaimLandedAnswerLost(t *testing.T) {
	tests := []struct {
		name    string
		op      string
		ifMatch *Match
	}{
		{"update", "update", nil},
		{"update If-Match", "update", &Match{Versions: []int{1}}},
		{"delete", "delete", nil},
		{"create", "create", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			f := storagetest.NewFaulty(newMem())
			s := newStore(t, f)
			id, claim := "p", "/_history/2.json"
			if tc.op == "create" {
				claim = "/_history/1.json"
			} else if _, _, err := s.Update(ctx, "acme", "Patient", id, patient(id, "v1"), WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			rule := f.Add(storagetest.Fault{Op: storage.OpPut, KeyContains: claim, Nth: 1,
				Err: storage.ErrPreconditionFailed, AfterWrite: true})
			var res *Resource
			var err error
			switch tc.op {
			case "update":
				res, _, err = s.Update(ctx, "acme", "Patient", id, patient(id, "v2"), WriteOptions{IfMatch: tc.ifMatch})
			case "delete":
				res, err = s.Delete(ctx, "acme", "Patient", id, WriteOptions{})
			case "create":
				res, err = s.Create(ctx, "acme", "Patient", patient("", "v1"))
			}
			if rule.Fired() != 1 {
				t.Fatal("the fault did not fire")
			}
			if err != nil || res == nil {
				t.Fatalf("%s whose claim landed: %+v, %v; want success", tc.op, res, err)
			}
			want := 2
			if tc.op == "create" {
				want, id = 1, res.ID
			}
			if res.Version != want {
				t.Fatalf("%s answered version %d, want %d", tc.op, res.Version, want)
			}
			var ids []string
			for _, k := range allKeys(t, f.Inner()) {
				if rest, ok := strings.CutPrefix(k, "acme/resources/Patient/"); ok {
					ids = append(ids, strings.Split(rest, "/")[0])
				}
			}
			if ids = slices.Compact(ids); len(ids) != 1 {
				t.Fatalf("resources stored: %v, want exactly one", ids)
			}
			vs, err := s.Versions(ctx, "acme", "Patient", id)
			if err != nil || !slices.Equal(vs, intsTo(want)) {
				t.Fatalf("versions %v (%v), want 1..%d: the write was stored more than once", vs, err, want)
			}
			cur, err := s.Read(ctx, "acme", "Patient", id)
			if (tc.op == "delete") != (err != nil) || cur.Version != want {
				t.Fatalf("Read = version %d, %v; want version %d current", cur.Version, err, want)
			}
			rep, err := s.Verify(ctx, "acme", false)
			if err != nil || len(rep.Problems) != 0 {
				t.Fatalf("Verify: %v %+v, want a clean store", err, rep)
			}
		})
	}
}

func intsTo(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

package fhirstore

import (
	"bytes"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"fhirbucket/storage"
	"fhirbucket/storage/storagetest"
)

// TestCrashAtEveryStep fails each step of the write protocol (before the
// request, or after it landed with the response lost) and checks that
// reads stay consistent, the next write rolls forward, and Verify with
// repair leaves a store that verifies clean.
func TestCrashAtEveryStep(t *testing.T) {
	steps := []struct {
		name       string
		key        string // substring of the failing PUT's key
		afterWrite bool
		// the version Read returns right after the failed write of v2
		readVersion int
		// Verify (no repair) must report a problem of this kind ("" = none)
		problem string
	}{
		{"before claim", "_history/2.json", false, 1, ""},
		{"claim landed", "_history/2.json", true, 1, ProblemClaimedVersion},
		{"before current", "current.json", false, 1, ProblemClaimedVersion},
		{"current landed", "current.json", true, 2, ""},
		{"before type event", "history/type/", false, 2, ProblemMissingEvent},
		{"type event landed", "history/type/", true, 2, ""},
		{"before system event", "history/system/", false, 2, ProblemMissingEvent},
		{"system event landed", "history/system/", true, 2, ""},
	}
	for _, bk := range backends {
		t.Run(bk.Name, func(t *testing.T) {
			for _, st := range steps {
				for _, op := range []string{"update", "create"} {
					t.Run(st.name+"/"+op, func(t *testing.T) {
						if testing.Short() && bk.S3 {
							t.Skip("S3 backends are skipped with -short")
						}
						crashStep(t, bk, op, st.key, st.afterWrite, st.readVersion, st.problem)
					})
				}
			}
		})
	}
}

func crashStep(t *testing.T, bk backend, op, key string, afterWrite bool, readVersion int, problem string) {
	ctx := t.Context()
	f := storagetest.NewFaulty(bk.Open(t))
	s := newStore(t, f)
	id := "p"
	if op == "update" {
		if _, _, err := s.Update(ctx, "acme", "Patient", id, patient(id, "v1"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	} else {
		// The version that fails is version 1 of a created resource.
		key = strings.Replace(key, "_history/2.json", "_history/1.json", 1)
		readVersion--
	}
	rule := f.Add(storagetest.Fault{Op: storage.OpPut, KeyContains: key, Nth: 1, Err: storage.ErrUnavailable, AfterWrite: afterWrite})
	var err error
	if op == "update" {
		_, _, err = s.Update(ctx, "acme", "Patient", id, patient(id, "v2"), WriteOptions{})
	} else {
		var r *Resource
		r, err = s.Create(ctx, "acme", "Patient", patient("", "v1"))
		if r != nil {
			t.Fatalf("Create returned %+v with an error", r)
		}
		id = createdID(t, f.Inner())
	}
	if rule.Fired() != 1 {
		t.Fatalf("the fault did not fire")
	}
	if err == nil || !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("the failed write returned %v, want the storage error", err)
	}
	f.Reset()

	// Reads are consistent: the last fully known version.
	r, rerr := s.Read(ctx, "acme", "Patient", id)
	switch {
	case readVersion == 0 && !errors.Is(rerr, ErrNotFound):
		t.Fatalf("Read = %+v, %v; want ErrNotFound", r, rerr)
	case readVersion > 0 && (rerr != nil || r.Version != readVersion):
		t.Fatalf("Read = %+v, %v; want version %d", r, rerr, readVersion)
	}
	failed := 2
	if op == "create" {
		failed = 1
	}
	_, verr := s.VRead(ctx, "acme", "Patient", id, "2")
	if op == "update" {
		claimed := !(key == "_history/2.json" && !afterWrite)
		if claimed != (verr == nil) {
			t.Fatalf("VRead of the failed version: %v (claimed %v)", verr, claimed)
		}
	}

	// Verify without repair sees exactly the expected kind of problem.
	rep, err := s.Verify(ctx, "acme", false)
	if err != nil {
		t.Fatal(err)
	}
	kinds := problemKinds(rep)
	if problem == "" && len(kinds) != 0 || problem != "" && !slices.Contains(kinds, problem) {
		t.Fatalf("Verify problems %v, want %q", rep.Problems, problem)
	}

	// The next write rolls the failed version forward (or starts after it).
	next, _, err := s.Update(ctx, "acme", "Patient", id, patient(id, "after"), WriteOptions{})
	if err != nil {
		t.Fatalf("next write: %v", err)
	}
	vs, err := s.Versions(ctx, "acme", "Patient", id)
	if err != nil || !slices.Equal(vs, dense(next.Version)) {
		t.Fatalf("versions %v after the next write (version %d), %v", vs, next.Version, err)
	}
	landed := !(strings.Contains(key, "_history/") && !afterWrite)
	wantNext := failed + 1
	if !landed {
		wantNext = failed
	}
	if next.Version != wantNext {
		t.Fatalf("next write got version %d, want %d", next.Version, wantNext)
	}
	if landed {
		old, err := s.VRead(ctx, "acme", "Patient", id, itoa(failed))
		if err != nil || !bytes.Contains(old.Content, []byte(`"v`+itoa(failed)+`"`)) {
			t.Fatalf("the failed write's version = %+v, %v", old, err)
		}
	}

	// Repair, then a clean second pass.
	rep, err = s.Verify(ctx, "acme", true)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range rep.Problems {
		if !p.Repaired {
			t.Errorf("unrepaired problem: %+v", p)
		}
	}
	rep = assertClean(t, s, "acme")
	if rep.Versions != next.Version || rep.Events != 2*next.Version {
		t.Errorf("after repair: %d versions, %d events; want %d and %d", rep.Versions, rep.Events, next.Version, 2*next.Version)
	}
	// Every version is in type and system history exactly once.
	for _, q := range []HistoryQuery{{Type: "Patient"}, {}} {
		p, err := s.History(ctx, "acme", q)
		if err != nil || len(p.Entries) != next.Version {
			t.Fatalf("history %+v: %d entries, %v; want %d", q, len(p.Entries), err, next.Version)
		}
		for i, e := range p.Entries {
			if e.Version != next.Version-i {
				t.Fatalf("history %+v entry %d is version %d", q, i, e.Version)
			}
		}
	}
}

// createdID finds the one resource id in b (a create's id is random).
func createdID(t *testing.T, b storage.Bucket) string {
	t.Helper()
	for _, k := range allKeys(t, b) {
		if rest, ok := strings.CutPrefix(k, "acme/resources/Patient/"); ok {
			return strings.Split(rest, "/")[0]
		}
	}
	// Nothing landed (the claim failed before it was written): any id
	// will do for the rest of the test.
	return "p"
}

func problemKinds(rep *Report) []string {
	var out []string
	for _, p := range rep.Problems {
		out = append(out, p.Kind)
	}
	return out
}

func dense(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i + 1
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

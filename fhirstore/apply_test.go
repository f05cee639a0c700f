package fhirstore

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"fhirbucket/storage"
	"fhirbucket/storage/storagetest"
)

// costCheck returns a function that runs f, fails the test on an error
// other than wantErr (nil: none), and checks the requests f made.
func costCheck(t *testing.T, c *storage.Counter) func(name string, want storage.Counts, wantErr error, f func() error) {
	return func(name string, want storage.Counts, wantErr error, f func() error) {
		t.Helper()
		var err error
		got := costOf(c, func() { err = f() })
		if wantErr == nil && err != nil || wantErr != nil && !errors.Is(err, wantErr) {
			t.Fatalf("%s: err = %v, want %v", name, err, wantErr)
		}
		if got != want {
			t.Errorf("%s: cost %+v, want %+v", name, got, want)
		}
	}
}

func versionsOf(t *testing.T, s *Store, id string) []int {
	t.Helper()
	vs, err := s.Versions(t.Context(), "acme", "Patient", id)
	if err != nil {
		t.Fatalf("Versions(%s): %v", id, err)
	}
	return vs
}

// TestApplyBase: Apply writes Base+1 exactly when Base is current, Base 0
// means "does not exist", and everything else is a 412 that writes
// nothing.
func TestApplyBase(t *testing.T) {
	eachBackend(t, func(t *testing.T, bk backend) {
		ctx := t.Context()
		c := storage.NewCounter(bk.Open(t))
		s := newStore(t, c)
		check := costCheck(t, c)
		put := func(base int, family string) Change {
			return Change{Type: "Patient", ID: "p", Method: MethodPut, Content: patient("p", family), Base: base}
		}
		var res *Resource
		var created bool
		check("put base 0", storage.Counts{Put: 4}, nil, func() (err error) {
			res, created, err = s.Apply(ctx, "acme", put(0, "A"))
			return err
		})
		if res.Version != 1 || !created || res.Method != MethodPut {
			t.Fatalf("put base 0 = %+v, created %v", res, created)
		}
		check("put base 0, exists", storage.Counts{Get: 1, Put: 1}, ErrPreconditionFailed, func() error {
			_, _, err := s.Apply(ctx, "acme", put(0, "X"))
			return err
		})
		check("post base 0, exists", storage.Counts{Get: 1, Put: 1}, ErrPreconditionFailed, func() error {
			_, _, err := s.Apply(ctx, "acme", Change{Type: "Patient", ID: "p", Method: MethodPost, Content: patient("", "X")})
			return err
		})
		check("put base 1", storage.Counts{Get: 1, Put: 4}, nil, func() (err error) {
			res, created, err = s.Apply(ctx, "acme", put(1, "B"))
			return err
		})
		if res.Version != 2 || created {
			t.Fatalf("put base 1 = %+v, created %v", res, created)
		}
		for _, base := range []int{1, 3} {
			check(fmt.Sprintf("put base %d at version 2", base), storage.Counts{Get: 1}, ErrPreconditionFailed, func() error {
				_, _, err := s.Apply(ctx, "acme", put(base, "X"))
				return err
			})
		}
		check("if-match failing with the right base", storage.Counts{Get: 1}, ErrPreconditionFailed, func() error {
			c := put(2, "X")
			c.IfMatch = &Match{Versions: []int{1}}
			_, _, err := s.Apply(ctx, "acme", c)
			return err
		})
		check("delete base 2", storage.Counts{Get: 1, Put: 4}, nil, func() (err error) {
			res, _, err = s.Apply(ctx, "acme", Change{Type: "Patient", ID: "p", Method: MethodDelete, Base: 2})
			return err
		})
		if res.Version != 3 || !res.Deleted() || !bytes.Contains(res.Content, []byte(`"B"`)) {
			t.Fatalf("delete base 2 = %+v", res)
		}
		check("delete a tombstone", storage.Counts{Get: 1}, nil, func() (err error) {
			res, _, err = s.Apply(ctx, "acme", Change{Type: "Patient", ID: "p", Method: MethodDelete, Base: 3})
			return err
		})
		if res != nil {
			t.Fatalf("delete of a tombstone wrote %+v", res)
		}
		check("delete base 0, exists", storage.Counts{Get: 1}, ErrPreconditionFailed, func() error {
			_, _, err := s.Apply(ctx, "acme", Change{Type: "Patient", ID: "p", Method: MethodDelete})
			return err
		})
		check("delete base 0, missing", storage.Counts{Get: 1}, nil, func() (err error) {
			res, _, err = s.Apply(ctx, "acme", Change{Type: "Patient", ID: "q", Method: MethodDelete})
			return err
		})
		if res != nil {
			t.Fatalf("delete of a missing resource wrote %+v", res)
		}
		check("put base 0 on a tombstone", storage.Counts{Get: 1, Put: 1}, ErrPreconditionFailed, func() error {
			_, _, err := s.Apply(ctx, "acme", put(0, "X"))
			return err
		})
		check("put on a tombstone", storage.Counts{Get: 1, Put: 4}, nil, func() (err error) {
			res, created, err = s.Apply(ctx, "acme", put(3, "C"))
			return err
		})
		if res.Version != 4 || created || res.Deleted() {
			t.Fatalf("restore = %+v, created %v", res, created)
		}
		check("post base 0", storage.Counts{Put: 4}, nil, func() (err error) {
			res, created, err = s.Apply(ctx, "acme", Change{Type: "Patient", ID: "n", Method: MethodPost, Content: patient("other", "N")})
			return err
		})
		if res.Version != 1 || !created || res.Method != MethodPost || !bytes.Contains(res.Content, []byte(`"id":"n"`)) {
			t.Fatalf("post = %+v, created %v: %s", res, created, res.Content)
		}
		check("put any base", storage.Counts{Get: 1, Put: 4}, nil, func() (err error) {
			res, _, err = s.Apply(ctx, "acme", Change{Type: "Patient", ID: "n", Method: MethodPut, Content: patient("n", "M"), AnyBase: true})
			return err
		})
		if res.Version != 2 {
			t.Fatalf("put any base = %+v", res)
		}
		if got := versionsOf(t, s, "p"); !slices.Equal(got, []int{1, 2, 3, 4}) {
			t.Fatalf("versions of p = %v", got)
		}

		// Current: the planning read.
		check("current", storage.Counts{Get: 1}, nil, func() (err error) {
			res, err = s.Current(ctx, "acme", "Patient", "p")
			return err
		})
		if res == nil || res.Version != 4 {
			t.Fatalf("Current = %+v", res)
		}
		check("current, missing", storage.Counts{Get: 1}, nil, func() (err error) {
			res, err = s.Current(ctx, "acme", "Patient", "missing")
			return err
		})
		if res != nil {
			t.Fatalf("Current of a missing resource = %+v", res)
		}
		assertClean(t, s, "acme")
	})
}

// TestApplyInvalid: changes that cannot be applied fail with ErrInvalid
// before any I/O.
func TestApplyInvalid(t *testing.T) {
	c := storage.NewCounter(newMem())
	s := newStore(t, c)
	check := costCheck(t, c)
	body := patient("p", "A")
	for name, ch := range map[string]Change{
		"unknown method":   {Type: "Patient", ID: "p", Method: "PATCH", Content: body},
		"negative base":    {Type: "Patient", ID: "p", Method: MethodPut, Content: body, Base: -1},
		"base and any":     {Type: "Patient", ID: "p", Method: MethodPut, Content: body, Base: 1, AnyBase: true},
		"post with a base": {Type: "Patient", ID: "p", Method: MethodPost, Content: body, Base: 1},
		"post any base":    {Type: "Patient", ID: "p", Method: MethodPost, Content: body, AnyBase: true},
		"put without id":   {Type: "Patient", ID: "p", Method: MethodPut, Content: patient("", "A")},
		"put other id":     {Type: "Patient", ID: "p", Method: MethodPut, Content: patient("q", "A")},
		"wrong type":       {Type: "Observation", ID: "p", Method: MethodPut, Content: body},
		"invalid body":     {Type: "Patient", ID: "p", Method: MethodPost, Content: []byte(`{"resourceType":"Patient","gender":42}`)},
		"no id":            {Type: "Patient", Method: MethodDelete},
		"bad type":         {Type: "Patients", ID: "p", Method: MethodDelete},
	} {
		check(name, storage.Counts{}, ErrInvalid, func() error { _, _, err := s.Apply(t.Context(), "acme", ch); return err })
	}
	check("revert version 0", storage.Counts{}, ErrInvalid, func() error {
		_, err := s.Revert(t.Context(), "acme", "Patient", "p", 0)
		return err
	})
	if keys := allKeys(t, c); len(keys) != 0 {
		t.Fatalf("invalid changes wrote %v", keys)
	}
}

// TestApplyConcurrentSameBase: writers applying a change with the same
// Base race; exactly one wins and the others get a 412.
func TestApplyConcurrentSameBase(t *testing.T) {
	eachBackend(t, func(t *testing.T, bk backend) {
		ctx := t.Context()
		s := newStore(t, bk.Open(t))
		if _, _, err := s.Apply(ctx, "acme", Change{Type: "Patient", ID: "p", Method: MethodPost, Content: patient("", "base")}); err != nil {
			t.Fatal(err)
		}
		n := s3Sized(bk, 32, 8)
		for _, tc := range []struct {
			name string
			id   string
			mk   func(i int) Change
		}{
			{"put base 1", "p", func(i int) Change {
				return Change{Type: "Patient", ID: "p", Method: MethodPut, Content: patient("p", fmt.Sprint(i)), Base: 1}
			}},
			{"post base 0", "fresh", func(i int) Change {
				return Change{Type: "Patient", ID: "fresh", Method: MethodPost, Content: patient("", fmt.Sprint(i))}
			}},
			{"delete base 2", "p", func(i int) Change { return Change{Type: "Patient", ID: "p", Method: MethodDelete, Base: 2} }},
		} {
			var wg sync.WaitGroup
			errs := make([]error, n)
			for i := range n {
				wg.Go(func() { _, _, errs[i] = s.Apply(ctx, "acme", tc.mk(i)) })
			}
			wg.Wait()
			wins := 0
			for i, err := range errs {
				switch {
				case err == nil:
					wins++
				case !errors.Is(err, ErrPreconditionFailed):
					t.Errorf("%s: writer %d: %v, want ErrPreconditionFailed", tc.name, i, err)
				}
			}
			if wins != 1 {
				t.Fatalf("%s: %d writers won, want exactly 1", tc.name, wins)
			}
		}
		if got := versionsOf(t, s, "p"); !slices.Equal(got, []int{1, 2, 3}) {
			t.Fatalf("versions of p = %v", got)
		}
		if got := versionsOf(t, s, "fresh"); !slices.Equal(got, []int{1}) {
			t.Fatalf("versions of fresh = %v", got)
		}
		assertClean(t, s, "acme")
	})
}

// TestRevert: Revert restores the state before a version written with
// Apply, is idempotent, and never undoes a later writer.
func TestRevert(t *testing.T) {
	eachBackend(t, func(t *testing.T, bk backend) {
		ctx := t.Context()
		c := storage.NewCounter(bk.Open(t))
		s := newStore(t, c)
		check := costCheck(t, c)
		apply := func(ch Change) *Resource {
			t.Helper()
			ch.Type = "Patient"
			r, _, err := s.Apply(ctx, "acme", ch)
			if err != nil {
				t.Fatalf("Apply %+v: %v", ch, err)
			}
			return r
		}
		var res *Resource
		revert := func(id string, v int) func() error {
			return func() (err error) {
				res, err = s.Revert(ctx, "acme", "Patient", id, v)
				return err
			}
		}

		// A create is undone by a tombstone that keeps its content.
		apply(Change{ID: "c", Method: MethodPost, Content: patient("", "A")})
		check("revert a create", storage.Counts{Get: 1, Put: 4}, nil, revert("c", 1))
		if res.Version != 2 || !res.Deleted() || res.Method != MethodDelete || !bytes.Contains(res.Content, []byte(`"A"`)) {
			t.Fatalf("revert of a create = %+v", res)
		}
		if _, err := s.Read(ctx, "acme", "Patient", "c"); !errors.Is(err, ErrGone) {
			t.Fatalf("Read after reverting a create: %v", err)
		}
		check("revert a create again", storage.Counts{Get: 2}, nil, revert("c", 1))
		if res.Version != 2 {
			t.Fatalf("repeated revert = %+v", res)
		}

		// An update is undone by the previous content as the next version.
		v1 := apply(Change{ID: "u", Method: MethodPut, Content: patient("u", "A")})
		apply(Change{ID: "u", Method: MethodPut, Content: patient("u", "B"), Base: 1})
		check("revert an update", storage.Counts{Get: 2, Put: 4}, nil, revert("u", 2))
		if res.Version != 3 || res.Deleted() || res.Method != MethodPut || !bytes.Contains(res.Content, []byte(`"A"`)) ||
			!bytes.Contains(res.Content, []byte(`"versionId":"3"`)) || !res.CreatedAt.Equal(v1.CreatedAt) {
			t.Fatalf("revert of an update = %+v: %s", res, res.Content)
		}
		if r, err := s.Read(ctx, "acme", "Patient", "u"); err != nil || r.Version != 3 || !bytes.Equal(r.Content, res.Content) {
			t.Fatalf("Read after reverting an update = %+v, %v", r, err)
		}
		check("revert an update again", storage.Counts{Get: 3}, nil, revert("u", 2))
		if res.Version != 3 {
			t.Fatalf("repeated revert = %+v", res)
		}

		// A later write is never undone; the revert stays recognised.
		apply(Change{ID: "u", Method: MethodPut, Content: patient("u", "C"), Base: 3})
		check("revert under a later write", storage.Counts{Get: 3}, ErrPreconditionFailed, revert("u", 3))
		check("revert an update after a later write", storage.Counts{Get: 3}, nil, revert("u", 2))
		if got := versionsOf(t, s, "u"); !slices.Equal(got, []int{1, 2, 3, 4}) {
			t.Fatalf("versions of u = %v", got)
		}

		// A delete is undone by restoring the content it kept.
		apply(Change{ID: "d", Method: MethodPut, Content: patient("d", "A")})
		apply(Change{ID: "d", Method: MethodDelete, Base: 1})
		check("revert a delete", storage.Counts{Get: 2, Put: 4}, nil, revert("d", 2))
		if res.Version != 3 || res.Deleted() || !bytes.Contains(res.Content, []byte(`"A"`)) {
			t.Fatalf("revert of a delete = %+v", res)
		}
		if r, err := s.Read(ctx, "acme", "Patient", "d"); err != nil || r.Version != 3 {
			t.Fatalf("Read after reverting a delete = %+v, %v", r, err)
		}

		// A restore of a tombstone is undone by a tombstone.
		apply(Change{ID: "d", Method: MethodDelete, Base: 3})
		apply(Change{ID: "d", Method: MethodPut, Content: patient("d", "B"), Base: 4})
		check("revert a restore", storage.Counts{Get: 2, Put: 4}, nil, revert("d", 5))
		if res.Version != 6 || !res.Deleted() || !bytes.Contains(res.Content, []byte(`"B"`)) {
			t.Fatalf("revert of a restore = %+v", res)
		}

		// A version nobody wrote.
		check("revert an unwritten version", storage.Counts{Get: 3}, ErrNotFound, revert("d", 7))
		check("revert a missing resource", storage.Counts{Get: 2}, ErrNotFound, revert("missing", 1))
		assertClean(t, s, "acme")
	})
}

// TestRevertConcurrent: revertors racing on one version (two replicas
// finishing the same journal) all succeed with the one revert version.
func TestRevertConcurrent(t *testing.T) {
	eachBackend(t, func(t *testing.T, bk backend) {
		ctx := t.Context()
		s := newStore(t, bk.Open(t))
		for base, family := range []string{"A", "B"} {
			if _, _, err := s.Apply(ctx, "acme", Change{Type: "Patient", ID: "p", Method: MethodPut, Content: patient("p", family), Base: base}); err != nil {
				t.Fatal(err)
			}
		}
		n := s3Sized(bk, 16, 4)
		var wg sync.WaitGroup
		got := make([]*Resource, n)
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() { got[i], errs[i] = s.Revert(ctx, "acme", "Patient", "p", 2) })
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil || got[i].Version != 3 {
				t.Errorf("revertor %d: %+v, %v", i, got[i], errs[i])
			}
		}
		if vs := versionsOf(t, s, "p"); !slices.Equal(vs, []int{1, 2, 3}) {
			t.Fatalf("versions = %v", vs)
		}
		assertClean(t, s, "acme")
	})
}

// TestRevertCompletesAClaim: a version whose writer stopped after its
// claim is completed and then reverted.
func TestRevertCompletesAClaim(t *testing.T) {
	ctx := t.Context()
	f := storagetest.NewFaulty(newMem())
	s := newStore(t, f)
	if _, _, err := s.Apply(ctx, "acme", Change{Type: "Patient", ID: "p", Method: MethodPut, Content: patient("p", "A")}); err != nil {
		t.Fatal(err)
	}
	f.Add(storagetest.Fault{Op: storage.OpPut, KeyContains: "_history/2.json", Nth: 1, Err: storage.ErrUnavailable, AfterWrite: true})
	if _, _, err := s.Apply(ctx, "acme", Change{Type: "Patient", ID: "p", Method: MethodPut, Content: patient("p", "crashed"), Base: 1}); err == nil {
		t.Fatal("the crashed write succeeded")
	}
	res, err := s.Revert(ctx, "acme", "Patient", "p", 2)
	if err != nil || res.Version != 3 || !bytes.Contains(res.Content, []byte(`"A"`)) {
		t.Fatalf("Revert of a claimed version = %+v, %v", res, err)
	}
	assertClean(t, s, "acme")
}

package fhirstore

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"fhirbucket/storage"
	"fhirbucket/storage/storagetest"
)

// TestConcurrentConditionalUpdates: N writers with the same expected
// version, exactly one wins.
func TestConcurrentConditionalUpdates(t *testing.T) {
	eachBackend(t, func(t *testing.T, bk backend) {
		ctx := t.Context()
		s := newStore(t, bk.Open(t))
		if _, _, err := s.Update(ctx, "acme", "Patient", "p", patient("p", "base"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		const n = 32
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				_, _, errs[i] = s.Update(ctx, "acme", "Patient", "p", patient("p", fmt.Sprintf("w%d", i)),
					WriteOptions{IfMatch: &Match{Versions: []int{1}}})
			})
		}
		wg.Wait()
		wins := 0
		for i, err := range errs {
			switch {
			case err == nil:
				wins++
			case !errors.Is(err, ErrPreconditionFailed):
				t.Errorf("writer %d: %v, want ErrPreconditionFailed", i, err)
			}
		}
		if wins != 1 {
			t.Fatalf("%d writers won, want exactly 1", wins)
		}
		if vs, err := s.Versions(ctx, "acme", "Patient", "p"); err != nil || !slices.Equal(vs, []int{1, 2}) {
			t.Fatalf("Versions = %v, %v", vs, err)
		}
		if r, err := s.Read(ctx, "acme", "Patient", "p"); err != nil || r.Version != 2 {
			t.Fatalf("Read = %+v, %v", r, err)
		}
		assertClean(t, s, "acme")
	})
}

// TestConcurrentUpdates: many writers, unconditional updates of one
// resource. Every acknowledged write has its own version, versions are
// dense, and history lists each exactly once.
func TestConcurrentUpdates(t *testing.T) {
	eachBackend(t, func(t *testing.T, bk backend) {
		ctx := t.Context()
		s := newStore(t, bk.Open(t), func(c *Config) { c.WriteRetries = 100000 })
		writers, each := 32, 20
		if bk.S3 {
			writers, each = 8, 10
		}
		if _, _, err := s.Update(ctx, "acme", "Patient", "p", patient("p", "base"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		acked := map[int]string{} // version -> family name written
		var wg sync.WaitGroup
		failures := make(chan error, writers*each)
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					name := fmt.Sprintf("w%d-%d", w, i)
					r, _, err := s.Update(ctx, "acme", "Patient", "p", patient("p", name), WriteOptions{})
					if err != nil {
						failures <- err
						continue
					}
					mu.Lock()
					if prev, dup := acked[r.Version]; dup {
						t.Errorf("version %d acknowledged twice (%s and %s)", r.Version, prev, name)
					}
					acked[r.Version] = name
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		close(failures)
		for err := range failures {
			t.Errorf("update failed: %v", err)
		}
		total := 1 + writers*each
		vs, err := s.Versions(ctx, "acme", "Patient", "p")
		if err != nil || len(vs) != total || vs[0] != 1 || vs[len(vs)-1] != total {
			t.Fatalf("versions: %d of them, %v..., want dense 1..%d: %v", len(vs), vs[:min(5, len(vs))], total, err)
		}
		// Every acknowledged write is the version it was told, exactly once
		// in instance and type history.
		seen := map[int]int{}
		q := HistoryQuery{Type: "Patient", ID: "p", Count: 100}
		for {
			p, err := s.History(ctx, "acme", q)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range p.Entries {
				seen[e.Version]++
				if name, ok := acked[e.Version]; ok && !bytes.Contains(e.Content, []byte(`"`+name+`"`)) {
					t.Errorf("version %d does not hold the write acknowledged for it (%s)", e.Version, name)
				}
			}
			if p.Next == "" {
				break
			}
			q.Cursor = p.Next
		}
		for v := 1; v <= total; v++ {
			if seen[v] != 1 {
				t.Errorf("version %d is in instance history %d times", v, seen[v])
			}
		}
		typeSeen := map[int]int{}
		q = HistoryQuery{Type: "Patient", Count: 200}
		for {
			p, err := s.History(ctx, "acme", q)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range p.Entries {
				typeSeen[e.Version]++
			}
			if p.Next == "" {
				break
			}
			q.Cursor = p.Next
		}
		if len(typeSeen) != total {
			t.Errorf("type history has %d distinct versions, want %d", len(typeSeen), total)
		}
		for v, n := range typeSeen {
			if n != 1 {
				t.Errorf("version %d is in type history %d times", v, n)
			}
		}
		assertClean(t, s, "acme")
	})
}

// assertClean runs Verify without repair and expects no problems.
func assertClean(t testing.TB, s *Store, tenant string) *Report {
	t.Helper()
	rep, err := s.Verify(t.Context(), tenant, false)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	for _, p := range rep.Problems {
		t.Errorf("Verify: %+v", p)
	}
	return rep
}

// TestLiveWriterRolledForward: a writer slow between its claim and its
// pointer write is rolled forward by a second writer; both succeed, and the
// slow one finds its version already in place.
func TestLiveWriterRolledForward(t *testing.T) {
	eachBackend(t, func(t *testing.T, bk backend) {
		ctx := t.Context()
		f := storagetest.NewFaulty(bk.Open(t))
		s := newStore(t, f)
		if _, _, err := s.Update(ctx, "acme", "Patient", "p", patient("p", "v1"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		// Writer A's pointer write (the next current.json PUT) is slow.
		f.Add(storagetest.Fault{Op: storage.OpPut, KeyContains: "current.json", Nth: 1, Delay: 500 * time.Millisecond})
		claimed := f.Add(storagetest.Fault{Op: storage.OpPut, KeyContains: "_history/2.json"})
		var resA *Resource
		var errA error
		done := make(chan struct{})
		go func() {
			defer close(done)
			resA, _, errA = s.Update(ctx, "acme", "Patient", "p", patient("p", "A"), WriteOptions{})
		}()
		for claimed.Seen() == 0 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond) // A's claim has landed; its pointer write is stalled
		resB, _, errB := s.Update(ctx, "acme", "Patient", "p", patient("p", "B"), WriteOptions{})
		<-done
		if errA != nil || errB != nil {
			t.Fatalf("A: %v, B: %v", errA, errB)
		}
		if resA.Version != 2 || resB.Version != 3 {
			t.Fatalf("A got version %d, B %d; want 2 and 3", resA.Version, resB.Version)
		}
		for v, name := range map[string]string{"2": "A", "3": "B"} {
			r, err := s.VRead(ctx, "acme", "Patient", "p", v)
			if err != nil || !bytes.Contains(r.Content, []byte(`"`+name+`"`)) {
				t.Fatalf("version %s = %+v, %v", v, r, err)
			}
		}
		if r, err := s.Read(ctx, "acme", "Patient", "p"); err != nil || r.Version != 3 {
			t.Fatalf("Read = %+v, %v", r, err)
		}
		assertClean(t, s, "acme")
	})
}

// TestConditionalWriteRollsForwardStaleClaim: a conditional writer that
// meets a crashed claim answers 412 but leaves the claim rolled forward,
// so its client re-reads the new version instead of looping.
func TestConditionalWriteRollsForwardStaleClaim(t *testing.T) {
	ctx := t.Context()
	f := storagetest.NewFaulty(newMem())
	s := newStore(t, f)
	if _, _, err := s.Update(ctx, "acme", "Patient", "p", patient("p", "v1"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Crash right after the claim of version 2.
	f.Add(storagetest.Fault{Op: storage.OpPut, KeyContains: "_history/2.json", Nth: 1, Err: storage.ErrUnavailable, AfterWrite: true})
	if _, _, err := s.Update(ctx, "acme", "Patient", "p", patient("p", "crashed"), WriteOptions{}); err == nil {
		t.Fatal("the crashed write succeeded")
	}
	r, err := s.Read(ctx, "acme", "Patient", "p")
	if err != nil || r.Version != 1 {
		t.Fatalf("Read during the unfinished write = %+v, %v", r, err)
	}
	_, _, err = s.Update(ctx, "acme", "Patient", "p", patient("p", "x"), WriteOptions{IfMatch: &Match{Versions: []int{1}}})
	if !errors.Is(err, ErrPreconditionFailed) {
		t.Fatalf("conditional write on a claimed version: %v", err)
	}
	r, err = s.Read(ctx, "acme", "Patient", "p")
	if err != nil || r.Version != 2 || !bytes.Contains(r.Content, []byte(`"crashed"`)) {
		t.Fatalf("Read after the 412 = %+v, %v", r, err)
	}
	if _, _, err := s.Update(ctx, "acme", "Patient", "p", patient("p", "y"), WriteOptions{IfMatch: &Match{Versions: []int{2}}}); err != nil {
		t.Fatalf("conditional write after re-read: %v", err)
	}
	assertClean(t, s, "acme")
}

package fhirstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"fhirbucket/storage"
)

// writeMany writes n versions spread over ids (round robin), with the
// clock advancing by step per write, in parallel, and returns nothing: the
// test derives expectations from the stored keys.
func writeMany(t testing.TB, s *Store, tenant, typ string, ids []string, n, workers int) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				id := ids[i%len(ids)]
				body := fmt.Appendf(nil, `{"resourceType":%q,"id":%q,"status":"final","code":{"text":"w%d"}}`, typ, id, i)
				if typ == "Patient" {
					body = patient(id, fmt.Sprintf("w%d", i))
				}
				if _, _, err := s.Update(ctx, tenant, typ, id, body, WriteOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for i := range n {
		select {
		case next <- i:
		case err := <-errs:
			close(next)
			wg.Wait()
			t.Fatalf("write: %v", err)
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatalf("write: %v", err)
	default:
	}
}

type entryID struct {
	typ, id string
	version int
}

// pageAll pages through history and checks every page's cost: at most
// Count GETs (+1) and at most maxLists LISTs.
func pageAll(t testing.TB, s *Store, c *storage.Counter, tenant string, q HistoryQuery, maxFirst, maxLists int64) []entryID {
	t.Helper()
	var out []entryID
	for pages := 0; ; pages++ {
		if pages > 100000 {
			t.Fatal("paging does not end")
		}
		var p *HistoryPage
		var err error
		cost := costOf(c, func() { p, err = s.History(t.Context(), tenant, q) })
		if err != nil {
			t.Fatalf("History %+v: %v", q, err)
		}
		if len(p.Entries) > q.Count {
			t.Fatalf("page of %d entries for Count %d", len(p.Entries), q.Count)
		}
		limit := maxLists
		if pages == 0 && q.Cursor == "" {
			limit = maxFirst
		}
		if cost.Get > int64(q.Count)+1 || cost.List > limit || cost.Put+cost.Head+cost.Delete != 0 {
			t.Errorf("page %d of %+v cost %+v (Count %d, at most %d LISTs)", pages, q, cost, q.Count, limit)
		}
		if testing.Verbose() {
			t.Logf("page %d: %d entries, %+v", pages, len(p.Entries), cost)
		}
		for _, e := range p.Entries {
			out = append(out, entryID{e.Type, e.ID, e.Version})
		}
		if p.Next == "" {
			return out
		}
		q.Cursor = p.Next
	}
}

// expectedEvents derives the newest-first history from the event keys
// themselves (key order is time order).
func expectedEvents(t testing.TB, b storage.Bucket, base, prefix string, since int64) []entryID {
	t.Helper()
	var out []entryID
	for a, err := range storage.Walk(t.Context(), b, storage.ListOptions{Prefix: base + prefix}) {
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(a.Key, base+prefix)
		withType := prefix == systemEventPrefix
		r, ok := parseEventName(name, withType)
		if !ok {
			t.Fatalf("bad event key %s", a.Key)
		}
		if !withType {
			r.typ = strings.TrimSuffix(strings.TrimPrefix(prefix, "history/type/"), "/")
		}
		if r.ts >= since {
			out = append(out, entryID{r.typ, r.id, r.version})
		}
	}
	slices.Reverse(out)
	return out
}

func TestHistoryPaging(t *testing.T) {
	eachBackend(t, func(t *testing.T, bk backend) {
		ctx := t.Context()
		inner := bk.Open(t)
		c := storage.NewCounter(inner)
		clk := &fakeClock{t: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)}
		s := newStore(t, c, withClock(clk))

		// Phase 1: one resource with many versions, 7 ms apart.
		nInst := s3Sized(bk, 1100, 120)
		clk.SetStep(7 * time.Millisecond)
		writeMany(t, s, "acme", "Patient", []string{"p"}, nInst, 1)
		// Phase 2: many writes in the same millisecond (clock frozen).
		clk.SetStep(0)
		clk.Set(clk.Now().Add(time.Second))
		nSame := s3Sized(bk, 1300, 60)
		writeMany(t, s, "acme", "Observation", []string{"o1", "o2", "o3", "o4", "o5"}, nSame, 8)
		// Phase 3: a gap of a month, then sparse writes of a second type.
		clk.Set(clk.Now().Add(30 * 24 * time.Hour))
		clk.SetStep(3 * time.Second)
		writeMany(t, s, "acme", "Patient", []string{"a", "b"}, 40, 2)
		sinceTime := clk.Now()
		writeMany(t, s, "acme", "Patient", []string{"c"}, 15, 1)
		// Pages must not depend on the wall clock: "now" is far later.
		clk.Set(clk.Now().Add(48 * time.Hour))

		// Instance level: versions nInst..1, newest first.
		got := pageAll(t, s, c, "acme", HistoryQuery{Type: "Patient", ID: "p", Count: 97}, 0, 0)
		if len(got) != nInst {
			t.Fatalf("instance history has %d entries, want %d", len(got), nInst)
		}
		for i, e := range got {
			if e.version != nInst-i || e.id != "p" {
				t.Fatalf("instance entry %d = %+v", i, e)
			}
		}

		// Type and system level, with page sizes that split the same-ms run.
		for _, tc := range []struct {
			name   string
			q      HistoryQuery
			prefix string
		}{
			{"type Observation", HistoryQuery{Type: "Observation", Count: 101}, typeEventPrefix("Observation")},
			{"type Patient", HistoryQuery{Type: "Patient", Count: 250}, typeEventPrefix("Patient")},
			{"system", HistoryQuery{Count: 333}, systemEventPrefix},
			{"system small pages", HistoryQuery{Count: 17}, systemEventPrefix},
			{"system since", HistoryQuery{Count: 4, Since: sinceTime}, systemEventPrefix},
			{"type since", HistoryQuery{Type: "Patient", Count: 1000, Since: sinceTime.Add(-time.Nanosecond)}, typeEventPrefix("Patient")},
		} {
			want := expectedEvents(t, inner, "acme/", tc.prefix, sinceMS(tc.q.Since))
			// A store that has seen nothing (another process) pays for
			// finding the newest events once, on its first page.
			cold := newStore(t, c, withClock(clk))
			got := pageAll(t, cold, c, "acme", tc.q, 24, 16)
			if !slices.Equal(got, want) {
				t.Errorf("%s: %d entries, want %d; first differences: %v", tc.name, len(got), len(want), firstDiff(got, want))
			}
			seen := map[entryID]bool{}
			for _, e := range got {
				if seen[e] {
					t.Errorf("%s: %+v listed twice", tc.name, e)
				}
				seen[e] = true
			}
		}
		if n := len(expectedEvents(t, inner, "acme/", systemEventPrefix, 0)); n != nInst+nSame+55 {
			t.Errorf("system history has %d events, want %d", n, nInst+nSame+55)
		}
		// _since at instance level stops at the first older version.
		p, err := s.History(ctx, "acme", HistoryQuery{Type: "Patient", ID: "c", Since: sinceTime, Count: 10})
		if err != nil || len(p.Entries) != 10 || p.Next == "" {
			t.Fatalf("instance since page 1: %d entries, next %q, %v", len(p.Entries), p.Next, err)
		}
		p, err = s.History(ctx, "acme", HistoryQuery{Type: "Patient", ID: "c", Since: sinceTime, Count: 10, Cursor: p.Next})
		if err != nil || len(p.Entries) != 5 || p.Next != "" {
			t.Fatalf("instance since page 2: %d entries, next %q, %v", len(p.Entries), p.Next, err)
		}
		p, err = s.History(ctx, "acme", HistoryQuery{Type: "Patient", ID: "a", Since: sinceTime, Count: 10})
		if err != nil || len(p.Entries) != 0 {
			t.Fatalf("instance since before any version: %d entries, %v", len(p.Entries), err)
		}
		if _, err := s.History(ctx, "acme", HistoryQuery{Type: "Patient", ID: "zz"}); err == nil {
			t.Fatal("instance history of a missing resource succeeded")
		}
		// Empty levels.
		if p, err := s.History(ctx, "acme", HistoryQuery{Type: "Encounter"}); err != nil || len(p.Entries) != 0 || p.Next != "" {
			t.Fatalf("empty type history = %+v, %v", p, err)
		}
		if p, err := s.History(ctx, "other", HistoryQuery{}); err != nil || len(p.Entries) != 0 || p.Next != "" {
			t.Fatalf("empty system history = %+v, %v", p, err)
		}
	})
}

func firstDiff(got, want []entryID) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			return fmt.Sprintf("at %d got %+v want %+v", i, got[i], want[i])
		}
	}
	return fmt.Sprintf("lengths %d vs %d", len(got), len(want))
}

// TestHistoryIncludesTombstones: deletes appear in every level.
func TestHistoryIncludesTombstones(t *testing.T) {
	ctx := t.Context()
	s := newStore(t, newMem())
	r, err := s.Create(ctx, "acme", "Patient", patient("", "x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, "acme", "Patient", r.ID, WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, q := range []HistoryQuery{{}, {Type: "Patient"}, {Type: "Patient", ID: r.ID}} {
		p, err := s.History(ctx, "acme", q)
		if err != nil || len(p.Entries) != 2 || !p.Entries[0].Deleted() || p.Entries[1].Deleted() || p.Entries[0].Version != 2 {
			t.Errorf("%+v: %+v, %v", q, p, err)
		}
	}
}

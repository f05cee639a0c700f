package fhirstore

import (
	"fmt"
	"slices"
	"testing"

	"fhirbucket/storage"
)

func TestList(t *testing.T) {
	eachBackend(t, func(t *testing.T, bk backend) {
		ctx := t.Context()
		c := storage.NewCounter(bk.Open(t))
		s := newStore(t, c)
		n := s3Sized(bk, 45, 25)
		var want []string
		for i := range n {
			id := fmt.Sprintf("p%03d", i)
			if _, _, err := s.Update(ctx, "acme", "Patient", id, patient(id, "x"), WriteOptions{}); err != nil {
				t.Fatal(err)
			}
			if i%4 == 1 {
				if _, err := s.Delete(ctx, "acme", "Patient", id, WriteOptions{}); err != nil {
					t.Fatal(err)
				}
				continue
			}
			want = append(want, id)
		}
		// Another type and a tombstone-only listing must not leak in.
		if _, err := s.Create(ctx, "acme", "Observation", []byte(`{"resourceType":"Observation","status":"final","code":{"text":"x"}}`)); err != nil {
			t.Fatal(err)
		}
		var got []string
		q := ListQuery{Count: 7}
		for pages := 0; ; pages++ {
			var p *ListPage
			var err error
			cost := costOf(c, func() { p, err = s.List(ctx, "acme", "Patient", q) })
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Resources) > 7 || (p.Next != "" && len(p.Resources) != 7) {
				t.Fatalf("page %d has %d resources, next %q", pages, len(p.Resources), p.Next)
			}
			// Each id listed costs one GET; tombstones make a page list more.
			if cost.Put != 0 || cost.List > 3 || cost.Get > 14 {
				t.Errorf("page %d cost %+v", pages, cost)
			}
			for _, r := range p.Resources {
				if r.Deleted() || r.Type != "Patient" {
					t.Fatalf("listed %+v", r)
				}
				got = append(got, r.ID)
			}
			if p.Next == "" {
				break
			}
			q.Cursor = p.Next
		}
		if !slices.Equal(got, want) {
			t.Fatalf("listed %v\nwant %v", got, want)
		}
		if cnt, err := s.Count(ctx, "acme", "Patient"); err != nil || cnt != len(want) {
			t.Fatalf("Count = %d, %v; want %d", cnt, err, len(want))
		}
		// _id filter: direct reads, tombstones and unknown ids dropped.
		p, err := s.List(ctx, "acme", "Patient", ListQuery{IDs: []string{"p002", "p001", "nope", "p000", "p002", "bad id"}})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range p.Resources {
			ids = append(ids, r.ID)
		}
		if !slices.Equal(ids, []string{"p000", "p002"}) || p.Next != "" {
			t.Fatalf("_id list = %v, next %q", ids, p.Next)
		}
		if p, err := s.List(ctx, "acme", "Encounter", ListQuery{}); err != nil || len(p.Resources) != 0 || p.Next != "" {
			t.Fatalf("empty type = %+v, %v", p, err)
		}
	})
}

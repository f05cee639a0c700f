package fhirstore

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"fhirbucket/storage"
)

// TestTenancyIsolation writes the same type/id in two tenants and checks
// that no operation ever mixes them, in prefix and in bucket mode.
func TestTenancyIsolation(t *testing.T) {
	eachBackend(t, func(t *testing.T, bk backend) {
		modes := []struct {
			name string
			cfg  func(t *testing.T) Config
		}{
			{"prefix", func(t *testing.T) Config { return Config{Bucket: bk.Open(t), Prefix: "g"} }},
			{"bucket", func(t *testing.T) Config {
				return Config{Mode: TenancyBucket, Prefix: "g", TenantBuckets: map[string]storage.Bucket{"t1": bk.Open(t), "t2": bk.Open(t)}}
			}},
		}
		for _, m := range modes {
			t.Run(m.name, func(t *testing.T) {
				ctx := t.Context()
				cfg := m.cfg(t)
				cfg.Validator = testValidator(t)
				s, err := New(cfg)
				if err != nil {
					t.Fatal(err)
				}
				// t1: p (2 versions) and q; t2: p (3 versions, deleted).
				for _, w := range []struct{ tenant, id, name string }{
					{"t1", "p", "t1-a"}, {"t2", "p", "t2-a"}, {"t1", "p", "t1-b"}, {"t2", "p", "t2-b"}, {"t1", "q", "t1-q"},
				} {
					if _, _, err := s.Update(ctx, w.tenant, "Patient", w.id, patient(w.id, w.name), WriteOptions{}); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := s.Delete(ctx, "t2", "Patient", "p", WriteOptions{}); err != nil {
					t.Fatal(err)
				}
				r, err := s.Read(ctx, "t1", "Patient", "p")
				if err != nil || r.Version != 2 || r.Tenant != "t1" || !bytes.Contains(r.Content, []byte("t1-b")) {
					t.Fatalf("t1 read = %+v, %v", r, err)
				}
				if r, err := s.Read(ctx, "t2", "Patient", "p"); !errors.Is(err, ErrGone) || r.Version != 3 || r.Tenant != "t2" {
					t.Fatalf("t2 read = %+v, %v", r, err)
				}
				if _, err := s.Read(ctx, "t2", "Patient", "q"); !errors.Is(err, ErrNotFound) {
					t.Fatalf("t2 sees t1's q: %v", err)
				}
				if r, err := s.VRead(ctx, "t2", "Patient", "p", "1"); err != nil || !bytes.Contains(r.Content, []byte("t2-a")) {
					t.Fatalf("t2 vread = %+v, %v", r, err)
				}
				if _, err := s.VRead(ctx, "t1", "Patient", "p", "3"); !errors.Is(err, ErrNotFound) {
					t.Fatalf("t1 vread 3: %v", err)
				}
				if vs, _ := s.Versions(ctx, "t1", "Patient", "p"); !slices.Equal(vs, []int{1, 2}) {
					t.Fatalf("t1 versions %v", vs)
				}
				if vs, _ := s.Versions(ctx, "t2", "Patient", "p"); !slices.Equal(vs, []int{1, 2, 3}) {
					t.Fatalf("t2 versions %v", vs)
				}
				l1, err := s.List(ctx, "t1", "Patient", ListQuery{})
				if err != nil || len(l1.Resources) != 2 || l1.Resources[0].Tenant != "t1" || l1.Resources[1].ID != "q" {
					t.Fatalf("t1 list = %+v, %v", l1, err)
				}
				if l2, err := s.List(ctx, "t2", "Patient", ListQuery{}); err != nil || len(l2.Resources) != 0 {
					t.Fatalf("t2 list = %+v, %v", l2, err)
				}
				if n, err := s.Count(ctx, "t1", "Patient"); err != nil || n != 2 {
					t.Fatalf("t1 count = %d, %v", n, err)
				}
				if n, err := s.Count(ctx, "t2", "Patient"); err != nil || n != 0 {
					t.Fatalf("t2 count = %d, %v", n, err)
				}
				for _, tc := range []struct {
					tenant string
					q      HistoryQuery
					want   int
				}{
					{"t1", HistoryQuery{}, 3}, {"t2", HistoryQuery{}, 3},
					{"t1", HistoryQuery{Type: "Patient"}, 3}, {"t2", HistoryQuery{Type: "Patient"}, 3},
					{"t1", HistoryQuery{Type: "Patient", ID: "p"}, 2}, {"t2", HistoryQuery{Type: "Patient", ID: "p"}, 3},
				} {
					p, err := s.History(ctx, tc.tenant, tc.q)
					if err != nil || len(p.Entries) != tc.want {
						t.Fatalf("%s history %+v: %d entries, %v; want %d", tc.tenant, tc.q, len(p.Entries), err, tc.want)
					}
					for _, e := range p.Entries {
						if e.Tenant != tc.tenant || !bytes.Contains(e.Content, []byte(tc.tenant+"-")) {
							t.Fatalf("%s history %+v has %+v", tc.tenant, tc.q, e)
						}
					}
				}
				tenants, err := s.Tenants(ctx)
				if err != nil || !slices.Equal(tenants, []string{"t1", "t2"}) {
					t.Fatalf("Tenants = %v, %v", tenants, err)
				}
				for _, tn := range []string{"t1", "t2"} {
					assertClean(t, s, tn)
				}
				if m.name == "bucket" {
					if _, err := s.Read(ctx, "t3", "Patient", "p"); !errors.Is(err, ErrInvalidTenant) {
						t.Fatalf("unmapped tenant: %v", err)
					}
					if _, err := s.TenantBucket("t3"); !errors.Is(err, ErrInvalidTenant) {
						t.Fatalf("TenantBucket of an unmapped tenant: %v", err)
					}
				}
			})
		}
	})
}

// TestTenantBucketKeys: the tenant base is G/{tenant}/ (prefix mode) or G/
// (bucket mode).
func TestTenantBucketKeys(t *testing.T) {
	ctx := t.Context()
	shared, own := newMem(), newMem()
	for _, tc := range []struct {
		cfg  Config
		b    storage.Bucket
		want string
	}{
		{Config{Bucket: shared, Prefix: "/g/h/"}, shared, "g/h/acme/resources/Patient/p/current.json"},
		{Config{Bucket: shared}, shared, "acme/resources/Patient/p/current.json"},
		{Config{Mode: TenancyBucket, TenantBuckets: map[string]storage.Bucket{"acme": own}, Prefix: "g"}, own, "g/resources/Patient/p/current.json"},
	} {
		tc.cfg.Validator = testValidator(t)
		s, err := New(tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Update(ctx, "acme", "Patient", "p", patient("p", "x"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := storage.ReadAll(ctx, tc.b, tc.want); err != nil {
			t.Errorf("%+v: %s: %v", tc.cfg, tc.want, err)
		}
		tb, err := s.TenantBucket("acme")
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := storage.ReadAll(ctx, tb, "resources/Patient/p/current.json"); err != nil {
			t.Errorf("TenantBucket does not see the tenant's keys: %v", err)
		}
	}
}

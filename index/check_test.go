package index

import (
	"bytes"
	"slices"
	"testing"

	"fhirbucket/fhirstore"
	"fhirbucket/internal/layout"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage"
)

// TestCheckRepairsStaleEntries: entries of a replaced version, of a
// deleted resource and of an identifier the current version does not
// carry are reported and, with repair, deleted; an entry above the
// highest version (a write in flight) and the current entries are left;
// searches answer the same before and after. On every backend.
func TestCheckRepairsStaleEntries(t *testing.T) {
	testenv.EachBackend(t, func(t *testing.T, bk testenv.Backend) {
		e := newEnv(t, bk.Open(t))
		ctx := t.Context()
		a, err := e.store.Create(ctx, tenant, "Patient", patient(Identifier{sysA, "old"}))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := e.store.Update(ctx, tenant, "Patient", a.ID, withBodyID(patient(Identifier{sysA, "new"}), a.ID), fhirstore.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		gone, err := e.store.Create(ctx, tenant, "Patient", patient(Identifier{sysA, "gone"}))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.store.Delete(ctx, tenant, "Patient", gone.ID, fhirstore.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		b, err := e.store.TenantBucket(tenant)
		if err != nil {
			t.Fatal(err)
		}
		key := func(sys, val, id string, v int) string {
			return layout.IdentifierEntryKey("Patient", layout.IdentifierValueHash(val), layout.IdentifierSystemHash(sys), id, v)
		}
		put := func(k string) {
			if _, err := b.Put(ctx, k, bytes.NewReader([]byte("{}")), storage.PutOptions{ContentType: "application/json", Size: 2}); err != nil {
				t.Fatal(err)
			}
		}
		stale := []string{
			key(sysA, "old", a.ID, 1),     // the replaced version (its delete failed)
			key(sysB, "new", a.ID, 2),     // current version, identifier it does not carry
			key(sysA, "gone", gone.ID, 1), // a deleted resource
		}
		inFlight := key(sysA, "new", a.ID, 3) // above the highest version
		for _, k := range append(stale, inFlight) {
			put(k)
		}
		before := [][]string{e.ids(t, tok(t, sysA+"|old")), e.ids(t, tok(t, "new")), e.ids(t, tok(t, sysA+"|gone"))}

		probs, err := e.ix.Check(ctx, tenant, false)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range probs {
			if p.Kind != ProblemStaleEntry || p.Repaired {
				t.Errorf("problem %+v", p)
			}
			got = append(got, p.Key)
			t.Log(p.Key, p.Detail)
		}
		want := append([]string(nil), stale...)
		slices.Sort(want)
		if !same(got, want) {
			t.Fatalf("stale entries %v, want %v", got, want)
		}
		if probs, err = e.ix.Check(ctx, tenant, true); err != nil || len(probs) != 3 {
			t.Fatalf("repair: %v, %d problems", err, len(probs))
		}
		for _, p := range probs {
			if !p.Repaired {
				t.Errorf("not repaired: %+v", p)
			}
		}
		if probs, err = e.ix.Check(ctx, tenant, false); err != nil || len(probs) != 0 {
			t.Fatalf("after repair: %v, %+v", err, probs)
		}
		for _, k := range stale {
			if _, err := b.Stat(ctx, k); err == nil {
				t.Errorf("%s still exists", k)
			}
		}
		if _, err := b.Stat(ctx, inFlight); err != nil {
			t.Errorf("the entry above the highest version was removed: %v", err)
		}
		after := [][]string{e.ids(t, tok(t, sysA+"|old")), e.ids(t, tok(t, "new")), e.ids(t, tok(t, sysA+"|gone"))}
		for i := range before {
			if !same(before[i], after[i]) {
				t.Errorf("search %d: %v before, %v after", i, before[i], after[i])
			}
		}
		if !same(after[1], []string{a.ID}) {
			t.Errorf("new identifier finds %v, want [%s]", after[1], a.ID)
		}
	})
}

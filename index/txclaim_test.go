package index

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"fhirbucket/fhirstore"
	"fhirbucket/storage/memstore"
)

// TestClaimCreates: the claims of a transaction's conditional creates
// keep a single conditional create of another replica out while held
// (renewed past the TTL); released after the commit, the other finds the
// transaction's resource; abandoned, whoever takes the claim over creates
// the recorded id, or answers with it when the transaction created it. A
// match needs no claim; two creates of one identifier are refused.
func TestClaimCreates(t *testing.T) {
	const ttl = 60 * time.Millisecond
	for _, c := range []struct {
		name            string
		create, release bool
	}{
		{"committed and released", true, true},
		{"abandoned after creating", true, false},
		{"abandoned before creating", false, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := memstore.New()
			tx, other := newEnv(t, b), newEnv(t, b)
			tx.ix.ttl, other.ix.ttl = ttl, ttl
			ctx := t.Context()
			if err := tx.ix.Complete(ctx, tenant); err != nil {
				t.Fatal(err)
			}
			crt := crit(t, "identifier="+sysA+"|tx1")
			res, claims, err := tx.ix.ClaimCreates(ctx, tenant, []CreateClaim{{Type: "Patient", Criteria: crt, ID: "txid"}})
			if err != nil || len(res) != 1 || len(res[0].Matches) != 0 || res[0].ID != "txid" {
				t.Fatalf("ClaimCreates: %+v, %v", res, err)
			}
			// Held, and renewed past its TTL.
			other.ix.wait = 4 * ttl
			if _, _, err := other.ix.CreateIfNoneExist(ctx, tenant, "Patient", crt, patient(Identifier{sysA, "tx1"})); !errors.Is(err, ErrBusy) {
				t.Fatalf("conditional create while the transaction holds the claim: %v, want ErrBusy", err)
			}
			if c.create {
				if _, _, err := tx.store.Apply(ctx, tenant, fhirstore.Change{Type: "Patient", ID: "txid", Method: fhirstore.MethodPost, Content: patient(Identifier{sysA, "tx1"})}); err != nil {
					t.Fatal(err)
				}
			}
			if c.release {
				claims.Release(ctx)
			} else {
				claims.Abandon()
			}
			other.ix.wait = DefaultClaimWait
			got, created, err := other.ix.CreateIfNoneExist(ctx, tenant, "Patient", crt, patient(Identifier{sysA, "tx1"}))
			if err != nil || got.ID != "txid" || created == c.create {
				t.Fatalf("conditional create after: %+v created %v, %v; want txid, created %v", got, created, err, !c.create)
			}
			if ids := other.ids(t, crt); !same(ids, []string{"txid"}) {
				t.Fatalf("search finds %v", ids)
			}
			// Now it matches: no claim is taken.
			res, claims, err = tx.ix.ClaimCreates(ctx, tenant, []CreateClaim{{Type: "Patient", Criteria: crt, ID: "another"}})
			if err != nil || len(res[0].Matches) != 1 || res[0].Matches[0].ID != "txid" {
				t.Fatalf("ClaimCreates of an existing identifier: %+v, %v", res, err)
			}
			claims.Release(ctx)
		})
	}
	t.Run("one identifier twice", func(t *testing.T) {
		e := newEnv(t, memstore.New())
		crt := crit(t, fmt.Sprintf("identifier=%s|d", sysA))
		_, _, err := e.ix.ClaimCreates(t.Context(), tenant, []CreateClaim{{Type: "Patient", Criteria: crt, ID: "a"}, {Type: "Patient", Criteria: crt, ID: "b"}})
		if !errors.Is(err, fhirstore.ErrInvalid) {
			t.Fatalf("two creates of one identifier: %v, want ErrInvalid", err)
		}
	})
}

package bench

import (
	"testing"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage/memstore"
)

// TestWriteHistoryIsTheLayout checks that a history written directly is
// exactly what fhirstore writes: Verify finds no problem, and fhirstore
// reads, pages and extends it.
func TestWriteHistoryIsTheLayout(t *testing.T) {
	v := testenv.Validator(t)
	for _, n := range []int{1, 2, 37} {
		st, err := fhirstore.New(fhirstore.Config{Bucket: memstore.New(), Validator: v})
		if err != nil {
			t.Fatal(err)
		}
		const tenant, id = "t1", "p1"
		tb, err := st.TenantBucket(tenant)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeHistory(t.Context(), tb, tenant, "Patient", id, n, time.Now().Add(-time.Hour), costBody, 4); err != nil {
			t.Fatal(err)
		}
		rep, err := st.Verify(t.Context(), tenant, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Problems) > 0 || rep.Versions != n || rep.Events != 2*n {
			t.Fatalf("n=%d: Verify: %d versions, %d events, problems %+v", n, rep.Versions, rep.Events, rep.Problems)
		}
		res, err := st.Read(t.Context(), tenant, "Patient", id)
		if err != nil || res.Version != n {
			t.Fatalf("n=%d: Read: %v, %+v", n, err, res)
		}
		body, err := fhir.SetMeta(costBody, id, "1", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if res, _, err = st.Update(t.Context(), tenant, "Patient", id, body, fhirstore.WriteOptions{}); err != nil || res.Version != n+1 {
			t.Fatalf("n=%d: Update on top: %v, %+v", n, err, res)
		}
		for _, q := range []fhirstore.HistoryQuery{{Type: "Patient", ID: id}, {Type: "Patient"}, {}} {
			hp, err := st.History(t.Context(), tenant, fhirstore.HistoryQuery{Type: q.Type, ID: q.ID, Count: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if len(hp.Entries) != n+1 || hp.Entries[0].Version != n+1 || hp.Entries[n].Version != 1 {
				t.Fatalf("n=%d: history %+v: %d entries", n, q, len(hp.Entries))
			}
		}
	}
}

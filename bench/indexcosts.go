package bench

import (
	"context"
	"fmt"

	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/index"
)

// patientWith is a Patient carrying n identifiers of system s.
func patientWith(s string, n int) []byte {
	ids := ""
	for i := range n {
		if i > 0 {
			ids += ","
		}
		ids += fmt.Sprintf(`{"system":%q,"value":"v%d"}`, s, i)
	}
	return []byte(`{"resourceType":"Patient","identifier":[` + ids + `],"name":[{"family":"Cost"}]}`)
}

// indexCosts counts the requests of writes with 0, 1 and 3 identifiers on
// a store that keeps the identifier index, of a lookup by identifier, and
// of a conditional create with and without a match.
func (r *runner) indexCosts(ctx context.Context, v *fhir.Validator) error {
	st, err := fhirstore.New(fhirstore.Config{Bucket: r.raw, Prefix: "fhir", Validator: v, Indexer: &index.Keys{}})
	if err != nil {
		return err
	}
	ix, err := index.New(index.Config{Store: st, Owner: "bench", Validator: v})
	if err != nil {
		return err
	}
	on := r.cfg.Backend.Kind
	const tenant = "costs-index"
	// The first write of a tenant in a process checks (and here writes)
	// the completeness marker: pay it outside the rows.
	if _, err := st.Create(ctx, tenant, "Patient", patientWith("urn:bench:warm", 1)); err != nil {
		return err
	}
	crit, err := index.ParseCriteria("identifier=urn:bench:one|v0")
	if err != nil {
		return err
	}
	// So does its first lookup (the marker is then known in-process).
	if _, err := ix.Search(ctx, tenant, "Patient", crit); err != nil {
		return err
	}
	fresh, err := index.ParseCriteria("identifier=urn:bench:fresh|v0")
	if err != nil {
		return err
	}
	steps := []struct {
		op string
		f  func() error
	}{
		{"create, 0 identifiers (index kept)", func() error { _, err := st.Create(ctx, tenant, "Patient", patientWith("", 0)); return err }},
		{"create, 1 identifier", func() error { _, err := st.Create(ctx, tenant, "Patient", patientWith("urn:bench:one", 1)); return err }},
		{"create, 3 identifiers", func() error {
			_, err := st.Create(ctx, tenant, "Patient", patientWith("urn:bench:three", 3))
			return err
		}},
		{"search by identifier (1 match)", func() error {
			got, err := ix.Search(ctx, tenant, "Patient", crit)
			if err == nil && len(got) != 1 {
				err = fmt.Errorf("%d matches, want 1", len(got))
			}
			return err
		}},
		{"conditional create, 1 match (nothing written)", func() error {
			_, created, err := ix.CreateIfNoneExist(ctx, tenant, "Patient", crit, patientWith("urn:bench:one", 1))
			if err == nil && created {
				err = fmt.Errorf("created a second resource")
			}
			return err
		}},
		{"conditional create, no match", func() error {
			_, created, err := ix.CreateIfNoneExist(ctx, tenant, "Patient", fresh, patientWith("urn:bench:fresh", 1))
			if err == nil && !created {
				err = fmt.Errorf("did not create")
			}
			return err
		}},
	}
	for _, s := range steps {
		if err := r.measureCost(r.raw, s.op, on, 0, s.f); err != nil {
			return err
		}
	}
	return nil
}

package bench

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/storage/memstore"
)

// costBody is the resource of the request-cost rows: what is counted is
// requests, which do not depend on the body.
var costBody = []byte(`{"resourceType":"Patient","active":true,"name":[{"family":"Cost","given":["Request"]}],"gender":"unknown","birthDate":"1970-01-01"}`)

// measureCost runs f once and records the requests it made on c.
func (r *runner) measureCost(c *counter, op, on string, size int, f func() error) error {
	before := c.snapshot()
	t0 := time.Now()
	if err := f(); err != nil {
		return fmt.Errorf("bench: %s: %w", op, err)
	}
	d := time.Since(t0)
	n := c.snapshot().sub(before)
	r.report.Requests = append(r.report.Requests, RequestRow{
		Op: op, HistorySize: size, MeasuredOn: on,
		Get: n[kGet], Put: n[kPut], CondPut: n[kCondPut], Head: n[kHead], List: n[kList], Delete: n[kDelete],
		Total: n.total(), Millis: float64(d) / float64(time.Millisecond),
	})
	return nil
}

func (r *runner) requestCosts(ctx context.Context, v *fhir.Validator) error {
	st, err := r.newStore(v)
	if err != nil {
		return err
	}
	on := r.cfg.Backend.Kind
	const tenant = "costs"
	var res *fhirstore.Resource
	steps := []struct {
		op string
		f  func() error
	}{
		{"create", func() (err error) { res, err = st.Create(ctx, tenant, "Patient", costBody); return err }},
		{"read", func() error { _, err := st.Read(ctx, tenant, "Patient", res.ID); return err }},
		{"vread", func() error { _, err := st.VRead(ctx, tenant, "Patient", res.ID, "1"); return err }},
		{"update", func() error {
			body, err := fhir.SetMeta(costBody, res.ID, "1", time.Now())
			if err != nil {
				return err
			}
			_, _, err = st.Update(ctx, tenant, "Patient", res.ID, body, fhirstore.WriteOptions{})
			return err
		}},
		{"delete", func() error {
			_, err := st.Delete(ctx, tenant, "Patient", res.ID, fhirstore.WriteOptions{})
			return err
		}},
	}
	for _, s := range steps {
		if err := r.measureCost(r.raw, s.op, on, 0, s.f); err != nil {
			return err
		}
	}
	if err := r.indexCosts(ctx, v); err != nil {
		return err
	}

	var mem *counter
	var memStore *fhirstore.Store
	for _, n := range r.cfg.HistorySizes {
		c, hs, hon := r.raw, st, on
		if n > r.cfg.HistoryOnBackendMax && on != "memory" {
			if mem == nil {
				mem = &counter{Bucket: memstore.New()}
				if memStore, err = fhirstore.New(fhirstore.Config{Bucket: mem, Validator: v}); err != nil {
					return err
				}
			}
			c, hs, hon = mem, memStore, "memory"
		}
		if err := r.historyCosts(ctx, c, hs, hon, n); err != nil {
			return err
		}
	}
	return nil
}

// historyCosts builds a tenant whose one Patient has n versions (so n
// instance, type and system history events) and counts the requests of a
// history page at each level.
func (r *runner) historyCosts(ctx context.Context, c *counter, st *fhirstore.Store, on string, n int) error {
	tenant := "hist-" + strconv.Itoa(n)
	page := r.cfg.HistoryPage
	t0 := time.Now()
	// The oldest versions are written directly (see writeHistory); the
	// newest two pages' worth through fhirstore, as a server would.
	viaStore := min(n-1, 2*page)
	direct := n - viaStore
	id := "history-" + strconv.Itoa(n)
	tb, err := st.TenantBucket(tenant)
	if err != nil {
		return err
	}
	first := time.Now().Add(-time.Duration(direct+1000) * time.Millisecond)
	if err := writeHistory(ctx, tb, tenant, "Patient", id, direct, first, costBody, 32); err != nil {
		return fmt.Errorf("bench: writing a history of %d: %w", n, err)
	}
	body, err := fhir.SetMeta(costBody, id, "1", time.Now())
	if err != nil {
		return err
	}
	for i := range viaStore {
		if _, _, err := st.Update(ctx, tenant, "Patient", id, body, fhirstore.WriteOptions{}); err != nil {
			return fmt.Errorf("bench: building a history of %d (version %d): %w", n, direct+i+1, err)
		}
	}
	r.log.Info("built history", "size", n, "on", on, "seconds", time.Since(t0).Seconds())
	res := &fhirstore.Resource{ID: id}
	for _, lvl := range []struct {
		name string
		q    fhirstore.HistoryQuery
	}{
		{"history-instance page", fhirstore.HistoryQuery{Type: "Patient", ID: res.ID, Count: page}},
		{"history-type page", fhirstore.HistoryQuery{Type: "Patient", Count: page}},
		{"history-system page", fhirstore.HistoryQuery{Count: page}},
	} {
		var hp *fhirstore.HistoryPage
		err := r.measureCost(c, lvl.name, on, n, func() (err error) {
			hp, err = st.History(ctx, tenant, lvl.q)
			if err == nil && len(hp.Entries) != min(n, page) {
				err = fmt.Errorf("%d entries, want %d", len(hp.Entries), min(n, page))
			}
			return err
		})
		if err != nil {
			return err
		}
		if hp.Next == "" {
			continue
		}
		q := lvl.q
		q.Cursor = hp.Next
		if err := r.measureCost(c, lvl.name+" 2", on, n, func() error {
			_, err := st.History(ctx, tenant, q)
			return err
		}); err != nil {
			return err
		}
	}
	return nil
}

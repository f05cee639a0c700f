package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"fhirbucket/bulk"
	"fhirbucket/bulk/export"
	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/storage"
)

// DefaultExportResources is the size of the export cell: small enough
// that a full run stays a few minutes on a small S3 server (seeding costs
// one FHIR update per resource).
const DefaultExportResources = 10_000

// ExportRow is the bulk export cell: a system export of Resources
// resources, timed from the kick-off to the complete manifest.
type ExportRow struct {
	Resources int     `json:"resources"`
	Types     int     `json:"types"`
	Files     int     `json:"files"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"resources_per_second"`
	// Parallel is the export's GETs in flight; RawGetPerS the raw GET
	// rate of this run at that concurrency; Ratio PerSecond ÷ RawGetPerS
	// (goal ≥ 0.7).
	Parallel   int     `json:"parallel"`
	RawGetPerS float64 `json:"raw_get_per_second"`
	Ratio      float64 `json:"ratio"`
	// Object-store calls of the export per exported resource, by kind
	// (an upload counts as one PUT at its commit), and the driver's
	// requests on the wire per resource (multipart parts and retries
	// included; 0 when the driver does not count).
	GetPerResource   float64 `json:"get_per_resource"`
	ListPerResource  float64 `json:"list_per_resource"`
	PutPerResource   float64 `json:"put_per_resource"`
	CallsPerResource float64 `json:"calls_per_resource"`
	WirePerResource  float64 `json:"wire_per_resource,omitempty"`
	Calls            counts  `json:"-"`
	// Memory of the bench process (server and load generator in one):
	// PeakRSSMB is the highest VmRSS sampled every 20 ms during the
	// export; HWMBeforeMB and HWMAfterMB are VmHWM (peak since the process
	// started, which cannot be reset) before and after it.
	RSSBeforeMB float64 `json:"rss_before_mb"`
	PeakRSSMB   float64 `json:"peak_rss_mb"`
	HWMBeforeMB float64 `json:"hwm_before_mb"`
	HWMAfterMB  float64 `json:"hwm_after_mb"`
}

// procStatus reads VmRSS and VmHWM of this process in MB (0 when not on
// Linux).
func procStatus() (rss, hwm float64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		kb, _ := strconv.ParseFloat(fields[0], 64)
		if k == "VmRSS" {
			rss = kb / 1024
		} else {
			hwm = kb / 1024
		}
	}
	return rss, hwm
}

// exportBodies are the resources the export cell stores: the official
// examples and the resources of the Synthea records, each stored again
// and again under fresh ids.
func exportBodies(examples []example, dir string) ([]example, error) {
	var out []example
	for _, e := range examples {
		if e.typ != "OperationOutcome" { // never exported: its files are the error files
			out = append(out, e)
		}
	}
	_, syn, _, err := txBundles(examples, dir)
	if err != nil {
		return nil, err
	}
	for _, data := range syn {
		b, err := fhir.ParseBundle(data)
		if err != nil {
			return nil, err
		}
		for _, e := range b.Entry {
			typ, _, err := fhir.Peek(e.Resource)
			if err != nil || typ == "" || typ == "OperationOutcome" {
				continue
			}
			out = append(out, example{typ: typ, body: e.Resource})
		}
	}
	return out, nil
}

// exportCell stores cfg.ExportResources resources in a tenant of their
// own and runs a system export of it, counting its object-store calls.
func (r *runner) exportCell(ctx context.Context, v *fhir.Validator, examples []example) error {
	n := r.cfg.ExportResources
	bodies, err := exportBodies(examples, r.cfg.SyntheaDir)
	if err != nil {
		return err
	}
	st, err := r.newStore(v)
	if err != nil {
		return err
	}
	const tenant = "export"
	par := slicesMax(r.cfg.Concurrency)
	t0 := time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	types := map[string]bool{}
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				e := bodies[i%len(bodies)]
				id := "bx" + strconv.Itoa(i)
				body, err := fhir.SetMeta(e.body, id, "1", time.Now())
				if err == nil {
					_, _, err = st.Update(ctx, tenant, e.typ, id, body, fhirstore.WriteOptions{})
				}
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("bench: storing %s/%s for the export: %w", e.typ, id, err)
				}
				types[e.typ] = true
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r.log.Info("stored the export's resources", "resources", n, "types", len(types), "seconds", time.Since(t0).Seconds())

	svc, err := export.New(export.Config{Store: st, Owner: "bench", Parallel: par, MinPoll: time.Millisecond,
		RetryAfter: 100 * time.Millisecond, Limits: bulk.Limits{}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	if err := svc.Open(ctx); err != nil {
		return err
	}
	defer svc.Close(context.WithoutCancel(ctx))

	runtime.GC()
	debug.FreeOSMemory()
	rssBefore, hwmBefore := procStatus()
	var peak atomic.Int64 // KB
	peak.Store(int64(rssBefore * 1024))
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if rss, _ := procStatus(); int64(rss*1024) > peak.Load() {
					peak.Store(int64(rss * 1024))
				}
			}
		}
	}()
	before := r.raw.snapshot()
	var wireBefore int64
	if r.cfg.WireRequests != nil {
		wireBefore = r.cfg.WireRequests()
	}
	start := time.Now()
	job, err := svc.Kickoff(ctx, tenant, export.Request{Level: export.LevelSystem, URL: "http://bench/$export", Base: "http://bench"})
	if err != nil {
		close(stop)
		return fmt.Errorf("bench: export kick-off: %w", err)
	}
	var man *bulk.Manifest
	for man == nil {
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			close(stop)
			return err
		}
		s, err := svc.Status(ctx, tenant, job, 0)
		switch {
		case errors.Is(err, bulk.ErrPollTooFast):
			continue
		case err != nil:
			close(stop)
			return fmt.Errorf("bench: export status: %w", err)
		case s.Failed:
			close(stop)
			return fmt.Errorf("bench: the export failed: %s", s.JobErr)
		case s.Done:
			man = s.Manifest
		}
	}
	elapsed := time.Since(start)
	close(stop)
	<-sampled
	calls := r.raw.snapshot().sub(before)
	_, hwmAfter := procStatus()
	exported := 0
	for _, f := range man.Output {
		exported += f.Count
	}
	if exported != n {
		return fmt.Errorf("bench: the export holds %d resources, %d were stored", exported, n)
	}
	row := ExportRow{Resources: n, Types: len(types), Files: len(man.Output), Seconds: elapsed.Seconds(),
		PerSecond: float64(n) / elapsed.Seconds(), Parallel: par, Calls: calls,
		GetPerResource: ratio(float64(calls[kGet]), float64(n)), ListPerResource: ratio(float64(calls[kList]), float64(n)),
		PutPerResource:   ratio(float64(calls[kPut]+calls[kCondPut]), float64(n)),
		CallsPerResource: ratio(float64(calls.total()), float64(n)),
		RSSBeforeMB:      rssBefore, PeakRSSMB: float64(peak.Load()) / 1024, HWMBeforeMB: hwmBefore, HWMAfterMB: hwmAfter}
	if r.cfg.WireRequests != nil {
		row.WirePerResource = ratio(float64(r.cfg.WireRequests()-wireBefore), float64(n))
	}
	if m, ok := r.rawRates[rawGet][par]; ok {
		row.RawGetPerS = m.rate()
		row.Ratio = ratio(row.PerSecond, m.rate())
	}
	r.report.Export = &row
	r.log.Info("export", "resources", n, "per_second", int(row.PerSecond), "ratio", fmt.Sprintf("%.2f", row.Ratio),
		"get_per_resource", fmt.Sprintf("%.3f", row.GetPerResource), "peak_rss_mb", int(row.PeakRSSMB))
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// NewUpload keeps the streaming capability of the wrapped bucket (a
// multipart upload on S3); an upload counts as one PUT, at its commit.
func (c *counter) NewUpload(ctx context.Context, key string, opts storage.PutOptions) (storage.Upload, error) {
	u, err := storage.NewUpload(ctx, c.Bucket, key, opts)
	if err != nil {
		return nil, err
	}
	return &countedUpload{Upload: u, c: c}, nil
}

type countedUpload struct {
	storage.Upload
	c *counter
}

func (u *countedUpload) Commit(ctx context.Context) (storage.Attrs, error) {
	u.c.n[kPut].Add(1)
	return u.Upload.Commit(ctx)
}

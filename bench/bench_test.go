package bench_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"fhirbucket/bench"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
)

func smallConfig(t *testing.T) bench.Config {
	return bench.Config{
		Bucket: memstore.New(), Backend: bench.Backend{Kind: "memory"},
		Concurrency: []int{1, 4}, CellDuration: 300 * time.Millisecond, MaxOpsPerCell: 40,
		HistorySizes: []int{3, 120}, HistoryPage: 10, HistoryOnBackendMax: 50,
		ExamplesDir:     testenv.ExamplesDir(),
		ExportResources: 300,
	}
}

// TestSmallRunIsWellFormed checks the shape of the report of a tiny run,
// never its numbers.
func TestSmallRunIsWellFormed(t *testing.T) {
	cfg := smallConfig(t)
	rep, err := bench.Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	data, err := rep.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var back bench.Report
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatalf("the JSON report does not parse: %v", err)
	}

	finite := func(what string, vs ...float64) {
		t.Helper()
		for _, v := range vs {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				t.Errorf("%s: %v is not a finite, non-negative number", what, v)
			}
		}
	}
	if back.Machine.CPUs < 1 || back.Go == "" || back.Backend.Kind != "memory" || back.Date.IsZero() {
		t.Errorf("header incomplete: machine %+v, go %q, backend %+v, date %v", back.Machine, back.Go, back.Backend, back.Date)
	}
	if back.Settings.Examples == 0 || back.Settings.ExampleMeanSize == 0 {
		t.Errorf("settings do not describe the examples: %+v", back.Settings)
	}

	if e := back.Export; e == nil {
		t.Error("no export cell")
	} else {
		finite("export", e.PerSecond, e.RawGetPerS, e.Ratio, e.GetPerResource, e.CallsPerResource, e.PeakRSSMB)
		if e.Resources != cfg.ExportResources || e.Files == 0 || e.PerSecond <= 0 || e.Ratio <= 0 || e.GetPerResource < 1 {
			t.Errorf("export cell incomplete: %+v", e)
		}
	}

	raw := map[string]bool{}
	for _, r := range back.Raw {
		raw[r.Op+"/"+itoa(r.Concurrency)] = true
		if r.Ops == 0 || r.PerSecond <= 0 {
			t.Errorf("raw %s at %d measured nothing: %+v", r.Op, r.Concurrency, r)
		}
		finite("raw "+r.Op, r.PerSecond, r.P50ms, r.P99ms)
	}
	fhirRows := map[string]bench.FHIRRow{}
	for _, f := range back.FHIR {
		fhirRows[f.Op+"/"+itoa(f.Concurrency)] = f
		finite("fhir "+f.Op, f.PerSecond, f.Limit, f.Ratio, f.RequestsPerOp, f.P50ms, f.P99ms)
		if f.Ops == 0 || f.Limit <= 0 || f.Ratio <= 0 || f.Needs == "" {
			t.Errorf("fhir %s at %d incomplete: %+v", f.Op, f.Concurrency, f)
		}
	}
	for _, c := range cfg.Concurrency {
		for _, op := range []string{"put", "put_if_none_match", "get"} {
			if !raw[op+"/"+itoa(c)] {
				t.Errorf("no raw %s row at concurrency %d", op, c)
			}
		}
		for _, op := range []string{"create", "update", "read", "vread"} {
			if _, ok := fhirRows[op+"/"+itoa(c)]; !ok {
				t.Errorf("no FHIR %s row at concurrency %d", op, c)
			}
		}
	}
	// A read is exactly one GET whatever the load.
	if f := fhirRows["read/1"]; f.RequestsPerOp != 1 {
		t.Errorf("read at concurrency 1 made %v requests per op, want 1", f.RequestsPerOp)
	}

	reqs := map[string]bench.RequestRow{}
	for _, r := range back.Requests {
		key := r.Op
		if r.HistorySize > 0 {
			key += "/" + itoa(r.HistorySize)
		}
		reqs[key] = r
		if r.Total != r.Get+r.Put+r.CondPut+r.Head+r.List+r.Delete {
			t.Errorf("%s: total %d is not the sum of its kinds", key, r.Total)
		}
	}
	// The write protocol's documented costs (docs/object-layout.md).
	want := map[string][6]int64{ // get, put, cond put, head, list, delete
		"create": {0, 2, 2, 0, 0, 0},
		"update": {1, 2, 2, 0, 0, 0},
		"delete": {1, 2, 2, 0, 0, 0},
		"read":   {1, 0, 0, 0, 0, 0},
		"vread":  {1, 0, 0, 0, 0, 0},
	}
	for op, w := range want {
		r, ok := reqs[op]
		if !ok {
			t.Errorf("no request row for %s", op)
			continue
		}
		if got := [6]int64{r.Get, r.Put, r.CondPut, r.Head, r.List, r.Delete}; got != w {
			t.Errorf("%s requests = %v, want %v", op, got, w)
		}
	}
	for _, n := range cfg.HistorySizes {
		for _, lvl := range []string{"history-instance page", "history-type page", "history-system page"} {
			r, ok := reqs[lvl+"/"+itoa(n)]
			if !ok {
				t.Errorf("no row for %s over %d events", lvl, n)
				continue
			}
			if r.Total == 0 {
				t.Errorf("%s over %d events made no requests", lvl, n)
			}
			if r.MeasuredOn != "memory" {
				t.Errorf("%s measured on %q", lvl, r.MeasuredOn)
			}
		}
	}
	if _, ok := reqs["history-system page 2/120"]; !ok {
		t.Error("no second system history page for the history larger than a page")
	}
	for _, l := range back.Latency {
		finite("latency "+l.Op, l.P50ms, l.P99ms, l.RawP50ms, l.RawP99ms)
	}
	if len(back.Latency) == 0 {
		t.Error("no latency rows")
	}

	md := rep.Markdown()
	for _, s := range []string{"# fhirbucket benchmark report", "## Raw object-store baseline", "## FHIR over HTTP against the limit",
		"## Object-store requests per operation", "## Latency at concurrency 1", "| create | 1 |", "history-system page"} {
		if !strings.Contains(md, s) {
			t.Errorf("the Markdown report lacks %q", s)
		}
	}
	if strings.Contains(md, "NaN") || strings.Contains(md, "Inf") {
		t.Error("the Markdown report holds NaN or Inf")
	}
}

// TestWireRequests checks that the run reports the driver's wire count
// next to its own calls.
func TestWireRequests(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Concurrency, cfg.MaxOpsPerCell, cfg.HistorySizes = []int{1}, 5, []int{3}
	var calls atomic.Int64
	cfg.Bucket = &countingBucket{Bucket: cfg.Bucket, n: &calls}
	cfg.WireRequests = func() int64 { return calls.Load() + 1000 } // as if 0 retries, offset start
	rep, err := bench.Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.StoreCalls == 0 || rep.WireRequests != rep.StoreCalls {
		t.Errorf("store calls %d, wire requests %d: want equal and non-zero", rep.StoreCalls, rep.WireRequests)
	}
}

// countingBucket counts every call, standing in for a driver's wire count.
type countingBucket struct {
	storage.Bucket
	n *atomic.Int64
}

func (c *countingBucket) Get(ctx context.Context, key string) (io.ReadCloser, storage.Attrs, error) {
	c.n.Add(1)
	return c.Bucket.Get(ctx, key)
}

func (c *countingBucket) Put(ctx context.Context, key string, body io.Reader, opts storage.PutOptions) (storage.Attrs, error) {
	c.n.Add(1)
	return c.Bucket.Put(ctx, key, body, opts)
}

func (c *countingBucket) Stat(ctx context.Context, key string) (storage.Attrs, error) {
	c.n.Add(1)
	return c.Bucket.Stat(ctx, key)
}

func (c *countingBucket) List(ctx context.Context, opts storage.ListOptions) (storage.ListPage, error) {
	c.n.Add(1)
	return c.Bucket.List(ctx, opts)
}

func (c *countingBucket) Delete(ctx context.Context, key string) error {
	c.n.Add(1)
	return c.Bucket.Delete(ctx, key)
}

// TestHistoryOnBackend builds small histories on the measured bucket and
// large ones on memory, as the report says.
func TestHistoryOnBackend(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Backend.Kind = "file" // pretend: only the label differs
	cfg.Concurrency = []int{1}
	cfg.MaxOpsPerCell = 5
	rep, err := bench.Run(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Requests {
		wantOn := "file"
		if r.HistorySize > cfg.HistoryOnBackendMax {
			wantOn = "memory"
		}
		if r.MeasuredOn != wantOn {
			t.Errorf("%s over %d events measured on %q, want %q", r.Op, r.HistorySize, r.MeasuredOn, wantOn)
		}
	}
	found := false
	for _, n := range rep.Notes {
		found = found || strings.Contains(n, "memory backend")
	}
	if !found {
		t.Errorf("no note says which histories were built on memory: %q", rep.Notes)
	}
}

func TestRunErrors(t *testing.T) {
	tests := []struct {
		name   string
		mod    func(*bench.Config)
		target error
	}{
		{"no bucket", func(c *bench.Config) { c.Bucket = nil }, nil},
		{"no examples", func(c *bench.Config) { c.ExamplesDir = t.TempDir() }, nil},
		{"bad concurrency", func(c *bench.Config) { c.Concurrency = []int{0} }, nil},
		{"failing store", func(c *bench.Config) { c.Bucket = failing{c.Bucket} }, errBroken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := smallConfig(t)
			tc.mod(&cfg)
			_, err := bench.Run(t.Context(), cfg)
			if err == nil {
				t.Fatal("Run succeeded")
			}
			if tc.target != nil && !errors.Is(err, tc.target) {
				t.Errorf("error %v does not wrap %v", err, tc.target)
			}
		})
	}
}

var errBroken = errors.New("broken store")

// failing fails every Get.
type failing struct{ storage.Bucket }

func (failing) Get(context.Context, string) (io.ReadCloser, storage.Attrs, error) {
	return nil, storage.Attrs{}, errBroken
}

func itoa(n int) string { return strconv.Itoa(n) }

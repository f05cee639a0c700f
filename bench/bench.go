// Package bench measures fhirbucket against the physical limit of its
// object store: in one run it measures the raw requests (PUT, conditional
// PUT, GET of small objects), the FHIR interactions over real HTTP, the
// object-store requests each operation costs (including history pages over
// large histories), and latency, and states every FHIR rate as a ratio to
// what the raw requests it is made of allow. `fhirbucket bench` and
// `make bench` run it; docs/performance.md explains how to read the report.
//
// Numbers depend on the machine; nothing here asserts them.
package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/storage"
)

// Defaults of Config.
var (
	DefaultConcurrency  = []int{1, 8, 32}
	DefaultHistorySizes = []int{10, 10_000, 100_000}
)

// Defaults of Config.
const (
	DefaultCellDuration        = 3 * time.Second
	DefaultObjectBytes         = 2048
	DefaultHistoryPage         = 50
	DefaultHistoryOnBackendMax = 10_000
	DefaultExamplesDir         = "testdata/r4/examples"
	DefaultSyntheaDir          = syntheaDir
)

// Config selects what Run measures. Bucket and BackendKind are required;
// every other field has a default.
type Config struct {
	// Bucket is where everything is written: an empty namespace the run
	// may fill (Run writes below a fresh prefix of it and leaves its
	// objects there unless Cleanup is set).
	Bucket storage.Bucket
	// Backend describes Bucket for the report (Kind: minio, s3, memory,
	// file).
	Backend Backend
	// Concurrency levels of every throughput cell. Default 1, 8, 32.
	Concurrency []int
	// CellDuration is the measured time of each throughput cell. Default
	// DefaultCellDuration.
	CellDuration time.Duration
	// MaxOpsPerCell bounds the operations of a cell (0: only the
	// duration bounds it). Tests use it to keep runs tiny.
	MaxOpsPerCell int
	// ObjectBytes is the size of the raw objects. Default 2048.
	ObjectBytes int
	// HistorySizes are the numbers of prior events of the history pages
	// measured. Default 10, 10,000, 100,000.
	HistorySizes []int
	// HistoryPage is the page size (_count) of history pages. Default 50.
	HistoryPage int
	// HistoryOnBackendMax is the largest history built on Bucket: even
	// written directly (3 PUTs per version, see writeHistory) a history of
	// 100,000 versions takes minutes on a small S3 server, so larger ones
	// are built and measured on the memory backend, where the request
	// counts are the same (they are a property of fhirstore's paging, not
	// of the backend). Default 10,000; negative: every size on memory.
	HistoryOnBackendMax int
	// ExamplesDir holds the official FHIR examples sent as bodies. Default
	// DefaultExamplesDir (relative to the working directory).
	ExamplesDir string
	// SyntheaDir holds the Synthea transaction bundles (*.json.gz) of the
	// transaction cells. Default DefaultSyntheaDir.
	SyntheaDir string
	// ExportResources is the number of resources of the bulk export cell
	// (stored first, then exported). Default DefaultExportResources;
	// negative: no export cell.
	ExportResources int
	// WireRequests, when set, returns the number of requests the driver
	// has sent on the wire so far, retries included (s3store's
	// Client.Requests().Total). The report then compares it with the calls
	// the run made, which shows the driver's retries.
	WireRequests func() int64
	// Cleanup removes what the run wrote when it ends.
	Cleanup bool
	// Logger receives progress. Default: discard.
	Logger *slog.Logger
}

func (c *Config) defaults() error {
	if c.Bucket == nil {
		return errors.New("bench: Config.Bucket is required")
	}
	if c.Backend.Kind == "" {
		return errors.New("bench: Config.Backend.Kind is required")
	}
	if len(c.Concurrency) == 0 {
		c.Concurrency = DefaultConcurrency
	}
	for _, n := range c.Concurrency {
		if n < 1 {
			return fmt.Errorf("bench: concurrency %d: must be >= 1", n)
		}
	}
	if c.CellDuration <= 0 {
		c.CellDuration = DefaultCellDuration
	}
	if c.ObjectBytes <= 0 {
		c.ObjectBytes = DefaultObjectBytes
	}
	if c.HistorySizes == nil {
		c.HistorySizes = DefaultHistorySizes
	}
	for _, n := range c.HistorySizes {
		if n < 1 {
			return fmt.Errorf("bench: history size %d: must be >= 1", n)
		}
	}
	if c.HistoryPage <= 0 {
		c.HistoryPage = DefaultHistoryPage
	}
	if c.HistoryOnBackendMax == 0 {
		c.HistoryOnBackendMax = DefaultHistoryOnBackendMax
	}
	if c.ExportResources == 0 {
		c.ExportResources = DefaultExportResources
	}
	if c.SyntheaDir == "" {
		c.SyntheaDir = DefaultSyntheaDir
	}
	if c.ExamplesDir == "" {
		c.ExamplesDir = DefaultExamplesDir
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// runner is the state of one run.
type runner struct {
	cfg      Config
	log      *slog.Logger
	raw      *counter // the run's namespace, counted
	rawRates map[string]map[int]measurement
	// fhirRates are the FHIR cells by "op/concurrency".
	fhirRates map[string]measurement
	report    *Report
}

// Run measures and returns the report. It fails on the first error of any
// request: a benchmark of failing requests would be meaningless.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	runID := strconv.FormatInt(time.Now().UnixMilli(), 36)
	ns, err := storage.Prefixed(cfg.Bucket, "bench-"+runID)
	if err != nil {
		return nil, err
	}
	r := &runner{
		cfg: cfg, log: cfg.Logger, raw: &counter{Bucket: ns},
		rawRates: map[string]map[int]measurement{}, fhirRates: map[string]measurement{},
		report: &Report{
			Date: time.Now().UTC(), Machine: machine(), Go: runtime.Version(), Backend: cfg.Backend,
			Settings: Settings{
				Concurrency: cfg.Concurrency, CellSeconds: cfg.CellDuration.Seconds(), MaxOpsPerCell: cfg.MaxOpsPerCell,
				ObjectBytes: cfg.ObjectBytes, HistorySizes: cfg.HistorySizes, HistoryPage: cfg.HistoryPage,
				HistoryOnBackendMax: cfg.HistoryOnBackendMax, ExportResources: max(cfg.ExportResources, 0),
			},
		},
	}
	if cfg.Cleanup {
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Minute)
			defer cancel()
			if err := storage.DeleteAll(cctx, ns, "", 32); err != nil {
				r.log.Warn("removing the benchmark's objects", "prefix", "bench-"+runID, "error", err)
			}
		}()
	}

	validator, err := fhir.NewValidator(fhir.ValidatorOptions{})
	if err != nil {
		return nil, fmt.Errorf("bench: loading the FHIR validator: %w", err)
	}
	examples, err := loadExamples(cfg.ExamplesDir, validator)
	if err != nil {
		return nil, err
	}
	total := 0
	for _, e := range examples {
		total += len(e.body)
	}
	r.report.Settings.Examples, r.report.Settings.ExampleMeanSize = len(examples), total/len(examples)

	var wireStart int64
	if cfg.WireRequests != nil {
		wireStart = cfg.WireRequests()
	}
	if err := r.rawBaseline(ctx); err != nil {
		return nil, err
	}
	if err := r.fhirHTTP(ctx, validator, examples); err != nil {
		return nil, err
	}
	if err := r.transactions(ctx, validator, examples); err != nil {
		return nil, err
	}
	if cfg.ExportResources > 0 {
		if err := r.exportCell(ctx, validator, examples); err != nil {
			return nil, err
		}
	}
	if err := r.requestCosts(ctx, validator); err != nil {
		return nil, err
	}
	r.report.Machine.LoadAvgEnd = loadAvg()
	if cfg.WireRequests != nil {
		r.report.WireRequests = cfg.WireRequests() - wireStart
		r.report.StoreCalls = r.raw.snapshot().total()
	}
	r.notes()
	return r.report, nil
}

// Raw request names, as in the report.
const (
	rawPut     = "put"
	rawCondPut = "put_if_none_match"
	rawGet     = "get"
)

func (r *runner) rawBaseline(ctx context.Context) error {
	payload := make([]byte, r.cfg.ObjectBytes)
	_, _ = rand.Read(payload)
	for i := range payload {
		payload[i] = 'a' + payload[i]%26 // printable, like JSON text
	}
	size := int64(len(payload))
	// Each request kind numbers its keys with its own counter, kept across
	// concurrency levels, so every conditional PUT creates a new key. A
	// cell returns only when every operation it started has succeeded, so
	// after the PUT cells raw/put/0 … raw/put/{puts-1} all exist.
	var puts, cputs, gets atomic.Int64
	ops := []struct {
		name string
		seq  *atomic.Int64
		op   func(ctx context.Context, i int64) error
	}{
		{rawPut, &puts, func(ctx context.Context, i int64) error {
			_, err := r.raw.Put(ctx, "raw/put/"+strconv.FormatInt(i, 10), bytes.NewReader(payload),
				storage.PutOptions{ContentType: "application/json", Size: size})
			return err
		}},
		{rawCondPut, &cputs, func(ctx context.Context, i int64) error {
			_, err := r.raw.Put(ctx, "raw/cput/"+strconv.FormatInt(i, 10), bytes.NewReader(payload),
				storage.PutOptions{ContentType: "application/json", Size: size, IfNoneMatch: "*"})
			return err
		}},
		{rawGet, &gets, func(ctx context.Context, i int64) error {
			// A stride that is coprime with most counts spreads the reads.
			k := (i * 7919) % puts.Load()
			rc, _, err := r.raw.Get(ctx, "raw/put/"+strconv.FormatInt(k, 10))
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, rc)
			rc.Close()
			return err
		}},
	}
	// Warm-up, not reported: a freshly started server and an empty
	// connection pool make the first requests slower than the rest, which
	// would understate the first cell and overstate every ratio built on it.
	warm := min(r.cfg.CellDuration, time.Second)
	if _, err := load(ctx, slicesMax(r.cfg.Concurrency), warm, r.cfg.MaxOpsPerCell, &puts, ops[0].op); err != nil {
		return fmt.Errorf("bench: warm-up: %w", err)
	}
	for _, o := range ops {
		r.rawRates[o.name] = map[int]measurement{}
		for _, c := range r.cfg.Concurrency {
			m, err := load(ctx, c, r.cfg.CellDuration, r.cfg.MaxOpsPerCell, o.seq, o.op)
			if err != nil {
				return fmt.Errorf("bench: raw %s at concurrency %d: %w", o.name, c, err)
			}
			r.rawRates[o.name][c] = m
			r.report.Raw = append(r.report.Raw, RawRow{Op: o.name, Concurrency: c, Ops: m.ops, PerSecond: m.rate(),
				P50ms: m.quantile(.5), P99ms: m.quantile(.99)})
			r.log.Info("raw", "op", o.name, "concurrency", c, "per_second", int(m.rate()), "p50_ms", m.quantile(.5))
		}
	}
	return nil
}

// notes states how to read this run's numbers.
func (r *runner) notes() {
	rep := r.report
	add := func(format string, a ...any) { rep.Notes = append(rep.Notes, fmt.Sprintf(format, a...)) }
	add("Every ratio compares with raw rates measured in this run, on this backend, at the same concurrency. "+
		"The load generator, the FHIR server%s share the machine's %d CPUs (load average %.1f at the start, %.1f at the end): "+
		"FHIR cells also pay for HTTP, JSON and validation CPU that the raw cells do not.",
		map[bool]string{true: " and the S3 server", false: ""}[rep.Backend.Kind == "minio"], rep.Machine.CPUs,
		rep.Machine.LoadAvgStart, rep.Machine.LoadAvgEnd)
	add("A FHIR write keeps up to three requests in flight (current.json and both events are written in parallel after the claim), " +
		"so at the same client concurrency it loads the store more than the raw cell it is compared with: at concurrency 1 its ideal ratio is above 1 " +
		"(a create makes 4 requests in 2 round trips, up to 2; an update 5 in 3, up to 1.67), and ratios above 1 at 8 and 32 mean the raw cell had not saturated the store.")
	var large []string
	for _, n := range r.cfg.HistorySizes {
		if n > r.cfg.HistoryOnBackendMax && rep.Backend.Kind != "memory" {
			large = append(large, strconv.Itoa(n))
		}
	}
	if len(large) > 0 {
		add("History pages over %s prior events were built and counted on the memory backend (building N events costs 3N PUTs even when written directly); "+
			"request counts are a property of fhirstore's paging, identical on every backend. Raise --history-on-backend-max to build them on %s.",
			strings.Join(large, ", "), rep.Backend.Kind)
	}
	if rep.WireRequests > 0 {
		add("The run made %d object-store calls on %s and its driver sent %d requests on the wire: %d retries.",
			rep.StoreCalls, rep.Backend.Kind, rep.WireRequests, rep.WireRequests-rep.StoreCalls)
	}
	add("\"history-… page 2\" rows follow the first page's next link. Bulk submit rows are absent: that feature does not exist yet. A transaction at concurrency 1 applies its entries 16 at a time (FHIRBUCKET_BUNDLE_PARALLELISM), so its ratio to single creates at concurrency 1 can exceed 1.")
	if e := rep.Export; e != nil {
		add("The export cell stores %d resources (the official examples and the Synthea records' resources, again and again under fresh ids) through fhirstore, "+
			"then times a system export from kick-off to complete manifest, reading %d resources at a time; its ratio is to raw GETs of %d-byte objects at concurrency %d. "+
			"Its memory is that of the whole bench process (load generator and server in one): the peak VmRSS sampled during the export, and VmHWM, "+
			"which counts from the process start and cannot be reset, before and after it.",
			e.Resources, e.Parallel, rep.Settings.ObjectBytes, e.Parallel)
	}
	var low []string
	for _, f := range rep.FHIR {
		if f.Ratio < 0.8 && f.Concurrency == slicesMax(r.cfg.Concurrency) {
			low = append(low, fmt.Sprintf("%s at %d (%.2f)", f.Op, f.Concurrency, f.Ratio))
		}
	}
	if len(low) > 0 {
		add("Below 0.8 at the highest concurrency: %s; docs/performance.md explains what holds each back.", strings.Join(low, ", "))
	}
}

package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Report is the outcome of one benchmark run. Its JSON form is the
// machine-readable report; Markdown renders the same content.
type Report struct {
	Date     time.Time `json:"date"`
	Machine  Machine   `json:"machine"`
	Go       string    `json:"go"`
	Backend  Backend   `json:"backend"`
	Settings Settings  `json:"settings"`

	// Raw is the baseline: single object-store requests of ObjectBytes.
	Raw []RawRow `json:"raw"`
	// FHIR is FHIR interactions over HTTP, each against its limit.
	FHIR []FHIRRow `json:"fhir"`
	// Requests is the object-store requests one operation costs.
	Requests []RequestRow `json:"requests"`
	// Latency compares FHIR latency with the raw requests it is made of.
	Latency []LatencyRow `json:"latency"`
	// Transactions are the transaction Bundle cells.
	Transactions []TxRow `json:"transactions"`
	// Export is the bulk export cell (nil when not run).
	Export *ExportRow `json:"export,omitempty"`
	// StoreCalls and WireRequests are the object-store calls the run made
	// on the measured backend and the requests its driver sent on the
	// wire (retries included); both 0 when the driver does not count.
	StoreCalls   int64 `json:"store_calls,omitempty"`
	WireRequests int64 `json:"wire_requests,omitempty"`
	// Notes explain how to read the numbers of this run.
	Notes []string `json:"notes"`
}

// Machine describes where the run happened.
type Machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model,omitempty"`
	MemoryMB int64  `json:"memory_mb,omitempty"`
	OS       string `json:"os"`
	Arch     string `json:"arch"`
	// LoadAvg is the 1-minute load average (/proc/loadavg) at the start
	// and at the end of the run: other work on the machine skews results.
	LoadAvgStart float64 `json:"load_avg_start"`
	LoadAvgEnd   float64 `json:"load_avg_end"`
}

// Backend names the object store measured.
type Backend struct {
	Kind     string `json:"kind"`              // minio, s3, memory, file
	Version  string `json:"version,omitempty"` // server version when known
	Endpoint string `json:"endpoint,omitempty"`
	Bucket   string `json:"bucket,omitempty"`
}

// Settings are the sizes of the run.
type Settings struct {
	Concurrency     []int   `json:"concurrency"`
	CellSeconds     float64 `json:"cell_seconds"`
	MaxOpsPerCell   int     `json:"max_ops_per_cell,omitempty"`
	ObjectBytes     int     `json:"object_bytes"`
	Examples        int     `json:"examples"`
	ExampleMeanSize int     `json:"example_mean_bytes"`
	HistorySizes    []int   `json:"history_sizes"`
	HistoryPage     int     `json:"history_page"`
	// HistoryOnBackendMax is the largest history built on the measured
	// backend; larger ones are built and measured on the memory backend.
	HistoryOnBackendMax int `json:"history_on_backend_max"`
	// ExportResources is the size of the bulk export cell.
	ExportResources int `json:"export_resources,omitempty"`
}

// RawRow is one raw baseline cell.
type RawRow struct {
	Op          string  `json:"op"` // put, put_if_none_match, get
	Concurrency int     `json:"concurrency"`
	Ops         int     `json:"ops"`
	PerSecond   float64 `json:"per_second"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
}

// FHIRRow is one FHIR interaction cell over HTTP.
type FHIRRow struct {
	Op          string  `json:"op"` // create, update, read, vread
	Concurrency int     `json:"concurrency"`
	Ops         int     `json:"ops"`
	PerSecond   float64 `json:"per_second"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	// Limit is what the raw baseline at the same concurrency allows: 1 ÷
	// the sum over the requests the operation needs of 1 ÷ the raw rate of
	// that request kind (for a create, 2 conditional and 2 plain PUTs).
	Limit float64 `json:"limit_per_second"`
	// Ratio is PerSecond ÷ Limit.
	Ratio float64 `json:"ratio"`
	// Needs is the nominal request mix of one operation (the write
	// protocol), the divisor of Limit.
	Needs string `json:"needs"`
	// RequestsPerOp is the measured mean of object-store requests per
	// operation in this cell (retries after lost races included).
	RequestsPerOp float64 `json:"requests_per_op"`
}

// RequestRow is the object-store requests of one operation.
type RequestRow struct {
	Op          string `json:"op"`
	HistorySize int    `json:"history_size,omitempty"` // prior events, for history pages
	MeasuredOn  string `json:"measured_on"`            // backend kind
	Get         int64  `json:"get"`
	Put         int64  `json:"put"`
	CondPut     int64  `json:"conditional_put"`
	Head        int64  `json:"head"`
	List        int64  `json:"list"`
	Delete      int64  `json:"delete"`
	Total       int64  `json:"total"`
	// Millis is the wall time of the operation (one sequential call).
	Millis float64 `json:"ms"`
}

// LatencyRow compares one FHIR interaction at concurrency 1 with the raw
// request latency it is built from.
type LatencyRow struct {
	Op         string  `json:"op"`
	P50ms      float64 `json:"p50_ms"`
	P99ms      float64 `json:"p99_ms"`
	RawOp      string  `json:"raw_op"`
	RawP50ms   float64 `json:"raw_p50_ms"`
	RawP99ms   float64 `json:"raw_p99_ms"`
	RoundTrips int     `json:"round_trips"` // sequential object-store round trips
	// RawP50ms and RawP99ms add up the raw quantiles of the requests on
	// the critical path (RawOp).
	// OverheadP50ms is P50 minus RawP50ms: the time the server adds (HTTP,
	// JSON, validation, and waiting for the slowest of parallel requests).
	OverheadP50ms float64 `json:"overhead_p50_ms"`
}

// JSON is the indented JSON form of r.
func (r *Report) JSON() ([]byte, error) {
	return json.MarshalIndent(r, "", "  ")
}

func f1(v float64) string {
	switch {
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// Markdown renders r as a Markdown document.
func (r *Report) Markdown() string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# fhirbucket benchmark report\n\n")
	p("- date: %s\n", r.Date.UTC().Format(time.RFC3339))
	mem := ""
	if r.Machine.MemoryMB > 0 {
		mem = fmt.Sprintf(", %d MiB memory", r.Machine.MemoryMB)
	}
	model := ""
	if r.Machine.CPUModel != "" {
		model = " (" + r.Machine.CPUModel + ")"
	}
	p("- machine: %d CPUs%s%s, %s/%s; load average %.1f at the start, %.1f at the end\n", r.Machine.CPUs, model, mem,
		r.Machine.OS, r.Machine.Arch, r.Machine.LoadAvgStart, r.Machine.LoadAvgEnd)
	p("- Go: %s\n", r.Go)
	be := r.Backend.Kind
	if r.Backend.Version != "" {
		be += " " + r.Backend.Version
	}
	if r.Backend.Endpoint != "" {
		be += " at " + r.Backend.Endpoint
	}
	if r.Backend.Bucket != "" {
		be += ", bucket " + r.Backend.Bucket
	}
	p("- backend: %s\n", be)
	s := r.Settings
	p("- sizes: concurrency %v, %gs per cell", s.Concurrency, s.CellSeconds)
	if s.MaxOpsPerCell > 0 {
		p(" (at most %d operations)", s.MaxOpsPerCell)
	}
	p(", raw objects of %d bytes, %d official examples (mean %d bytes), history sizes %v, history page %d\n\n",
		s.ObjectBytes, s.Examples, s.ExampleMeanSize, s.HistorySizes, s.HistoryPage)

	p("## Raw object-store baseline\n\n| request | concurrency | req/s | p50 ms | p99 ms |\n| --- | ---: | ---: | ---: | ---: |\n")
	for _, x := range r.Raw {
		p("| %s | %d | %s | %s | %s |\n", x.Op, x.Concurrency, f1(x.PerSecond), f1(x.P50ms), f1(x.P99ms))
	}
	p("\n## FHIR over HTTP against the limit\n\n")
	p("limit = 1 ÷ Σ (requests of a kind ÷ raw req/s of that kind) at the same concurrency; ratio = FHIR ops/s ÷ limit.\n\n")
	p("| interaction | concurrency | ops/s | limit ops/s | ratio | needs | measured req/op | p50 ms | p99 ms |\n| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |\n")
	for _, x := range r.FHIR {
		p("| %s | %d | %s | %s | %.2f | %s | %.2f | %s | %s |\n", x.Op, x.Concurrency, f1(x.PerSecond), f1(x.Limit), x.Ratio,
			x.Needs, x.RequestsPerOp, f1(x.P50ms), f1(x.P99ms))
	}
	if len(r.Transactions) > 0 {
		p("\n## Transaction Bundles\n\nratio = entries/s of transactions ÷ single creates/s at the same concurrency, measured in this run; requests per entry include the journal.\n\n")
		p("| transactions of | concurrency | bundles | entries/s | creates/s | ratio | requests/entry | p50 ms per bundle |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		for _, x := range r.Transactions {
			p("| %s | %d | %d | %s | %s | %.2f | %.2f | %s |\n", x.Kind, x.Concurrency, x.Bundles, f1(x.EntriesPerS), f1(x.CreatesPerS), x.Ratio, x.RequestsPerEntry, f1(x.P50ms))
		}
	}
	if e := r.Export; e != nil {
		p("\n## Bulk export\n\nA system export of %d resources of %d types into %d files, timed from kick-off to the complete manifest; ratio = resources/s ÷ raw GET/s at the export's concurrency (%d), measured in this run.\n\n",
			e.Resources, e.Types, e.Files, e.Parallel)
		p("| resources/s | raw GET/s | ratio | GET/resource | LIST/resource | PUT/resource | calls/resource | wire requests/resource | seconds |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		p("| %s | %s | %.2f | %.4f | %.4f | %.4f | %.4f | %.4f | %s |\n\n", f1(e.PerSecond), f1(e.RawGetPerS), e.Ratio, e.GetPerResource,
			e.ListPerResource, e.PutPerResource, e.CallsPerResource, e.WirePerResource, f1(e.Seconds))
		p("Memory of the bench process: VmRSS %.0f MB before the export, peak %.0f MB during it (sampled every 20 ms); VmHWM %.0f MB before, %.0f MB after (peak delta %.0f MB).\n",
			e.RSSBeforeMB, e.PeakRSSMB, e.HWMBeforeMB, e.HWMAfterMB, e.HWMAfterMB-e.HWMBeforeMB)
	}
	p("\n## Object-store requests per operation\n\n| operation | prior events | measured on | GET | PUT | conditional PUT | HEAD | LIST | DELETE | total | ms |\n| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, x := range r.Requests {
		size := ""
		if x.HistorySize > 0 {
			size = strconv.Itoa(x.HistorySize)
		}
		p("| %s | %s | %s | %d | %d | %d | %d | %d | %d | %d | %s |\n", x.Op, size, x.MeasuredOn,
			x.Get, x.Put, x.CondPut, x.Head, x.List, x.Delete, x.Total, f1(x.Millis))
	}
	p("\n## Latency at concurrency 1\n\n| interaction | p50 ms | p99 ms | raw requests on the critical path | raw p50 ms | raw p99 ms | sequential round trips | overhead p50 ms |\n| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |\n")
	for _, x := range r.Latency {
		p("| %s | %s | %s | %s | %s | %s | %d | %s |\n", x.Op, f1(x.P50ms), f1(x.P99ms), x.RawOp, f1(x.RawP50ms), f1(x.RawP99ms), x.RoundTrips, f1(x.OverheadP50ms))
	}
	if len(r.Notes) > 0 {
		p("\n## Notes\n\n")
		for _, n := range r.Notes {
			p("- %s\n", n)
		}
	}
	return b.String()
}

// machine describes this machine from runtime and /proc (Linux); fields
// it cannot learn stay empty.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), OS: runtime.GOOS, Arch: runtime.GOARCH, LoadAvgStart: loadAvg()}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "MemTotal:"); ok {
				fields := strings.Fields(rest)
				if len(fields) > 0 {
					if kb, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
						m.MemoryMB = kb / 1024
					}
				}
				break
			}
		}
		f.Close()
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	return m
}

// loadAvg is the 1-minute load average, 0 when unknown.
func loadAvg() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(fields[0], 64)
	return v
}

package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/metrics"
	"fhirbucket/server"
)

// needs is the nominal request mix of one FHIR operation, from the write
// protocol (docs/object-layout.md).
type needs struct{ get, put, condPut int }

func (n needs) String() string {
	var parts []string
	if n.get > 0 {
		parts = append(parts, fmt.Sprintf("%d GET", n.get))
	}
	if n.condPut > 0 {
		parts = append(parts, fmt.Sprintf("%d cond. PUT", n.condPut))
	}
	if n.put > 0 {
		parts = append(parts, fmt.Sprintf("%d PUT", n.put))
	}
	return strings.Join(parts, " + ")
}

// The FHIR interactions measured over HTTP and what each needs: a create
// claims version 1 and creates current.json (both If-None-Match) and puts
// two events; an update first reads current.json, then claims
// (If-None-Match) and moves current.json (If-Match); reads are one GET.
var fhirOps = []struct {
	name  string
	needs needs
}{
	{"create", needs{put: 2, condPut: 2}},
	{"update", needs{get: 1, put: 2, condPut: 2}},
	{"read", needs{get: 1}},
	{"vread", needs{get: 1}},
}

// limit is the rate the raw baseline at concurrency c allows for an
// operation needing n: the time budget of one operation is the sum of
// 1/rate over its requests.
func (r *runner) limit(n needs, c int) float64 {
	t := 0.0
	for _, part := range []struct {
		k    int
		kind string
	}{{n.get, rawGet}, {n.put, rawPut}, {n.condPut, rawCondPut}} {
		if part.k == 0 {
			continue
		}
		rate := r.rawRates[part.kind][c].rate()
		if rate <= 0 {
			return 0
		}
		t += float64(part.k) / rate
	}
	if t == 0 {
		return 0
	}
	return 1 / t
}

// ratio is a/b, or 0 when b is 0 (so that the report never holds NaN or
// Inf, which JSON cannot carry).
func ratio(a, b float64) float64 {
	if b == 0 || math.IsNaN(a) || math.IsInf(a, 0) {
		return 0
	}
	return a / b
}

// BenchTenant is the tenant the FHIR requests use.
const BenchTenant = "bench"

// created is one resource created over HTTP.
type created struct {
	typ, id string
	ex      int // index of its example
}

// fhirClient sends FHIR requests to the loopback server.
type fhirClient struct {
	base string
	http *http.Client
}

func (c *fhirClient) do(ctx context.Context, method, path string, body []byte, want int) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/fhir+json")
	req.Header.Set(server.TenantHeaderName, BenchTenant)
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	// Drain the body so that the connection is reused.
	_, cerr := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != want {
		return nil, fmt.Errorf("%s %s: status %d, want %d", method, path, resp.StatusCode, want)
	}
	return resp, cerr
}

// startServer serves the FHIR handler, with the metrics middleware as
// `fhirbucket serve` has it, on a loopback listener.
func startServer(st server.Store, maxConc int) (*fhirClient, func(), error) {
	m := metrics.New(metrics.Options{})
	h, err := server.New(server.Config{Store: st, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	srv := &http.Server{Handler: m.WithEndpoint(m.Middleware(h)), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	tr := &http.Transport{
		// One idle connection per worker: without it every burst would
		// open new connections and measure TCP set-up.
		MaxIdleConns: 0, MaxIdleConnsPerHost: maxConc + 8, IdleConnTimeout: time.Minute,
		DisableCompression: true,
	}
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		tr.CloseIdleConnections()
	}
	return &fhirClient{base: "http://" + ln.Addr().String(), http: &http.Client{Transport: tr}}, stop, nil
}

// newStore builds the resource store the benchmark measures, over the
// counted namespace with the metrics instrumentation the server uses.
func (r *runner) newStore(v *fhir.Validator) (*fhirstore.Store, error) {
	m := metrics.New(metrics.Options{})
	return fhirstore.New(fhirstore.Config{
		Bucket: m.InstrumentBucket(r.raw), Prefix: "fhir", Validator: v,
		Hooks: fhirstore.Hooks{RollForward: m.RollForward},
	})
}

func (r *runner) fhirHTTP(ctx context.Context, v *fhir.Validator, examples []example) error {
	st, err := r.newStore(v)
	if err != nil {
		return err
	}
	client, stop, err := startServer(st, slicesMax(r.cfg.Concurrency))
	if err != nil {
		return err
	}
	defer stop()

	var (
		mu      sync.Mutex
		made    []created
		updates [][]byte // update body of made[i], for the first len(updates)
	)
	locPrefix := client.base + "/"
	ops := map[string]func(ctx context.Context, i int64) error{
		"create": func(ctx context.Context, i int64) error {
			ex := int(i % int64(len(examples)))
			e := examples[ex]
			resp, err := client.do(ctx, http.MethodPost, "/"+e.typ, e.body, http.StatusCreated)
			if err != nil {
				return err
			}
			// Location: {base}/{type}/{id}/_history/1
			parts := strings.Split(strings.TrimPrefix(resp.Header.Get("Location"), locPrefix), "/")
			if len(parts) != 4 || parts[0] != e.typ {
				return fmt.Errorf("create %s: unexpected Location %q", e.typ, resp.Header.Get("Location"))
			}
			mu.Lock()
			made = append(made, created{typ: e.typ, id: parts[1], ex: ex})
			mu.Unlock()
			return nil
		},
		"update": func(ctx context.Context, i int64) error {
			k := int(i % int64(len(updates)))
			c := made[k]
			_, err := client.do(ctx, http.MethodPut, "/"+c.typ+"/"+c.id, updates[k], http.StatusOK)
			return err
		},
		"read": func(ctx context.Context, i int64) error {
			c := made[int((i*7919)%int64(len(made)))]
			_, err := client.do(ctx, http.MethodGet, "/"+c.typ+"/"+c.id, nil, http.StatusOK)
			return err
		},
		"vread": func(ctx context.Context, i int64) error {
			c := made[int((i*7919)%int64(len(made)))]
			_, err := client.do(ctx, http.MethodGet, "/"+c.typ+"/"+c.id+"/_history/1", nil, http.StatusOK)
			return err
		},
	}
	for _, o := range fhirOps {
		var seq atomic.Int64
		if o.name == "update" {
			// Update bodies carry the resource's id; build them once, for
			// at most 4,096 resources (enough that concurrent updates
			// rarely meet on one resource), outside the timed cells.
			n := min(len(made), 4096)
			if n == 0 {
				return errors.New("bench: no resources were created")
			}
			updates = make([][]byte, n)
			for k := range n {
				b, err := fhir.SetMeta(examples[made[k].ex].body, made[k].id, "1", time.Now())
				if err != nil {
					return fmt.Errorf("bench: preparing update of %s: %w", examples[made[k].ex].name, err)
				}
				updates[k] = b
			}
		}
		for _, c := range r.cfg.Concurrency {
			before := r.raw.snapshot()
			m, err := load(ctx, c, r.cfg.CellDuration, r.cfg.MaxOpsPerCell, &seq, ops[o.name])
			if err != nil {
				return fmt.Errorf("bench: FHIR %s at concurrency %d: %w", o.name, c, err)
			}
			// The cell's warm-up requests are counted too.
			reqs := r.raw.snapshot().sub(before)
			limit := r.limit(o.needs, c)
			row := FHIRRow{
				Op: o.name, Concurrency: c, Ops: m.ops, PerSecond: m.rate(), P50ms: m.quantile(.5), P99ms: m.quantile(.99),
				Limit: limit, Ratio: ratio(m.rate(), limit), Needs: o.needs.String(),
				RequestsPerOp: ratio(float64(reqs.total()), float64(m.ops+c)),
			}
			r.report.FHIR = append(r.report.FHIR, row)
			r.fhirRates[o.name+"/"+fmt.Sprint(c)] = m
			r.log.Info("fhir", "op", o.name, "concurrency", c, "per_second", int(row.PerSecond), "ratio", fmt.Sprintf("%.2f", row.Ratio))
		}
	}
	r.latency()
	return nil
}

// latency compares the FHIR interactions at the lowest concurrency with
// the raw requests on their critical path: a read or vread is one GET; a
// create is the claim (a conditional PUT) and then current.json (a
// conditional PUT) in parallel with the two events (PUTs); an update
// first GETs current.json. The raw sum is a lower bound: three parallel
// PUTs take as long as the slowest, not the median one.
func (r *runner) latency() {
	c := slicesMin(r.cfg.Concurrency)
	g, cp, p := r.rawRates[rawGet][c], r.rawRates[rawCondPut][c], r.rawRates[rawPut][c]
	q := func(m measurement, x float64) float64 { return m.quantile(x) }
	for _, x := range []struct {
		op, raw string
		trips   int
		sum     func(float64) float64
	}{
		{"read", "get", 1, func(x float64) float64 { return q(g, x) }},
		{"vread", "get", 1, func(x float64) float64 { return q(g, x) }},
		{"create", "put_if_none_match + max(put_if_none_match, put)", 2,
			func(x float64) float64 { return q(cp, x) + max(q(cp, x), q(p, x)) }},
		{"update", "get + put_if_none_match + max(put_if_none_match, put)", 3,
			func(x float64) float64 { return q(g, x) + q(cp, x) + max(q(cp, x), q(p, x)) }},
	} {
		m, ok := r.fhirRates[x.op+"/"+fmt.Sprint(c)]
		if !ok {
			continue
		}
		row := LatencyRow{Op: x.op, P50ms: m.quantile(.5), P99ms: m.quantile(.99), RoundTrips: x.trips,
			RawOp: x.raw, RawP50ms: x.sum(.5), RawP99ms: x.sum(.99)}
		row.OverheadP50ms = row.P50ms - row.RawP50ms
		r.report.Latency = append(r.report.Latency, row)
	}
}

func slicesMax(s []int) int {
	m := 0
	for _, v := range s {
		m = max(m, v)
	}
	return m
}

func slicesMin(s []int) int {
	m := math.MaxInt
	for _, v := range s {
		m = min(m, v)
	}
	return m
}

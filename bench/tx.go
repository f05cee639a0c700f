package bench

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"fhirbucket/bundle"
	"fhirbucket/fhir"
	"fhirbucket/metrics"
	"fhirbucket/server"
)

// TxRow is one transaction cell: Bundles of one kind at one client
// concurrency, in entries per second, against single creates at the same
// concurrency measured in the same run.
type TxRow struct {
	Kind        string  `json:"kind"` // "100 POST entries" or "Synthea records"
	Concurrency int     `json:"concurrency"`
	Bundles     int     `json:"bundles"`
	Entries     int     `json:"entries"`
	EntriesPerS float64 `json:"entries_per_second"`
	CreatesPerS float64 `json:"creates_per_second"`
	// Ratio is EntriesPerS ÷ CreatesPerS: the goal is ≥ 0.8 for 100-entry
	// transactions.
	Ratio float64 `json:"ratio"`
	// RequestsPerEntry is the measured object-store requests per entry,
	// the journal included (a single create is 4).
	RequestsPerEntry float64 `json:"requests_per_entry"`
	P50ms            float64 `json:"p50_ms"`
}

// syntheaDir holds the Synthea transaction bundles (gzip).
const syntheaDir = "testdata/synthea"

// txBundles builds the transaction bodies of the two kinds: 100 POST
// entries of official examples (each referring to the first through a
// urn:uuid fullUrl where it has a subject), and the Synthea records.
func txBundles(examples []example, dir string) (hundred [][]byte, synthea [][]byte, syntheaEntries []int, err error) {
	for b := range 8 {
		var entries []string
		for k := range 100 {
			e := examples[(b*100+k)%len(examples)]
			entries = append(entries, fmt.Sprintf(`{"fullUrl":"urn:uuid:%08d-0000-4000-8000-%012d","resource":%s,"request":{"method":"POST","url":"%s"}}`,
				b, k, e.body, e.typ))
		}
		hundred = append(hundred, []byte(`{"resourceType":"Bundle","type":"transaction","entry":[`+strings.Join(entries, ",")+`]}`))
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json.gz"))
	sort.Strings(files)
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			return nil, nil, nil, err
		}
		zr, err := gzip.NewReader(fh)
		if err != nil {
			fh.Close()
			return nil, nil, nil, fmt.Errorf("bench: %s: %w", f, err)
		}
		data, err := io.ReadAll(zr)
		fh.Close()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("bench: %s: %w", f, err)
		}
		b, err := fhir.ParseBundle(data)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("bench: %s: %w", f, err)
		}
		synthea = append(synthea, data)
		syntheaEntries = append(syntheaEntries, len(b.Entry))
	}
	return hundred, synthea, syntheaEntries, nil
}

// transactions measures transaction Bundles over HTTP at every
// concurrency, after the single creates (fhirHTTP) of the same run.
func (r *runner) transactions(ctx context.Context, v *fhir.Validator, examples []example) error {
	hundred, syn, synEntries, err := txBundles(examples, r.cfg.SyntheaDir)
	if err != nil {
		return err
	}
	st, err := r.newStore(v)
	if err != nil {
		return err
	}
	tr, err := bundle.New(bundle.Config{Store: st, Owner: "bench", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	m := metrics.New(metrics.Options{})
	h, err := server.New(server.Config{Store: st, Logger: slog.New(slog.DiscardHandler),
		Bundles: &server.BundleConfig{Transactions: tr, Validator: v}})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: m.WithEndpoint(m.Middleware(h)), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	client := &fhirClient{base: "http://" + ln.Addr().String(), http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: slicesMax(r.cfg.Concurrency) + 8}}}

	kinds := []struct {
		name    string
		bodies  [][]byte
		entries func(i int64) int
	}{
		{"100 POST entries", hundred, func(int64) int { return 100 }},
	}
	if len(syn) > 0 {
		kinds = append(kinds, struct {
			name    string
			bodies  [][]byte
			entries func(i int64) int
		}{"Synthea records", syn, func(i int64) int { return synEntries[int(i%int64(len(syn)))] }})
	} else {
		r.log.Warn("bench: no Synthea bundles found; their row is left out", "dir", r.cfg.SyntheaDir)
	}
	for _, k := range kinds {
		for _, c := range r.cfg.Concurrency {
			var seq atomic.Int64
			var timed, all atomic.Int64 // entries of the timed bundles; of every bundle (warm-up included)
			before := r.raw.snapshot()
			meas, err := load(ctx, c, r.cfg.CellDuration, max(r.cfg.MaxOpsPerCell/100, 4*c), &seq, func(ctx context.Context, i int64) error {
				body := k.bodies[int(i%int64(len(k.bodies)))]
				if _, err := client.do(ctx, http.MethodPost, "/", body, http.StatusOK); err != nil {
					return err
				}
				all.Add(int64(k.entries(i)))
				if i >= int64(c) { // load's warm-up runs the first c
					timed.Add(int64(k.entries(i)))
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("bench: transactions (%s) at concurrency %d: %w", k.name, c, err)
			}
			reqs := r.raw.snapshot().sub(before)
			n := int(timed.Load())
			perS := float64(n) / meas.elapsed.Seconds()
			row := TxRow{Kind: k.name, Concurrency: c, Bundles: meas.ops, Entries: n, EntriesPerS: perS,
				RequestsPerEntry: ratio(float64(reqs.total()), float64(all.Load())), P50ms: meas.quantile(.5)}
			if cr, ok := r.fhirRates["create/"+fmt.Sprint(c)]; ok {
				row.CreatesPerS = cr.rate()
				row.Ratio = ratio(perS, cr.rate())
			}
			r.report.Transactions = append(r.report.Transactions, row)
			r.log.Info("transactions", "kind", k.name, "concurrency", c, "entries_per_second", int(perS), "ratio", fmt.Sprintf("%.2f", row.Ratio))
		}
	}
	return tr.Close(ctx)
}

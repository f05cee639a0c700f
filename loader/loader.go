// Package loader sends files of FHIR data to a FHIR server's batch and
// transaction endpoint (POST to the base URL): Bundle files as they are,
// NDJSON files as batch Bundles of a bounded number of entries, read as a
// stream. It owns the client side of a load: finding the files, building
// the Bundles, bounded parallelism, retries, reading batch- and
// transaction-response Bundles into per-entry results, the report and the
// progress display. It knows the server only by its HTTP interface.
package loader

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"fhirbucket/internal/clientkit"
)

// Defaults of the Config fields left zero.
const (
	DefaultParallel  = 4
	DefaultBatchSize = 100
	DefaultTimeout   = 5 * time.Minute
	DefaultRetries   = 5
	DefaultRetryBase = 500 * time.Millisecond
	DefaultRetryMax  = 30 * time.Second
)

// Config says where and how to load. Zero fields take the defaults above.
type Config struct {
	// URL is the FHIR base (http or https); Bundles are POSTed to URL + "/".
	URL string
	// Tenant, when set, is sent as the X-Tenant-ID header.
	Tenant string
	// Token, when set, is sent as "Authorization: Bearer <Token>".
	Token string
	// Tokens, when set, gives the bearer token of each request (SMART
	// Backend Services: *smartclient.Source); not together with Token.
	// Its failure fails the Bundle without a retry.
	Tokens TokenSource
	// Parallel is the most requests in flight at once, across all files.
	Parallel int
	// BatchSize is the number of NDJSON lines per batch Bundle.
	BatchSize int
	// Timeout bounds each HTTP attempt, reading the answer included.
	Timeout time.Duration
	// Retries is how many times a request is sent again after a 429, a
	// 503 or a failure to get any answer; 0 means DefaultRetries and a
	// negative value means none.
	Retries int
	// RetryBase and RetryMax shape the backoff without a Retry-After
	// header: RetryBase doubled on every attempt, capped at RetryMax,
	// with jitter.
	RetryBase, RetryMax time.Duration
	// Client sends the requests; nil means a client of its own.
	Client *http.Client
	// OnFileDone, when set, is called once for every file as its last
	// answer has been read, with the totals as of then; one call at a
	// time, from the goroutine that read that answer.
	OnFileDone func(FileResult, Totals)
}

// TokenSource hands out bearer tokens, renewing them as they expire.
type TokenSource = clientkit.TokenSource

// FileResult is the outcome of one file.
type FileResult struct {
	Path          string
	Bundles       int // Bundles sent
	Entries       int // entries sent or refused before sending
	EntriesFailed int
	Failures      int // Failure records: failed entries, Bundles and the file itself
	// Err, when set, is why the file (or part of it) was not sent at all:
	// it could not be read, or it is not a batch or transaction Bundle.
	Err     string
	Elapsed time.Duration
}

// Failed reports whether anything in the file failed.
func (r FileResult) Failed() bool { return r.Failures > 0 }

// Totals are the running counts of a load, readable while it runs.
type Totals struct {
	Files         int // files to load
	FilesDone     int
	FilesFailed   int
	Bundles       int
	Entries       int // entries answered or refused (ok + failed)
	EntriesFailed int
	Retries       int
	Elapsed       time.Duration
}

// EntriesOK is the number of entries the server accepted.
func (t Totals) EntriesOK() int { return t.Entries - t.EntriesFailed }

// Rate is entries per second so far.
func (t Totals) Rate() float64 {
	if t.Elapsed <= 0 {
		return 0
	}
	return float64(t.Entries) / t.Elapsed.Seconds()
}

// Failure is one entry, Bundle or file that did not load.
type Failure struct {
	File string
	// Entry is the index of the entry in the Bundle sent (entry[i]), or
	// -1 when the failure is not that of one entry of a Bundle sent: the
	// whole Bundle, the file, or an NDJSON line refused before sending.
	Entry int
	// Line is, for NDJSON files, the 1-based line of the entry or, with
	// Entry -1, the first line of the Bundle; 0 for Bundle files.
	Line int
	// Entries is how many entries the failure covers: 1 for an entry, the
	// Bundle's count when all of it failed, 0 when a file was not sent.
	Entries int
	// Request is the entry's request ("PUT Patient/1"), when known.
	Request string
	// Status is the HTTP status of the entry's response, or of the
	// answer to the whole Bundle; 0 when there was none.
	Status int
	// Diagnostics says what went wrong: the OperationOutcome's
	// diagnostics, or the client's own reason.
	Diagnostics string
}

// Report is the result of a load.
type Report struct {
	Totals
	// Failures in file order (the order of the inputs), then by entry.
	Failures []Failure
}

// OK reports whether everything loaded.
func (r *Report) OK() bool { return r.FilesFailed == 0 && r.EntriesFailed == 0 && len(r.Failures) == 0 }

// Loader runs loads with one Config. Its methods are safe for concurrent
// use, but Run should be called once at a time for Totals to make sense.
type Loader struct {
	cfg    Config
	base   string // URL without a trailing slash
	client *http.Client
	sleep  func(ctx context.Context, d time.Duration) error // replaced by tests

	start atomic.Int64 // unix nanoseconds of Run's start
	mu    sync.Mutex   // guards tot
	tot   Totals
	cbMu  sync.Mutex // serializes OnFileDone
}

// New checks cfg and fills in the defaults.
func New(cfg Config) (*Loader, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("loader: URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("loader: URL %q is not an http:// or https:// URL", cfg.URL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("loader: URL %q: the FHIR base has no query or fragment", cfg.URL)
	}
	switch {
	case cfg.Parallel < 0:
		return nil, fmt.Errorf("loader: Parallel %d is negative", cfg.Parallel)
	case cfg.BatchSize < 0:
		return nil, fmt.Errorf("loader: BatchSize %d is negative", cfg.BatchSize)
	case cfg.Timeout < 0:
		return nil, fmt.Errorf("loader: Timeout %s is negative", cfg.Timeout)
	case cfg.Token != "" && cfg.Tokens != nil:
		return nil, fmt.Errorf("loader: Token and Tokens: give one, not both")
	}
	if cfg.Parallel == 0 {
		cfg.Parallel = DefaultParallel
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	switch {
	case cfg.Retries == 0:
		cfg.Retries = DefaultRetries
	case cfg.Retries < 0:
		cfg.Retries = 0
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = DefaultRetryBase
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = max(DefaultRetryMax, cfg.RetryBase)
	}
	l := &Loader{cfg: cfg, base: trimSlash(u.String()), client: cfg.Client, sleep: sleepCtx}
	if l.client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = cfg.Parallel
		l.client = &http.Client{Transport: tr}
	}
	return l, nil
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}

// Totals returns the running counts of the current (or last) Run.
func (l *Loader) Totals() Totals {
	l.mu.Lock()
	t := l.tot
	l.mu.Unlock()
	if s := l.start.Load(); s != 0 && t.Elapsed == 0 {
		t.Elapsed = time.Since(time.Unix(0, s))
	}
	return t
}

// fileState tracks one input while its Bundles are in flight.
type fileState struct {
	in    Input
	index int // position in the inputs, for ordering failures
	start time.Time

	mu       sync.Mutex
	pending  int  // Bundles produced and not yet answered
	produced bool // the file has been read to its end
	res      FileResult
	failures []Failure
}

// job is one Bundle to send.
type job struct {
	file    *fileState
	body    []byte
	kind    string // batch or transaction
	entries []entryRef
}

// entryRef is what the report needs to know of an entry sent.
type entryRef struct {
	line    int    // NDJSON line, 0 for Bundle files
	request string // "PUT Patient/1"
}

// Run loads the inputs (see Collect) and returns the report. Failures of
// files, Bundles and entries are in the report, not in the error: the
// error is ctx's when the load was cut short, with the report of what was
// done so far.
func (l *Loader) Run(ctx context.Context, inputs []Input) (*Report, error) {
	start := time.Now()
	l.start.Store(start.UnixNano())
	l.mu.Lock()
	l.tot = Totals{Files: len(inputs)}
	l.mu.Unlock()

	files := make([]*fileState, len(inputs))
	for i, in := range inputs {
		files[i] = &fileState{in: in, index: i, res: FileResult{Path: in.Path}}
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	for range l.cfg.Parallel {
		wg.Go(func() {
			for j := range jobs {
				l.send(ctx, j)
				l.jobDone(j.file)
			}
		})
	}
	for _, f := range files {
		if ctx.Err() != nil {
			break
		}
		f.start = time.Now()
		l.produce(ctx, f, jobs)
		if ctx.Err() != nil {
			// Cut short: the file is not done, whatever was sent of it.
			break
		}
		f.mu.Lock()
		f.produced = true
		done := f.pending == 0
		f.mu.Unlock()
		if done {
			l.fileDone(f)
		}
	}
	close(jobs)
	wg.Wait()

	rep := &Report{}
	for _, f := range files {
		rep.Failures = append(rep.Failures, f.failures...)
	}
	l.mu.Lock()
	l.tot.Elapsed = time.Since(start)
	rep.Totals = l.tot
	l.mu.Unlock()
	return rep, ctx.Err()
}

// produce reads one file into jobs; a failure to read it is recorded on
// the file.
func (l *Loader) produce(ctx context.Context, f *fileState, jobs chan<- job) {
	emit := func(j job) bool {
		j.file = f
		f.mu.Lock()
		f.pending++
		f.mu.Unlock()
		select {
		case jobs <- j:
			return true
		case <-ctx.Done():
			f.mu.Lock()
			f.pending--
			f.mu.Unlock()
			return false
		}
	}
	var err error
	switch f.in.Kind {
	case KindBundle:
		err = l.readBundleFile(f, emit)
	case KindNDJSON:
		err = l.readNDJSON(f, emit)
	default:
		err = errors.New("not a *.json Bundle or *.ndjson file")
	}
	if err != nil && ctx.Err() == nil {
		f.mu.Lock()
		f.res.Err = err.Error()
		f.res.Failures++
		f.failures = append(f.failures, Failure{File: f.in.Path, Entry: -1, Diagnostics: err.Error()})
		f.mu.Unlock()
	}
}

// record adds the result of one Bundle (or of lines refused before
// sending) to the file and the totals.
func (l *Loader) record(f *fileState, sent bool, entries int, failures []Failure) {
	failed := 0
	for _, fl := range failures {
		failed += fl.Entries
	}
	f.mu.Lock()
	if sent {
		f.res.Bundles++
	}
	f.res.Entries += entries
	f.res.EntriesFailed += failed
	f.res.Failures += len(failures)
	f.failures = append(f.failures, failures...)
	f.mu.Unlock()
	l.mu.Lock()
	if sent {
		l.tot.Bundles++
	}
	l.tot.Entries += entries
	l.tot.EntriesFailed += failed
	l.mu.Unlock()
}

func (l *Loader) addRetry() {
	l.mu.Lock()
	l.tot.Retries++
	l.mu.Unlock()
}

func (l *Loader) jobDone(f *fileState) {
	f.mu.Lock()
	f.pending--
	done := f.produced && f.pending == 0
	f.mu.Unlock()
	if done {
		l.fileDone(f)
	}
}

// fileDone is called exactly once per file, by whoever saw its last
// Bundle answered after it was read to the end.
func (l *Loader) fileDone(f *fileState) {
	f.mu.Lock()
	f.res.Elapsed = time.Since(f.start)
	slices.SortStableFunc(f.failures, func(a, b Failure) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Entry - b.Entry
	})
	res := f.res
	f.mu.Unlock()
	l.cbMu.Lock()
	defer l.cbMu.Unlock()
	l.mu.Lock()
	l.tot.FilesDone++
	if res.Failed() {
		l.tot.FilesFailed++
	}
	l.mu.Unlock()
	if l.cfg.OnFileDone != nil {
		l.cfg.OnFileDone(res, l.Totals())
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

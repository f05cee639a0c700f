package loader

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fhirbucket/internal/clientkit"
	"fhirbucket/loader/loadertest"
)

// waits records the backoff a loader asked for instead of sleeping.
type waits struct {
	mu sync.Mutex
	d  []time.Duration
}

func (w *waits) sleep(ctx context.Context, d time.Duration) error {
	w.mu.Lock()
	w.d = append(w.d, d)
	w.mu.Unlock()
	return ctx.Err()
}

func (w *waits) all() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.d)
}

// newLoader returns a loader of the fake whose waits are recorded.
func newLoader(t *testing.T, srv *loadertest.Server, cfg Config) (*Loader, *waits) {
	t.Helper()
	cfg.URL = srv.URL
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := &waits{}
	l.sleep = w.sleep
	return l, w
}

func newFake(t *testing.T) *loadertest.Server {
	t.Helper()
	srv := loadertest.New()
	t.Cleanup(srv.Close)
	return srv
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeGzip(t *testing.T, dir, name, content string) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(content))
	zw.Close()
	return writeFile(t, dir, name, buf.String())
}

// ndjson is n Patient lines; line i (1-based) has id p<i> when withID(i).
func ndjson(n int, withID func(i int) bool) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		if withID(i) {
			fmt.Fprintf(&b, `{"resourceType":"Patient","id":"p%d","birthDate":"1970-01-01","weight":1.50}`+"\n", i)
		} else {
			fmt.Fprintf(&b, `{"resourceType":"Patient","active":true}`+"\n")
		}
	}
	return b.String()
}

// bundleJSON is a Bundle of the type with one PUT Patient entry per id.
func bundleJSON(typ string, ids ...string) string {
	var entries []string
	for _, id := range ids {
		entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Patient","id":%q},"request":{"method":"PUT","url":"Patient/%s"}}`, id, id))
	}
	return fmt.Sprintf(`{"resourceType":"Bundle","type":%q,"entry":[%s]}`, typ, strings.Join(entries, ","))
}

func load(t *testing.T, l *Loader, paths ...string) *Report {
	t.Helper()
	inputs, err := Collect(paths)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := l.Run(t.Context(), inputs)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestNDJSONBatching(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name      string
		lines     int
		batch     int
		wantSizes []int
	}{
		{"250 by 100", 250, 100, []int{100, 100, 50}},
		{"exact multiple", 20, 10, []int{10, 10}},
		{"one line", 1, 100, []int{1}},
		{"smaller than a batch", 7, 100, []int{7}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFake(t)
			// Every third line has no id.
			p := writeFile(t, dir, tc.name+".ndjson", ndjson(tc.lines, func(i int) bool { return i%3 != 0 }))
			l, _ := newLoader(t, srv, Config{BatchSize: tc.batch, Parallel: 1, Tenant: "acme", Token: "s3cret"})
			rep := load(t, l, p)
			if !rep.OK() || rep.Entries != tc.lines || rep.Bundles != len(tc.wantSizes) {
				t.Fatalf("report %+v, want %d entries in %d bundles, no failure", rep, tc.lines, len(tc.wantSizes))
			}
			var sizes []int
			line := 0
			for _, r := range srv.Requests() {
				sizes = append(sizes, len(r.Entries))
				if r.Type != "batch" {
					t.Errorf("Bundle.type %q, want batch", r.Type)
				}
				if got := r.Header.Get("X-Tenant-ID"); got != "acme" {
					t.Errorf("X-Tenant-ID %q", got)
				}
				if got := r.Header.Get("Authorization"); got != "Bearer s3cret" {
					t.Errorf("Authorization %q", got)
				}
				if got := r.Header.Get("Content-Type"); got != "application/fhir+json" {
					t.Errorf("Content-Type %q", got)
				}
				for _, e := range r.Entries {
					line++
					want := entryFor(line)
					if e.Method+" "+e.URL != want {
						t.Errorf("line %d sent as %s %s, want %s", line, e.Method, e.URL, want)
					}
				}
			}
			if !slices.Equal(sizes, tc.wantSizes) {
				t.Errorf("bundle sizes %v, want %v (parallel 1 keeps them in order)", sizes, tc.wantSizes)
			}
		})
	}
}

// entryFor is the request the ndjson helper's line i must become.
func entryFor(i int) string {
	if i%3 == 0 {
		return "POST Patient"
	}
	return fmt.Sprintf("PUT Patient/p%d", i)
}

// TestNDJSONStreams checks that a file is sent while it is still being
// read: the first Bundle reaches the server before the file's end is
// written.
func TestNDJSONStreams(t *testing.T) {
	srv := newFake(t)
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pipe.ndjson")
	if err := mkfifo(fifo); err != nil {
		t.Skipf("no named pipes here: %v", err)
	}
	l, _ := newLoader(t, srv, Config{BatchSize: 2, Parallel: 1})
	done := make(chan *Report, 1)
	go func() {
		rep, _ := l.Run(t.Context(), []Input{{Path: fifo, Kind: KindNDJSON}})
		done <- rep
	}()
	f, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	w.WriteString(ndjson(2, func(int) bool { return true }))
	w.Flush()
	deadline := time.Now().Add(10 * time.Second)
	for len(srv.Requests()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no Bundle sent before the end of the file")
		}
		time.Sleep(5 * time.Millisecond)
	}
	w.WriteString(`{"resourceType":"Patient","id":"last"}` + "\n")
	w.Flush()
	f.Close()
	if rep := <-done; !rep.OK() || rep.Entries != 3 || rep.Bundles != 2 {
		t.Fatalf("report %+v", rep)
	}
}

func TestNDJSONBadLines(t *testing.T) {
	srv := newFake(t)
	content := strings.Join([]string{
		`{"resourceType":"Patient","id":"ok1"}`,
		`not json`,
		``,
		`{"resourceType":"Nope","id":"x"}`,
		`{"id":"x"}`,
		`{"resourceType":"Patient","id":"has space"}`,
		`[1,2]`,
		`{"resourceType":"Patient","id":"ok2"}`,
	}, "\n")
	p := writeFile(t, t.TempDir(), "mixed.ndjson", content)
	l, _ := newLoader(t, srv, Config{})
	rep := load(t, l, p)
	if rep.Entries != 7 || rep.EntriesFailed != 5 || rep.Bundles != 1 || rep.FilesFailed != 1 {
		t.Fatalf("report %+v, want 7 entries (the blank line is none), 5 failed, 1 bundle", rep.Totals)
	}
	var lines []int
	for _, f := range rep.Failures {
		lines = append(lines, f.Line)
		if f.Status != 0 || f.Entries != 1 || f.Diagnostics == "" {
			t.Errorf("failure %+v: want a line refused before sending, with a reason", f)
		}
	}
	if !slices.Equal(lines, []int{2, 4, 5, 6, 7}) {
		t.Errorf("failed lines %v, want 2 4 5 6 7", lines)
	}
	if got := srv.Requests()[0].Entries; len(got) != 2 || got[1].URL != "Patient/ok2" {
		t.Errorf("sent %+v, want the two good lines", got)
	}
}

func TestBundleFiles(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name, file, content string
		sent                bool
		entries, failed     int
		diag                string // substring of the one failure
	}{
		{"batch", "b.json", bundleJSON("batch", "a", "b"), true, 2, 0, ""},
		{"transaction", "t.json", bundleJSON("transaction", "a", "b", "c"), true, 3, 0, ""},
		{"gzipped transaction", "t.json.gz", bundleJSON("transaction", "a"), true, 1, 0, ""},
		{"document", "d.json", bundleJSON("document", "a"), false, 0, 0, `"document"`},
		{"collection", "c.json", bundleJSON("collection", "a"), false, 0, 0, `"collection"`},
		{"not a Bundle", "p.json", `{"resourceType":"Patient","id":"x"}`, false, 0, 0, "Bundle"},
		{"not JSON", "x.json", `{{`, false, 0, 0, "Bundle"},
		{"batch entry fails", "bf.json", bundleJSON("batch", "a", "bad1", "c"), true, 3, 1, "Patient/bad1 is refused"},
		{"transaction fails whole", "tf.json", bundleJSON("transaction", "a", "bad1", "c"), true, 3, 3, "transaction failed: entry 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFake(t)
			var p string
			if strings.HasSuffix(tc.file, ".gz") {
				p = writeGzip(t, dir, tc.file, tc.content)
			} else {
				p = writeFile(t, dir, tc.file, tc.content)
			}
			l, _ := newLoader(t, srv, Config{})
			rep := load(t, l, p)
			if got := len(srv.Requests()); got != map[bool]int{true: 1, false: 0}[tc.sent] {
				t.Fatalf("%d requests, sent %v", got, tc.sent)
			}
			if rep.Entries != tc.entries || rep.EntriesFailed != tc.failed {
				t.Errorf("entries %d, failed %d; want %d, %d", rep.Entries, rep.EntriesFailed, tc.entries, tc.failed)
			}
			if tc.diag == "" {
				if !rep.OK() {
					t.Errorf("failures %v", rep.Failures)
				}
				return
			}
			if rep.OK() || len(rep.Failures) != 1 || rep.FilesFailed != 1 {
				t.Fatalf("report %+v, want one failure", rep)
			}
			if f := rep.Failures[0]; !strings.Contains(f.Diagnostics, tc.diag) || f.File != p {
				t.Errorf("failure %+v, want diagnostics with %q", f, tc.diag)
			}
		})
	}
}

func TestEntryFailureDetail(t *testing.T) {
	srv := newFake(t)
	ids := func(i int) bool { return true }
	content := strings.Replace(ndjson(5, ids), `"id":"p4"`, `"id":"bad4"`, 1)
	p := writeFile(t, t.TempDir(), "o.ndjson", content)
	l, _ := newLoader(t, srv, Config{BatchSize: 3})
	rep := load(t, l, p)
	want := Failure{File: p, Entry: 0, Line: 4, Entries: 1, Request: "PUT Patient/bad4", Status: 422,
		Diagnostics: "entry 0: Patient/bad4 is refused"}
	if len(rep.Failures) != 1 || rep.Failures[0] != want {
		t.Fatalf("failures %+v, want %+v", rep.Failures, want)
	}
	if rep.EntriesOK() != 4 || rep.EntriesFailed != 1 {
		t.Errorf("totals %+v", rep.Totals)
	}
}

func TestRetries(t *testing.T) {
	date := time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat)
	hdr := func(v string) http.Header { return http.Header{"Retry-After": {v}} }
	cases := []struct {
		name     string
		kind     string // of the Bundle file
		script   map[int]int
		headers  map[int]http.Header
		retries  int
		requests int
		failed   bool
		status   int                                   // of the failure
		checkW   func(t *testing.T, w []time.Duration) // the waits asked for
	}{
		{name: "429 honours Retry-After seconds", script: map[int]int{1: 429}, headers: map[int]http.Header{1: hdr("7")}, requests: 2,
			checkW: func(t *testing.T, w []time.Duration) {
				if !slices.Equal(w, []time.Duration{7 * time.Second}) {
					t.Errorf("waits %v, want [7s]", w)
				}
			}},
		{name: "503 honours a Retry-After date", script: map[int]int{1: 503}, headers: map[int]http.Header{1: hdr(date)}, requests: 2,
			checkW: func(t *testing.T, w []time.Duration) {
				if len(w) != 1 || w[0] < 1*time.Second || w[0] > 3*time.Second {
					t.Errorf("waits %v, want one of about 2-3s", w)
				}
			}},
		{name: "429 then 503 then ok, backoff without Retry-After", script: map[int]int{1: 429, 2: 503}, requests: 3,
			checkW: func(t *testing.T, w []time.Duration) {
				// RetryBase 100ms: [50ms,100ms], then [100ms,200ms].
				if len(w) != 2 || w[0] < 50*time.Millisecond || w[0] > 100*time.Millisecond || w[1] < 100*time.Millisecond || w[1] > 200*time.Millisecond {
					t.Errorf("waits %v, want capped exponential backoff from 100ms", w)
				}
			}},
		{name: "retries run out", script: map[int]int{1: 503, 2: 503, 3: 503, 4: 503}, retries: 3, requests: 4, failed: true, status: 503},
		{name: "no retries", script: map[int]int{1: 429}, retries: -1, requests: 1, failed: true, status: 429},
		{name: "400 is not retried", script: map[int]int{1: 400}, requests: 1, failed: true, status: 400},
		{name: "409 is not retried", script: map[int]int{1: 409}, requests: 1, failed: true, status: 409},
		{name: "transaction 500 is not retried", kind: "transaction", script: map[int]int{1: 500}, requests: 1, failed: true, status: 500},
		{name: "transaction 429 is retried", kind: "transaction", script: map[int]int{1: 429}, requests: 2},
		{name: "backoff is capped", script: map[int]int{1: 503, 2: 503, 3: 503, 4: 503, 5: 503}, requests: 6,
			checkW: func(t *testing.T, w []time.Duration) {
				if len(w) != 5 || slices.Max(w) > 300*time.Millisecond {
					t.Errorf("waits %v, want 5 of at most RetryMax 300ms", w)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newFake(t)
			srv.Script = func(r loadertest.Request) (int, http.Header) {
				return tc.script[r.Attempt], tc.headers[r.Attempt]
			}
			kind := tc.kind
			if kind == "" {
				kind = "batch"
			}
			p := writeFile(t, t.TempDir(), "b.json", bundleJSON(kind, "a", "b"))
			l, w := newLoader(t, srv, Config{Retries: tc.retries, RetryBase: 100 * time.Millisecond, RetryMax: 300 * time.Millisecond})
			rep := load(t, l, p)
			if got := len(srv.Requests()); got != tc.requests {
				t.Errorf("%d requests, want %d", got, tc.requests)
			}
			if rep.Retries != tc.requests-1 {
				t.Errorf("report says %d retries, want %d", rep.Retries, tc.requests-1)
			}
			if !tc.failed {
				if !rep.OK() || rep.EntriesOK() != 2 {
					t.Errorf("report %+v", rep)
				}
			} else {
				if len(rep.Failures) != 1 || rep.EntriesFailed != 2 {
					t.Fatalf("report %+v, want the whole Bundle failed", rep)
				}
				f := rep.Failures[0]
				if f.Status != tc.status || f.Entry != -1 || f.Entries != 2 || !strings.Contains(f.Diagnostics, fmt.Sprintf("scripted %d", tc.status)) {
					t.Errorf("failure %+v, want status %d with the outcome's diagnostics", f, tc.status)
				}
			}
			if tc.checkW != nil {
				tc.checkW(t, w.all())
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{" 12 ", 12 * time.Second, true},
		{"-1", 0, false},
		{"99999999999999", clientkit.MaxRetryAfter, true},
		{"1.5", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{now.Add(24 * time.Hour).Format(http.TimeFormat), clientkit.MaxRetryAfter, true},
		{"soon", 0, false},
	}
	for _, tc := range cases {
		got, ok := retryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("retryAfter(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestConnectionErrors(t *testing.T) {
	t.Run("refused connections are retried, then fail", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		p := writeFile(t, t.TempDir(), "b.json", bundleJSON("batch", "a"))
		l, err := New(Config{URL: "http://" + addr, Retries: 2})
		if err != nil {
			t.Fatal(err)
		}
		w := &waits{}
		l.sleep = w.sleep
		rep := load(t, l, p)
		if len(w.all()) != 2 || len(rep.Failures) != 1 {
			t.Fatalf("waits %v, failures %v: want 2 retries, then one failure", w.all(), rep.Failures)
		}
		if f := rep.Failures[0]; f.Status != 0 || !strings.Contains(f.Diagnostics, "after 2 retries") {
			t.Errorf("failure %+v", f)
		}
	})
	cases := []struct {
		name     string
		bundle   string
		requests int
		ok       bool
	}{
		{"PUT-only Bundle is sent again", bundleJSON("batch", "a", "b"), 2, true},
		{"Bundle with a POST is not sent again once written", `{"resourceType":"Bundle","type":"transaction","entry":[` +
			`{"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}]}`, 1, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := loadertest.NewWith(dropFirst)
			t.Cleanup(srv.Close)
			p := writeFile(t, t.TempDir(), "b.json", tc.bundle)
			l, _ := newLoader(t, srv, Config{})
			rep := load(t, l, p)
			if got := len(srv.Requests()); got != tc.requests {
				t.Errorf("%d requests, want %d", got, tc.requests)
			}
			if rep.OK() != tc.ok {
				t.Errorf("report %+v", rep)
			}
			if !tc.ok && !strings.Contains(rep.Failures[0].Diagnostics, "may have applied it") {
				t.Errorf("failure %+v should say the server may have applied it", rep.Failures[0])
			}
		})
	}
}

// dropFirst lets the first request reach next (which records it) and
// then closes its connection without an answer.
func dropFirst(next http.Handler) http.Handler {
	var mu sync.Mutex
	n := 0
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		if !first {
			next.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(discard{}, r)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	})
}

// discard is a ResponseWriter that keeps nothing.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(b []byte) (int, error) { return len(b), nil }
func (discard) WriteHeader(int)             {}

func TestParallelBound(t *testing.T) {
	for _, parallel := range []int{1, 3} {
		t.Run(fmt.Sprint(parallel), func(t *testing.T) {
			srv := newFake(t)
			srv.Delay = 30 * time.Millisecond
			dir := t.TempDir()
			for i := range 5 {
				writeFile(t, dir, fmt.Sprintf("f%d.json", i), bundleJSON("batch", fmt.Sprint("b", i)))
			}
			// One NDJSON file of 6 Bundles: Bundles of one file are in
			// flight together too.
			writeFile(t, dir, "many.ndjson", ndjson(12, func(int) bool { return true }))
			l, _ := newLoader(t, srv, Config{Parallel: parallel, BatchSize: 2})
			rep := load(t, l, dir)
			if !rep.OK() || rep.Bundles != 11 || rep.Files != 6 || rep.FilesDone != 6 {
				t.Fatalf("report %+v", rep)
			}
			got := srv.MaxInFlight()
			if got > parallel {
				t.Errorf("%d requests in flight at once, --parallel %d", got, parallel)
			}
			if parallel > 1 && got < 2 {
				t.Errorf("at most %d request in flight with parallel %d: nothing ran in parallel", got, parallel)
			}
		})
	}
}

func TestCollect(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"b/2.json", "b/1.ndjson", "a.json.gz", "c/d/e.NDJSON.gz", "notes.txt", ".hidden.json", ".git/x.json", "b/readme.md"} {
		writeFile(t, dir, n, "")
	}
	got, err := Collect([]string{dir, filepath.Join(dir, "a.json.gz")})
	if err != nil {
		t.Fatal(err)
	}
	want := []Input{
		{filepath.Join(dir, "a.json.gz"), KindBundle, true},
		{filepath.Join(dir, "b/1.ndjson"), KindNDJSON, false},
		{filepath.Join(dir, "b/2.json"), KindBundle, false},
		{filepath.Join(dir, "c/d/e.NDJSON.gz"), KindNDJSON, true},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Collect = %v\nwant %v", got, want)
	}
	for _, bad := range [][]string{nil, {filepath.Join(dir, "notes.txt")}, {filepath.Join(dir, "missing")}} {
		if _, err := Collect(bad); err == nil {
			t.Errorf("Collect(%q) succeeded", bad)
		}
	}
}

func TestProgress(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.ndjson", ndjson(3, func(int) bool { return true }))
	writeFile(t, dir, "b.json", bundleJSON("batch", "x", "bad"))
	writeFile(t, dir, "c.json", bundleJSON("document", "x"))
	for _, bar := range []bool{false, true} {
		t.Run(fmt.Sprintf("bar=%v", bar), func(t *testing.T) {
			srv := newFake(t)
			srv.Delay = 150 * time.Millisecond // let the bar redraw at least once
			var out syncBuffer
			var p *Progress
			l, _ := newLoader(t, srv, Config{Parallel: 1, OnFileDone: func(r FileResult, tot Totals) { p.FileDone(r, tot) }})
			p = StartProgress(&out, bar, l.Totals)
			rep := load(t, l, dir)
			p.Stop()
			s := out.String()
			if bar {
				if !strings.Contains(s, "\r") || !strings.Contains(s, "files 3/3") || !strings.HasSuffix(s, "\n") {
					t.Errorf("bar output %q", s)
				}
				return
			}
			if strings.ContainsAny(s, "\r\x1b") {
				t.Errorf("plain output has control characters: %q", s)
			}
			lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
			if len(lines) != 3 {
				t.Fatalf("%d lines, want one per file:\n%s", len(lines), s)
			}
			for i, l := range lines {
				if !strings.HasPrefix(l, fmt.Sprintf("[%d/3] ", i+1)) {
					t.Errorf("line %d %q does not start with [%d/3]", i, l, i+1)
				}
			}
			// Files finish in the order of their answers, not of the inputs.
			for _, want := range []string{"a.ndjson: 3 entries, 0 failed, 1 bundles", "b.json: 2 entries, 1 failed", `c.json: failed: not sent: only batch and transaction Bundles can be loaded, and Bundle.type is "document"`} {
				if !strings.Contains(s, want) {
					t.Errorf("no line with %q:\n%s", want, s)
				}
			}
			if rep.FilesFailed != 2 {
				t.Errorf("files failed %d", rep.FilesFailed)
			}
		})
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestSummary(t *testing.T) {
	rep := &Report{Totals: Totals{Files: 2, FilesDone: 2, FilesFailed: 1, Bundles: 3, Entries: 160, EntriesFailed: 60, Elapsed: 2 * time.Second}}
	for i := range 60 {
		rep.Failures = append(rep.Failures, Failure{File: "x.ndjson", Entry: i, Line: i + 1, Entries: 1, Request: "PUT Patient/p", Status: 422, Diagnostics: "bad\nthing"})
	}
	var b bytes.Buffer
	rep.WriteSummary(&b, 0)
	s := b.String()
	for _, want := range []string{"files: 2 (1 with failures), bundles: 3, entries: 100 ok, 60 failed", "80.0 entries/s", "failures (60):",
		"  x.ndjson line 1 entry[0] PUT Patient/p: 422: bad thing\n", "  … and 10 more\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	if n := strings.Count(s, "PUT Patient/p"); n != DefaultMaxFailures {
		t.Errorf("%d failures listed, want %d", n, DefaultMaxFailures)
	}
}

func TestInterpret(t *testing.T) {
	j := job{file: &fileState{in: Input{Path: "f"}}, kind: "batch", entries: []entryRef{{request: "PUT A/1"}, {request: "PUT A/2"}, {request: "PUT A/3"}}}
	cases := []struct {
		name   string
		status int
		body   string
		want   []string // Failure.String() of each
	}{
		{"not a Bundle", 200, `{"resourceType":"Patient"}`, []string{`f (all 3 entries): 200: the answer is not a Bundle`}},
		{"wrong type", 200, `{"resourceType":"Bundle","type":"transaction-response"}`, []string{`f (all 3 entries): 200: the answer is a Bundle of type "transaction-response", want "batch-response"`}},
		{"short answer", 200, `{"resourceType":"Bundle","type":"batch-response","entry":[{"response":{"status":"200"}},{"response":{"status":"OK"}}]}`,
			[]string{`f entry[1] PUT A/2: response.status "OK" is not an HTTP status`, `f entry[2] PUT A/3: the answer has 2 entries, no response for this one`}},
		{"outcome without diagnostics", 200, `{"resourceType":"Bundle","type":"batch-response","entry":[{"response":{"status":"201 Created"}},{"response":{"status":"404 Not Found","outcome":{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found","details":{"text":"gone"}}]}}},{"response":{"status":"409 Conflict"}}]}`,
			[]string{`f entry[1] PUT A/2: 404: gone`, `f entry[2] PUT A/3: 409: 409 Conflict`}},
		{"HTML error page", 502, "<html>\n<b>Bad gateway</b></html>", []string{`f (all 3 entries): 502: 502 Bad Gateway: <html> <b>Bad gateway</b></html>`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, f := range j.interpret(&answer{status: tc.status, body: []byte(tc.body)}) {
				got = append(got, f.String())
			}
			if len(got) != len(tc.want) {
				t.Fatalf("failures %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("failure %q, want %q", got[i], tc.want[i])
				}
			}
		})
	}
}

// FuzzInterpret feeds arbitrary answers to the response reader: it must
// not panic, and the failures it reports never cover more entries than
// were sent.
func FuzzInterpret(f *testing.F) {
	f.Add(200, []byte(`{"resourceType":"Bundle","type":"batch-response","entry":[{"response":{"status":"422","outcome":{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"x","diagnostics":"d"}]}}}]}`))
	f.Add(400, []byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid"}]}`))
	f.Add(200, []byte(`{"resourceType":"Bundle","type":"batch-response","entry":[{"response":{"status":" 2"}}]}`))
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		j := job{file: &fileState{in: Input{Path: "f"}}, kind: "batch", entries: []entryRef{{request: "PUT A/1"}, {request: "POST A"}}}
		covered := 0
		for _, fl := range j.interpret(&answer{status: status, body: body}) {
			covered += fl.Entries
			_ = fl.String()
		}
		if covered > 2 {
			t.Fatalf("failures cover %d entries of 2", covered)
		}
	})
}

// FuzzRetryAfter: any header value gives a wait in [0, clientkit.MaxRetryAfter].
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "120", "Wed, 21 Oct 2015 07:28:00 GMT", "-5", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := retryAfter(v, time.Now())
		if d < 0 || d > clientkit.MaxRetryAfter || (!ok && d != 0) {
			t.Fatalf("retryAfter(%q) = %v, %v", v, d, ok)
		}
	})
}

// TestInterrupted: cancelling the context ends Run with ctx's error and
// the report of what was done; nothing is left in flight.
func TestInterrupted(t *testing.T) {
	srv := newFake(t)
	srv.Delay = 200 * time.Millisecond
	dir := t.TempDir()
	for i := range 4 {
		writeFile(t, dir, fmt.Sprintf("f%d.json", i), bundleJSON("batch", "a"))
	}
	inputs, err := Collect([]string{dir})
	if err != nil {
		t.Fatal(err)
	}
	l, _ := newLoader(t, srv, Config{Parallel: 1})
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		for len(srv.Requests()) == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	rep, err := l.Run(ctx, inputs)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v, want context.Canceled", err)
	}
	if rep.FilesDone > 1 || rep.Files != 4 || len(rep.Failures) != 1 || !strings.Contains(rep.Failures[0].Diagnostics, "interrupted") {
		t.Errorf("report %+v, want one interrupted Bundle and files left", rep)
	}
	if n := len(srv.Requests()); n != 1 {
		t.Errorf("%d requests after the interruption, want 1", n)
	}
}

// tokenFunc is a TokenSource from a function.
type tokenFunc func(context.Context) (string, error)

func (f tokenFunc) Token(ctx context.Context) (string, error) { return f(ctx) }

// TestTokenSource: with Tokens each request carries the token the source
// gives at that moment, and a source that fails fails the Bundle without
// sending it or retrying.
func TestTokenSource(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "a.ndjson", ndjson(5, func(int) bool { return true }))
	srv := newFake(t)
	var n atomic.Int32
	l, _ := newLoader(t, srv, Config{BatchSize: 2, Parallel: 1, Tokens: tokenFunc(func(context.Context) (string, error) {
		return fmt.Sprintf("tok-%d", n.Add(1)), nil
	})})
	if rep := load(t, l, p); !rep.OK() {
		t.Fatalf("report %+v", rep)
	}
	for i, r := range srv.Requests() {
		if got, want := r.Header.Get("Authorization"), fmt.Sprintf("Bearer tok-%d", i+1); got != want {
			t.Errorf("request %d: Authorization %q, want %q", i, got, want)
		}
	}

	srv = newFake(t)
	l, _ = newLoader(t, srv, Config{BatchSize: 10, Parallel: 1, Tokens: tokenFunc(func(context.Context) (string, error) {
		return "", errors.New("the token endpoint answered 401 invalid_client")
	})})
	rep := load(t, l, p)
	if rep.OK() || rep.EntriesFailed != 5 || rep.Retries != 0 || len(srv.Requests()) != 0 {
		t.Fatalf("report %+v, %d requests; want 5 failed entries, nothing sent", rep, len(srv.Requests()))
	}
	if !strings.Contains(rep.Failures[0].Diagnostics, "invalid_client") {
		t.Errorf("failure %+v does not say why", rep.Failures[0])
	}
	if _, err := New(Config{URL: "http://x", Token: "a", Tokens: tokenFunc(nil)}); err == nil {
		t.Error("Token and Tokens accepted together")
	}
}

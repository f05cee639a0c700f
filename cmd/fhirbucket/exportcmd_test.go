package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"fhirbucket/bulk"
	"fhirbucket/bulk/export"
	"fhirbucket/fhirstore"
	"fhirbucket/internal/testenv"
	"fhirbucket/server"
	"fhirbucket/storage/memstore"
)

// TestExportCommand runs `fhirbucket export` over HTTP against a real
// server (server.New with an export service over memstore): the first run
// is interrupted by two downloads that fail (exit 1, those files absent,
// the others complete); the second run in the same folder resumes the
// job without a new kick-off, downloads only the two missing files, and
// every resource is in the folder exactly once with the manifest's line
// counts.
func TestExportCommand(t *testing.T) {
	ctx := t.Context()
	st, err := fhirstore.New(fhirstore.Config{Mode: fhirstore.TenancyPrefix, Bucket: memstore.New(),
		Validator: testenv.Validator(t), Logger: testenv.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	const n = 230
	for i := range n {
		id := fmt.Sprintf("e%04d", i)
		body := fmt.Sprintf(`{"resourceType":"Patient","id":"%s","name":[{"family":"F%d"}]}`, id, i)
		if _, _, err := st.Update(ctx, "default", "Patient", id, []byte(body), fhirstore.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	svc, err := export.New(export.Config{Store: st, Owner: "test", Limits: bulk.Limits{MaxLines: 25},
		RetryAfter: time.Second, MinPoll: time.Millisecond, Logger: testenv.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Open(ctx); err != nil {
		t.Fatal(err)
	}
	defer svc.Close(ctx)
	h, err := server.New(server.Config{Store: st, Export: svc, Logger: testenv.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	var kickoffs, downloads, gzipped atomic.Int64
	var failing atomic.Bool
	failing.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/$export"):
			kickoffs.Add(1)
		case strings.HasSuffix(r.URL.Path, "/$export-file"):
			name := r.URL.Query().Get("name")
			if failing.Load() && (strings.HasSuffix(name, ".3.ndjson") || strings.HasSuffix(name, ".7.ndjson")) {
				http.Error(w, "not now", http.StatusForbidden)
				return
			}
			downloads.Add(1)
			if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
				gzipped.Add(1)
			}
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	out := t.TempDir()
	args := []string{"export", "--url", srv.URL, "--out", out, "--type", "Patient", "--progress", "never", "--retries", "1"}
	var stdout, stderr bytes.Buffer
	if code := run(ctx, args, nil, &stdout, &stderr); code != exitProblems {
		t.Fatalf("interrupted run: exit %d, want %d\n%s\n%s", code, exitProblems, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "2 of 10 files failed") {
		t.Errorf("stderr of the interrupted run: %s", stderr.String())
	}
	first := downloads.Load()
	if first != 8 {
		t.Errorf("first run downloaded %d files, want 8", first)
	}
	failing.Store(false)
	stdout.Reset()
	stderr.Reset()
	if code := run(ctx, append(args, "--progress", "always"), nil, &stdout, &stderr); code != exitOK {
		t.Fatalf("resumed run: exit %d\n%s\n%s", code, stdout.String(), stderr.String())
	}
	if got := downloads.Load() - first; got != 2 {
		t.Errorf("resumed run downloaded %d files, want the 2 missing ones", got)
	}
	if kickoffs.Load() != 1 {
		t.Errorf("%d kick-offs, want 1 (the resumed run polls the same job)", kickoffs.Load())
	}
	if gzipped.Load() != downloads.Load() {
		t.Errorf("%d of %d downloads asked for gzip", gzipped.Load(), downloads.Load())
	}
	if !strings.Contains(stdout.String(), "files: 10 (2 downloaded, 8 already complete), lines: 230") {
		t.Errorf("summary: %s", stdout.String())
	}
	if !strings.Contains(stderr.String(), "\r") {
		t.Errorf("no progress bar with --progress always: %q", stderr.String())
	}
	seen := map[string]int{}
	names, _ := filepath.Glob(filepath.Join(out, "*.ndjson"))
	for _, name := range names {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(data)) {
			i := strings.Index(line, `"id":"`)
			seen[line[i+6:i+11]]++
		}
	}
	for i := range n {
		if id := fmt.Sprintf("e%04d", i); seen[id] != 1 {
			t.Errorf("%s is %d times in the folder", id, seen[id])
		}
	}
	if left, _ := filepath.Glob(filepath.Join(out, "*.part")); len(left) > 0 {
		t.Errorf("partial files left: %v", left)
	}
	// Bad usage exits 2.
	if code := run(ctx, []string{"export", "--url", srv.URL}, nil, &stdout, &stderr); code != exitError {
		t.Errorf("export without --out: exit %d", code)
	}
	if code := run(ctx, []string{"export", "--out", out, "--patient-level", "--group", "g"}, nil, &stdout, &stderr); code != exitError {
		t.Errorf("--patient-level with --group: exit %d", code)
	}
}

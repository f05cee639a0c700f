// Package testenv is the one set-up shared by the test suites: the schema
// validator (loaded once per test binary), a logger that discards, a
// locked buffer to capture a server's log, the official R4 examples, and
// a fresh bucket on every storage backend (memory, local folder, and the
// S3 servers of internal/s3test behind their environment gates).
//
// It is test-only code (it links the testing package) and imports no FHIR
// service package, so the tests of fhirstore and of everything above it can
// use it. A package whose tests open S3 backends must call s3test.Main from
// its TestMain.
package testenv

import (
	"bytes"
	"compress/gzip"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/internal/s3test"
	"fhirbucket/storage"
	"fhirbucket/storage/filestore"
	"fhirbucket/storage/memstore"
)

type validatorResult struct {
	once sync.Once
	v    *fhir.Validator
	err  error
}

var validators sync.Map // fhir.ValidatorOptions -> *validatorResult

// Validator returns the schema validator with default options. It is built
// once per test binary: loading the schema is the slow part of setting up
// a store.
func Validator(t testing.TB) *fhir.Validator {
	t.Helper()
	return ValidatorWith(t, fhir.ValidatorOptions{})
}

// ValidatorWith is Validator with opts, built once per test binary and
// options.
func ValidatorWith(t testing.TB, opts fhir.ValidatorOptions) *fhir.Validator {
	t.Helper()
	r, _ := validators.LoadOrStore(opts, &validatorResult{})
	res := r.(*validatorResult)
	res.once.Do(func() { res.v, res.err = fhir.NewValidator(opts) })
	if res.err != nil {
		t.Fatalf("fhir.NewValidator: %v", res.err)
	}
	return res.v
}

// QuietLogger returns a logger that drops every record.
func QuietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// LockedBuffer is a bytes.Buffer safe for concurrent writers and readers,
// for capturing the log of a server whose goroutines write while the test
// reads. The zero value is empty and ready to use.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// RepoRoot returns the folder holding go.mod, found from this source file
// so that it does not depend on the test's working directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// ExamplesDir returns the folder of the official R4 examples
// (testdata/r4/examples).
func ExamplesDir() string { return filepath.Join(RepoRoot(), "testdata", "r4", "examples") }

// Example is one official R4 example file.
type Example struct {
	Name string // file name, such as patient-example.json
	Body []byte
}

// Examples reads every official R4 example, in file-name order. It fails
// the test when the folder cannot be read or holds no example.
func Examples(t testing.TB) []Example {
	t.Helper()
	dir := ExamplesDir()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("testenv: official examples: %v", err)
	}
	var out []Example
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		body, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatalf("testenv: official examples: %v", err)
		}
		out = append(out, Example{Name: e.Name(), Body: body})
	}
	if len(out) == 0 {
		t.Fatalf("testenv: no official examples in %s", dir)
	}
	return out
}

// Backend is one storage implementation a suite runs on.
type Backend struct {
	Name string
	// S3 marks a networked backend: tests size their workloads down.
	S3 bool
	// Open returns a fresh, empty bucket, or skips the test (an S3
	// backend whose environment gate is not set).
	Open func(t testing.TB) storage.Bucket
}

// Backends returns every backend: memstore, filestore (in t.TempDir,
// closed by t.Cleanup), and
// MinIO and versitygw through internal/s3test (each a fresh namespace).
func Backends() []Backend {
	return []Backend{
		{Name: "memstore", Open: func(testing.TB) storage.Bucket { return memstore.New() }},
		{Name: "filestore", Open: func(t testing.TB) storage.Bucket {
			t.Helper()
			b, err := filestore.Open(t.TempDir())
			if err != nil {
				t.Fatalf("filestore.Open: %v", err)
			}
			t.Cleanup(func() { _ = b.Close() })
			return b
		}},
		{Name: "minio", S3: true, Open: func(t testing.TB) storage.Bucket { return s3test.MinIO(t).NewNamespace(t) }},
		{Name: "versitygw", S3: true, Open: func(t testing.TB) storage.Bucket { return s3test.VersityGW(t).NewNamespace(t) }},
	}
}

// EachBackend runs f as a subtest per backend. S3 backends skip (with the
// reason) unless their environment gate is set, and always with -short.
// Every subtest logs how long it took.
func EachBackend(t *testing.T, f func(t *testing.T, b Backend)) {
	t.Helper()
	for _, b := range Backends() {
		t.Run(b.Name, func(t *testing.T) {
			if testing.Short() && b.S3 {
				t.Skip("S3 backends are skipped with -short")
			}
			start := time.Now()
			t.Cleanup(func() { t.Logf("%s took %v", t.Name(), time.Since(start)) })
			f(t, b)
		})
	}
}

// SyntheaFiles returns the five Synthea transaction bundles of
// testdata/synthea (gzip), in name order.
func SyntheaFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(RepoRoot(), "testdata", "synthea", "*.json.gz"))
	if err != nil || len(files) != 5 {
		t.Fatalf("want the 5 Synthea bundles in testdata/synthea, found %d (%v)", len(files), err)
	}
	return files
}

// ReadGzip returns the uncompressed content of a gzip file.
func ReadGzip(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return data
}

// Headers builds request headers from "Name: value" lines.
func Headers(lines ...string) http.Header {
	h := http.Header{}
	for _, l := range lines {
		k, v, _ := strings.Cut(l, ":")
		h.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	return h
}

// Exchange is a finished HTTP exchange.
type Exchange struct {
	Status int
	Header http.Header
	Body   []byte
}

// Send sends req with c and reads the whole answer; a transport error
// fails t.
func Send(t testing.TB, c *http.Client, req *http.Request) Exchange {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s %s: %v", req.Method, req.URL, err)
	}
	return Exchange{Status: resp.StatusCode, Header: resp.Header, Body: data}
}

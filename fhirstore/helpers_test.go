package fhirstore

import (
	"context"
	"fmt"
	"os"
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

func TestMain(m *testing.M) { s3test.Main(m) }

// backend is one storage implementation the behaviour suite runs on.
type backend struct {
	name string
	// s3 marks a networked backend: tests size their workloads down.
	s3 bool
	// open returns a fresh, empty bucket, or skips the test.
	open func(t testing.TB) storage.Bucket
}

var backends = []backend{
	{name: "memstore", open: func(testing.TB) storage.Bucket { return memstore.New() }},
	{name: "filestore", open: func(t testing.TB) storage.Bucket {
		b, err := filestore.Open(t.TempDir())
		if err != nil {
			t.Fatalf("filestore.Open: %v", err)
		}
		return b
	}},
	{name: "minio", s3: true, open: func(t testing.TB) storage.Bucket { return s3test.MinIO(t).NewNamespace(t) }},
	{name: "versitygw", s3: true, open: func(t testing.TB) storage.Bucket { return s3test.VersityGW(t).NewNamespace(t) }},
}

// eachBackend runs f as a subtest per backend; S3 backends skip (with the
// reason) unless their environment gate is set.
func eachBackend(t *testing.T, f func(t *testing.T, bk backend)) {
	t.Helper()
	for _, bk := range backends {
		t.Run(bk.name, func(t *testing.T) {
			if testing.Short() && bk.s3 {
				t.Skip("S3 backends are skipped with -short")
			}
			start := time.Now()
			t.Cleanup(func() { t.Logf("%s took %v", t.Name(), time.Since(start)) })
			f(t, bk)
		})
	}
}

var (
	validatorOnce sync.Once
	validator     *fhir.Validator
	validatorErr  error
)

func testValidator(t testing.TB) *fhir.Validator {
	t.Helper()
	validatorOnce.Do(func() {
		validator, validatorErr = fhir.NewValidator(fhir.ValidatorOptions{MaxBytes: 4 << 20})
	})
	if validatorErr != nil {
		t.Fatalf("NewValidator: %v", validatorErr)
	}
	return validator
}

// fakeClock returns start, start+step, start+2*step, ...; step 0 returns
// the same instant for every call.
type fakeClock struct {
	mu   sync.Mutex
	t    time.Time
	step time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.t
	c.t = c.t.Add(c.step)
	return t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// newStore returns a prefix-mode Store over b.
func newStore(t testing.TB, b storage.Bucket, mod ...func(*Config)) *Store {
	t.Helper()
	cfg := Config{Bucket: b, Validator: testValidator(t)}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func withClock(c *fakeClock) func(*Config) { return func(cfg *Config) { cfg.Now = c.Now } }

func patient(id string, family string) []byte {
	if id == "" {
		return fmt.Appendf(nil, `{"resourceType":"Patient","name":[{"family":%q}]}`, family)
	}
	return fmt.Appendf(nil, `{"resourceType":"Patient","id":%q,"name":[{"family":%q}]}`, id, family)
}

// allKeys lists every key of b.
func allKeys(t testing.TB, b storage.Bucket) []string {
	t.Helper()
	var keys []string
	for a, err := range storage.Walk(context.Background(), b, storage.ListOptions{}) {
		if err != nil {
			t.Fatalf("listing: %v", err)
		}
		keys = append(keys, a.Key)
	}
	return keys
}

func mustRead(t testing.TB, b storage.Bucket, key string) ([]byte, storage.Attrs) {
	t.Helper()
	data, a, err := storage.ReadAll(context.Background(), b, key)
	if err != nil {
		t.Fatalf("reading %s: %v", key, err)
	}
	return data, a
}

// s3Sized picks the workload size for the backend.
func s3Sized(bk backend, local, s3 int) int {
	if bk.s3 {
		return s3
	}
	if v := os.Getenv("FHIRSTORE_TEST_SCALE"); v == "small" {
		return s3
	}
	return local
}

// costOf returns the storage requests made by f through c.
func costOf(c *storage.Counter, f func()) storage.Counts {
	before := c.Counts()
	f()
	return c.Counts().Sub(before)
}

func newMem() *memstore.Bucket { return memstore.New() }

type exampleFile struct {
	name string
	body []byte
}

// examples reads the official R4 examples copied into the repository.
func examples() ([]exampleFile, error) {
	dir := "../testdata/r4/examples"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []exampleFile
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		body, err := os.ReadFile(dir + "/" + e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, exampleFile{e.Name(), body})
	}
	return out, nil
}

func (c *fakeClock) SetStep(d time.Duration) {
	c.mu.Lock()
	c.step = d
	c.mu.Unlock()
}

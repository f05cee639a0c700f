package fhirstore

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/internal/s3test"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
)

func TestMain(m *testing.M) { s3test.Main(m) }

// backend is one storage implementation the behaviour suite runs on.
type backend = testenv.Backend

var backends = testenv.Backends()

// eachBackend runs f as a subtest per backend; S3 backends skip (with the
// reason) unless their environment gate is set.
func eachBackend(t *testing.T, f func(t *testing.T, bk backend)) {
	t.Helper()
	testenv.EachBackend(t, f)
}

// testValidator is the shared validator with a 4 MiB limit, below the
// 5 MiB resource the suite expects to be refused as too large.
func testValidator(t testing.TB) *fhir.Validator {
	t.Helper()
	return testenv.ValidatorWith(t, fhir.ValidatorOptions{MaxBytes: 4 << 20})
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
	if bk.S3 {
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

func (c *fakeClock) SetStep(d time.Duration) {
	c.mu.Lock()
	c.step = d
	c.mu.Unlock()
}

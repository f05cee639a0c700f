package lease_test

import (
	"errors"
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"fhirbucket/internal/s3test"
	"fhirbucket/lease"
	"fhirbucket/lease/leasetest"
	"fhirbucket/storage"
	"fhirbucket/storage/filestore"
	"fhirbucket/storage/memstore"
)

func TestMain(m *testing.M) { s3test.Main(m) }

// backends are the stores the conformance suite runs on; the S3 ones skip
// unless their RUN_*_S3_TESTS variable is set.
var backends = []struct {
	name string
	open func(t *testing.T) storage.Bucket
}{
	{"memstore", func(*testing.T) storage.Bucket { return memstore.New() }},
	{"filestore", func(t *testing.T) storage.Bucket {
		b, err := filestore.Open(t.TempDir())
		if err != nil {
			t.Fatalf("filestore.Open: %v", err)
		}
		t.Cleanup(func() { b.Close() })
		return b
	}},
	{"minio", func(t *testing.T) storage.Bucket { return s3test.MinIO(t).NewNamespace(t) }},
	{"versitygw", func(t *testing.T) storage.Bucket { return s3test.VersityGW(t).NewNamespace(t) }},
}

func TestConformance(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			be.open(t) // skips a disabled backend once, not per case
			leasetest.Run(t, be.open)
		})
	}
}

func TestConfig(t *testing.T) {
	b := memstore.New()
	for _, tc := range []struct {
		name string
		cfg  lease.Config
		ttl  time.Duration
		skew time.Duration
	}{
		{"defaults", lease.Config{Bucket: b, Owner: "a"}, lease.DefaultTTL, lease.DefaultTTL / 6},
		{"skew from ttl", lease.Config{Bucket: b, Owner: "a", TTL: time.Minute}, time.Minute, 10 * time.Second},
		{"explicit", lease.Config{Bucket: b, Owner: "a", TTL: time.Minute, Skew: time.Second}, time.Minute, time.Second},
	} {
		m, err := lease.New(tc.cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if m.TTL() != tc.ttl || m.Skew() != tc.skew || m.Owner() != "a" {
			t.Errorf("%s: TTL %v skew %v owner %q, want %v %v %q", tc.name, m.TTL(), m.Skew(), m.Owner(), tc.ttl, tc.skew, "a")
		}
	}
	for name, cfg := range map[string]lease.Config{
		"no bucket":      {Owner: "a"},
		"no owner":       {Bucket: b},
		"bad owner":      {Bucket: b, Owner: "\xff"},
		"negative ttl":   {Bucket: b, Owner: "a", TTL: -time.Second},
		"negative skew":  {Bucket: b, Owner: "a", Skew: -time.Second},
		"skew too large": {Bucket: b, Owner: "a", TTL: 30 * time.Second, Skew: 10 * time.Second},
	} {
		if _, err := lease.New(cfg); !errors.Is(err, lease.ErrInvalid) {
			t.Errorf("%s: New returned %v, want ErrInvalid", name, err)
		}
	}
}

// TestImports holds the package to its place in the layering: the
// standard library and storage, nothing else of the project.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			first, _, _ := strings.Cut(path, "/")
			if path != "fhirbucket/storage" && strings.Contains(first, ".") || strings.HasPrefix(path, "fhirbucket/") && path != "fhirbucket/storage" {
				t.Errorf("%s imports %s: lease may import only the standard library and fhirbucket/storage", name, path)
			}
		}
	}
}

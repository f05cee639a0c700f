package s3store_test

import (
	"errors"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/credentials"

	"fhirbucket/internal/s3test"
	"fhirbucket/storage"
	"fhirbucket/storage/s3store"
	"fhirbucket/storage/storagetest"
)

func TestMain(m *testing.M) { s3test.Main(m) }

// backends are the real servers the driver is tested against; each getter
// skips the test unless its RUN_*_S3_TESTS variable is set.
var backends = []struct {
	name string
	get  func(testing.TB) *s3test.Server
	// skip lists conformance subtests the server is known to fail, with
	// the reason. Only deviations of the server from S3 belong here.
	skip map[string]string
}{
	{"minio", s3test.MinIO, nil},
	{"versitygw", s3test.VersityGW, nil},
	{"aws", s3test.AWS, nil},
}

// freshBucket returns a newBucket function for the conformance suite: a
// new bucket per subtest where the server allows it, else a unique prefix.
func freshBucket(srv *s3test.Server, skip map[string]string) func(t *testing.T) storage.Bucket {
	return func(t *testing.T) storage.Bucket {
		if reason, ok := skip[path.Base(t.Name())]; ok {
			t.Skip(reason)
		}
		if !srv.CanCreateBuckets() {
			return srv.NewNamespace(t)
		}
		c, name := srv.NewBucket(t)
		return c.Bucket(name)
	}
}

func TestConformance(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			srv := be.get(t)
			t.Run("bucket", func(t *testing.T) {
				storagetest.RunConformanceTests(t, freshBucket(srv, be.skip))
			})
			// Three parts of a multipart upload, the last a short one.
			t.Run("upload", func(t *testing.T) {
				storagetest.RunUploadTests(t, freshBucket(srv, be.skip), 2*s3store.PartSize+123)
			})
			// The same suite through storage.Prefixed, as fhirstore uses a
			// bucket when given a prefix. Once is enough.
			if be.name == "minio" {
				t.Run("prefixed", func(t *testing.T) {
					storagetest.RunConformanceTests(t, func(t *testing.T) storage.Bucket {
						if reason, ok := be.skip[path.Base(t.Name())]; ok {
							t.Skip(reason)
						}
						return srv.NewNamespace(t)
					})
				})
			}
		})
	}
}

func TestMissingBucket(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			srv := be.get(t)
			c := srv.NewClient(t)
			_, existing := srv.NewBucket(t)
			const missing = "fhirbucket-no-such-bucket-7f3a"

			if err := c.CheckBuckets(t.Context(), existing); err != nil {
				t.Errorf("CheckBuckets(%s): %v", existing, err)
			}
			err := c.CheckBuckets(t.Context(), existing, missing)
			if !errors.Is(err, storage.ErrBucketNotFound) || !strings.Contains(err.Error(), missing) {
				t.Errorf("CheckBuckets(missing) = %v, want ErrBucketNotFound naming %s", err, missing)
			}

			b := c.Bucket(missing)
			ctx := t.Context()
			if _, err := b.List(ctx, storage.ListOptions{}); !errors.Is(err, storage.ErrBucketNotFound) {
				t.Errorf("List on a missing bucket = %v, want ErrBucketNotFound", err)
			}
			if _, _, err := b.Get(ctx, "k"); !errors.Is(err, storage.ErrBucketNotFound) {
				t.Errorf("Get on a missing bucket = %v, want ErrBucketNotFound", err)
			}
			if _, err := b.Put(ctx, "k", strings.NewReader("x"), storage.PutOptions{}); !errors.Is(err, storage.ErrBucketNotFound) {
				t.Errorf("Put on a missing bucket = %v, want ErrBucketNotFound", err)
			}
		})
	}
}

func TestWrongCredentials(t *testing.T) {
	for _, be := range backends[:2] { // AWS credentials come from the chain
		t.Run(be.name, func(t *testing.T) {
			srv := be.get(t)
			_, bucket := srv.NewBucket(t)
			cfg := srv.Config()
			cfg.Credentials = credentials.NewStaticCredentialsProvider(srv.AccessKey, "wrong-"+srv.SecretKey, "")
			c, err := s3store.New(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = c.CheckBuckets(t.Context(), bucket)
			if !errors.Is(err, storage.ErrAccessDenied) {
				t.Errorf("CheckBuckets with a wrong secret = %v, want ErrAccessDenied", err)
			}
			_, err = c.Bucket(bucket).Put(t.Context(), "k", strings.NewReader("x"), storage.PutOptions{})
			if !errors.Is(err, storage.ErrAccessDenied) {
				t.Errorf("Put with a wrong secret = %v, want ErrAccessDenied", err)
			}
		})
	}
}

// TestRequestCounts checks that Client.Requests and Config.Observe see
// exactly the wire requests of a known sequence of calls.
func TestRequestCounts(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			srv := be.get(t)
			_, bucket := srv.NewBucket(t)
			var mu sync.Mutex
			var seen []string
			cfg := srv.Config()
			cfg.Observe = func(op storage.Op, outcome string, d time.Duration) {
				mu.Lock()
				seen = append(seen, op.String()+":"+outcome)
				mu.Unlock()
			}
			c, err := s3store.New(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			ns, err := storage.Prefixed(c.Bucket(bucket), "counts-"+strings.ReplaceAll(t.Name(), "/", "-"))
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			must := func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			a, err := ns.Put(ctx, "a", strings.NewReader("one"), storage.PutOptions{IfNoneMatch: "*"})
			must(err)
			_, err = ns.Put(ctx, "a", strings.NewReader("two"), storage.PutOptions{IfNoneMatch: "*"})
			if !errors.Is(err, storage.ErrPreconditionFailed) {
				t.Fatalf("second create-only put: %v", err)
			}
			_, err = ns.Put(ctx, "a", strings.NewReader("three"), storage.PutOptions{IfMatch: a.ETag})
			must(err)
			_, _, err = storage.ReadAll(ctx, ns, "a")
			must(err)
			_, err = ns.Stat(ctx, "a")
			must(err)
			if _, err := ns.Stat(ctx, "missing"); !errors.Is(err, storage.ErrNotExist) {
				t.Fatalf("Stat missing: %v", err)
			}
			_, err = ns.List(ctx, storage.ListOptions{})
			must(err)
			must(ns.Delete(ctx, "a"))
			must(c.CheckBuckets(ctx, bucket))

			want := storage.Counts{Put: 3, Get: 1, Head: 3, List: 1, Delete: 1}
			if got := c.Requests(); got != want {
				t.Errorf("Requests() = %+v, want %+v", got, want)
			}
			wantSeen := []string{"PUT:ok", "PUT:precondition_failed", "PUT:ok", "GET:ok", "HEAD:ok", "HEAD:not_found", "LIST:ok", "DELETE:ok", "HEAD:ok"}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(seen, wantSeen) {
				t.Errorf("Observe saw %q, want %q", seen, wantSeen)
			}
		})
	}
}

func BenchmarkMinIO(b *testing.B) {
	srv := s3test.MinIO(b)
	storagetest.RunBenchmarks(b, benchBucket(srv))
}

func BenchmarkVersityGW(b *testing.B) {
	srv := s3test.VersityGW(b)
	storagetest.RunBenchmarks(b, benchBucket(srv))
}

func benchBucket(srv *s3test.Server) func(tb testing.TB) storage.Bucket {
	return func(tb testing.TB) storage.Bucket {
		if !srv.CanCreateBuckets() {
			return srv.NewNamespace(tb)
		}
		c, name := srv.NewBucket(tb)
		return c.Bucket(name)
	}
}

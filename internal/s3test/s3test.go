// Package s3test gives tests a real S3-compatible server: MinIO, versitygw,
// or (when credentials are given) AWS S3. It is test-only code: it creates
// and removes buckets, which production code never does. Finding, starting
// and stopping the servers lives in internal/s3server, which production
// code (`fhirbucket bench`) uses without linking the testing package; this
// package adds what needs a testing.TB.
//
// Each server kind is gated by an environment variable, so a plain
// `go test ./...` needs nothing installed; `make test` sets all of them:
//
//	RUN_MINIO_S3_TESTS=1       MinIO (binary "minio" in $PATH or <repo>/.tools/bin)
//	RUN_VERSITYGW_S3_TESTS=1   versitygw (binary "versitygw", same places)
//	RUN_AWS_S3_TESTS=1         AWS S3, with FHIRBUCKET_TEST_AWS_BUCKET naming an
//	                           existing bucket and the standard AWS credential chain
//
// MinIO honours MINIO_ROOT_USER / MINIO_ROOT_PASSWORD (default
// minioadmin/minioadmin), FHIRBUCKET_TEST_MINIO_ENDPOINT (use a running
// server instead of starting one) and HFS_MINIO_TEST_BUCKET (use that one
// bucket, isolating tests by key prefix, instead of creating buckets).
//
// A server is started lazily by the first test that asks for it and shared
// by the whole test binary; the package's TestMain must call Main so that it
// is stopped at the end:
//
//	func TestMain(m *testing.M) { s3test.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		srv := s3test.MinIO(t)               // skips unless RUN_MINIO_S3_TESTS=1
//		b := srv.NewNamespace(t)             // fresh, empty storage.Bucket
//		client, bucket := srv.NewBucket(t)   // or a whole new bucket
//		cmd.Env = append(os.Environ(), srv.Env(bucket)...) // for a spawned server
//	}
//
// Everything a test creates on a server it did not start is removed by
// t.Cleanup; on a server the harness started, buckets are left in place and
// go away with the server's temporary data folder when the test binary
// ends (emptying a bucket of many thousand keys one DELETE at a time would
// cost more than the test that filled it).
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"fhirbucket/internal/s3server"
	"fhirbucket/storage"
	"fhirbucket/storage/s3store"
)

// Server is a reachable S3-compatible endpoint with root credentials. The
// embedded s3server.Server holds the description (Kind, Endpoint,
// AccessKey, SecretKey, Region) and the administration (Config, Env,
// CreateBucket); Server adds what needs a testing.TB.
type Server struct {
	*s3server.Server

	// fixedBucket, when set, is the only bucket tests may use.
	fixedBucket string

	sharedOnce sync.Once
	shared     string
	sharedErr  error

	fixedOnce sync.Once
	fixedErr  error
}

var (
	mainCalled atomic.Bool
	stopMu     sync.Mutex
	stops      []func()
	servers    sync.Map // kind -> *lazy
)

// lazy starts one server kind at most once per process.
type lazy struct {
	once sync.Once
	srv  *Server
	err  error
}

// Main runs the tests and then stops every server the harness started. Call
// it from TestMain in every package that uses the harness.
func Main(m *testing.M) {
	mainCalled.Store(true)
	code := m.Run()
	stopAll()
	os.Exit(code)
}

func stopAll() {
	stopMu.Lock()
	defer stopMu.Unlock()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
	stops = nil
}

func onStop(f func()) {
	stopMu.Lock()
	stops = append(stops, f)
	stopMu.Unlock()
}

func enabled(t testing.TB, env, what, how string) {
	t.Helper()
	if os.Getenv(env) != "1" {
		t.Skipf("%s tests are disabled: set %s=1 to run them (%s)", what, env, how)
	}
}

const localHow = "`make test` does, installing the server into .tools/bin"

func requireMain(t testing.TB) {
	t.Helper()
	if !mainCalled.Load() {
		t.Fatal("s3test: the package's TestMain must call s3test.Main(m), which stops the servers the harness starts")
	}
}

func getLazy(kind string, start func() (*Server, error)) (*Server, error) {
	v, _ := servers.LoadOrStore(kind, &lazy{})
	l := v.(*lazy)
	l.once.Do(func() { l.srv, l.err = start() })
	return l.srv, l.err
}

// MinIO returns the process-wide MinIO server, starting it on first use. It
// skips the test unless RUN_MINIO_S3_TESTS=1.
func MinIO(t testing.TB) *Server {
	t.Helper()
	enabled(t, "RUN_MINIO_S3_TESTS", "MinIO", localHow)
	user := envOr("MINIO_ROOT_USER", "minioadmin")
	pass := envOr("MINIO_ROOT_PASSWORD", "minioadmin")
	var srv *Server
	var err error
	if ep := os.Getenv("FHIRBUCKET_TEST_MINIO_ENDPOINT"); ep != "" {
		srv, err = getLazy("minio", func() (*Server, error) {
			return wrap(s3server.New("minio", strings.TrimSuffix(ep, "/"), user, pass)), nil
		})
	} else {
		requireMain(t)
		srv, err = getLazy("minio", func() (*Server, error) { return startMinIO(user, pass) })
	}
	if err != nil {
		t.Fatalf("s3test: MinIO: %v", err)
	}
	return srv
}

// VersityGW returns the process-wide versitygw server (posix backend in a
// temporary folder), starting it on first use. It skips the test unless
// RUN_VERSITYGW_S3_TESTS=1.
func VersityGW(t testing.TB) *Server {
	t.Helper()
	enabled(t, "RUN_VERSITYGW_S3_TESTS", "versitygw", localHow)
	requireMain(t)
	srv, err := getLazy("versitygw", startVersityGW)
	if err != nil {
		t.Fatalf("s3test: versitygw: %v", err)
	}
	return srv
}

// AWS returns a Server for AWS S3 whose one usable bucket is the existing
// bucket named by FHIRBUCKET_TEST_AWS_BUCKET, reached with the standard
// credential chain and AWS_REGION. It skips the test unless
// RUN_AWS_S3_TESTS=1 and the bucket is named. NewBucket returns that bucket
// without creating anything; NewNamespace isolates tests by prefix in it.
func AWS(t testing.TB) *Server {
	t.Helper()
	enabled(t, "RUN_AWS_S3_TESTS", "AWS S3", "also set FHIRBUCKET_TEST_AWS_BUCKET to an existing bucket, AWS_REGION, and credentials for the standard AWS chain")
	bucket := os.Getenv("FHIRBUCKET_TEST_AWS_BUCKET")
	if bucket == "" {
		t.Skip("AWS S3 tests need FHIRBUCKET_TEST_AWS_BUCKET (an existing bucket) besides RUN_AWS_S3_TESTS=1")
	}
	return &Server{Server: &s3server.Server{Kind: "aws", Region: os.Getenv("AWS_REGION")}, fixedBucket: bucket}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// wrap adds the test state to a server description. HFS_MINIO_TEST_BUCKET
// names the one bucket MinIO tests may use.
func wrap(srv *s3server.Server) *Server {
	s := &Server{Server: srv}
	if srv.Kind == "minio" {
		s.fixedBucket = os.Getenv("HFS_MINIO_TEST_BUCKET")
	}
	return s
}

// startMinIO starts the process-wide MinIO, stopped by Main.
func startMinIO(user, pass string) (*Server, error) {
	srv, stop, err := s3server.StartMinIO(context.Background(), user, pass)
	if err != nil {
		return nil, err
	}
	onStop(stop)
	return wrap(srv), nil
}

// startVersityGW starts the process-wide versitygw, stopped by Main.
func startVersityGW() (*Server, error) {
	srv, stop, err := s3server.StartVersityGW(context.Background())
	if err != nil {
		return nil, err
	}
	onStop(stop)
	return wrap(srv), nil
}

// NewClient returns a fresh s3store.Client (with its own request counters)
// for the server, closed by t.Cleanup.
func (s *Server) NewClient(t testing.TB) *s3store.Client {
	t.Helper()
	c, err := s3store.New(t.Context(), s.Config())
	if err != nil {
		t.Fatalf("s3test: s3store.New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// CanCreateBuckets reports whether NewBucket creates a new, empty bucket
// (false on AWS and with HFS_MINIO_TEST_BUCKET, where it returns the one
// fixed bucket).
func (s *Server) CanCreateBuckets() bool { return s.fixedBucket == "" }

// NewBucket creates an empty bucket with a unique name and returns a new
// client and the bucket's name; on a server the harness did not start,
// t.Cleanup deletes its objects and the
// bucket. With HFS_MINIO_TEST_BUCKET set (or on AWS), no bucket is created:
// the fixed bucket is returned and may hold other tests' objects, so use
// NewNamespace when emptiness matters.
func (s *Server) NewBucket(t testing.TB) (*s3store.Client, string) {
	t.Helper()
	client := s.NewClient(t)
	if s.fixedBucket != "" {
		if err := s.ensureFixed(); err != nil {
			t.Fatalf("s3test: bucket %s on %s: %v", s.fixedBucket, s.Kind, err)
		}
		return client, s.fixedBucket
	}
	name := uniqueName("fhirbucket-test")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.CreateBucket(ctx, name); err != nil {
		t.Fatalf("s3test: creating bucket %s on %s: %v", name, s.Kind, err)
	}
	t.Cleanup(func() {
		if s.Private() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := s.removeBucket(ctx, client.Bucket(name)); err != nil {
			t.Errorf("s3test: removing bucket %s: %v", name, err)
		}
	})
	return client, name
}

// NewNamespace returns a fresh, empty storage.Bucket: a unique key prefix
// (storage.Prefixed) in a bucket shared by the tests of this process (or the
// fixed bucket). On a server the harness did not start, t.Cleanup deletes
// every key under the prefix.
func (s *Server) NewNamespace(t testing.TB) storage.Bucket {
	t.Helper()
	bucket, err := s.sharedBucket()
	if err != nil {
		t.Fatalf("s3test: shared bucket on %s: %v", s.Kind, err)
	}
	client := s.NewClient(t)
	prefix := uniqueName("ns")
	b, err := storage.Prefixed(client.Bucket(bucket), prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.Private() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		if err := storage.DeleteAll(ctx, b, "", 16); err != nil {
			t.Errorf("s3test: removing prefix %s of bucket %s: %v", prefix, bucket, err)
		}
	})
	return b
}

// sharedBucket is the fixed bucket, or one bucket created on first use and
// removed when Main stops the servers.
func (s *Server) sharedBucket() (string, error) {
	if s.fixedBucket != "" {
		return s.fixedBucket, s.ensureFixed()
	}
	s.sharedOnce.Do(func() {
		name := uniqueName("fhirbucket-shared")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.CreateBucket(ctx, name); err != nil {
			s.sharedErr = err
			return
		}
		s.shared = name
		onStop(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if c, err := s3store.New(ctx, s.Config()); err == nil {
				_ = s.removeBucket(ctx, c.Bucket(name))
			}
		})
	})
	return s.shared, s.sharedErr
}

// ensureFixed creates the fixed bucket (HFS_MINIO_TEST_BUCKET) if it does
// not exist yet. It is never removed: it belongs to whoever named it. On
// AWS the bucket must already exist.
func (s *Server) ensureFixed() error {
	if s.Admin() == nil {
		return nil
	}
	s.fixedOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := s.Admin().HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.fixedBucket)}); err == nil {
			return
		}
		s.fixedErr = s.CreateBucket(ctx, s.fixedBucket)
	})
	return s.fixedErr
}

func (s *Server) removeBucket(ctx context.Context, b *s3store.Bucket) error {
	if err := storage.DeleteAll(ctx, b, "", 16); err != nil {
		return err
	}
	_, err := s.Admin().DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(b.Name())})
	return err
}

// uniqueName is a valid, unique bucket name or key prefix.
func uniqueName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", prefix, time.Now().Unix()%100000, hex.EncodeToString(b[:]))
}

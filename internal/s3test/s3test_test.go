package s3test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"fhirbucket/internal/s3server"
	"fhirbucket/storage"
)

func TestMain(m *testing.M) { Main(m) }

func TestEnv(t *testing.T) {
	s := &Server{Server: &s3server.Server{Kind: "minio", Endpoint: "http://127.0.0.1:9999", AccessKey: "ak", SecretKey: "sk", Region: "us-east-1"}}
	got := s.Env("bkt")
	for _, want := range []string{
		"AWS_ACCESS_KEY_ID=ak", "AWS_SECRET_ACCESS_KEY=sk", "AWS_REGION=us-east-1",
		"FHIRBUCKET_S3_ENDPOINT_URL=http://127.0.0.1:9999", "FHIRBUCKET_S3_ALLOW_HTTP=true", "FHIRBUCKET_S3_BUCKET=bkt",
	} {
		if !slices.Contains(got, want) {
			t.Errorf("Env() = %q, missing %q", got, want)
		}
	}
	if err := s.Config().Validate(); err != nil {
		t.Errorf("Config() is invalid: %v", err)
	}
}

// TestServers checks, for each server kind enabled, that a bucket made by
// NewBucket works, that namespaces are isolated from each other, and what
// their cleanup does: on a server the harness did not start, the bucket is
// gone and the namespace emptied after their test; on one it started
// (Private), both are left for the server's data folder to take away.
func TestServers(t *testing.T) {
	for _, kind := range []struct {
		name string
		get  func(testing.TB) *Server
	}{{"minio", MinIO}, {"versitygw", VersityGW}} {
		t.Run(kind.name, func(t *testing.T) {
			srv := kind.get(t)
			var bucket string
			var ns storage.Bucket
			t.Run("use", func(t *testing.T) {
				client, name := srv.NewBucket(t)
				bucket = name
				if err := client.CheckBuckets(t.Context(), name); err != nil {
					t.Fatalf("new bucket %s: %v", name, err)
				}
				ns = srv.NewNamespace(t)
				other := srv.NewNamespace(t)
				if _, err := ns.Put(t.Context(), "k", strings.NewReader("v"), storage.PutOptions{}); err != nil {
					t.Fatal(err)
				}
				if _, err := other.Stat(t.Context(), "k"); !errors.Is(err, storage.ErrNotExist) {
					t.Errorf("a key of one namespace is visible in another: %v", err)
				}
			})
			if t.Failed() {
				return
			}
			_, keyErr := ns.Stat(t.Context(), "k")
			if srv.Private() {
				if keyErr != nil {
					t.Errorf("namespace key on a harness-started server: %v, want it left in place", keyErr)
				}
			} else if !errors.Is(keyErr, storage.ErrNotExist) {
				t.Errorf("namespace key still there after its test: %v", keyErr)
			}
			if !srv.CanCreateBuckets() {
				return
			}
			err := srv.NewClient(t).CheckBuckets(t.Context(), bucket)
			if srv.Private() {
				if err != nil {
					t.Errorf("bucket %s on a harness-started server: %v, want it left in place", bucket, err)
				}
			} else if !errors.Is(err, storage.ErrBucketNotFound) {
				t.Errorf("bucket %s still there after its test: %v", bucket, err)
			}
		})
	}
}

func TestEnvWithoutBucket(t *testing.T) {
	s := &Server{Server: &s3server.Server{Kind: "versitygw", Endpoint: "http://127.0.0.1:1", AccessKey: "a", SecretKey: "b"}}
	for _, kv := range s.Env("") {
		if strings.HasPrefix(kv, "FHIRBUCKET_S3_BUCKET=") {
			t.Errorf("Env(\"\") sets %s", kv)
		}
	}
}

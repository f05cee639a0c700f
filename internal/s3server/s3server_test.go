package s3server

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"fhirbucket/storage"
	"fhirbucket/storage/s3store"
)

func TestRepoRoot(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !strings.HasPrefix(string(data), "module fhirbucket\n") {
		t.Errorf("repoRoot() = %s, whose go.mod is not the fhirbucket module (%v)", root, err)
	}
}

func TestEnvAndConfig(t *testing.T) {
	for _, tc := range []struct {
		name    string
		srv     *Server
		bucket  string
		want    []string
		notWant []string
	}{
		{
			name:   "minio",
			srv:    New("minio", "http://127.0.0.1:9999", "ak", "sk"),
			bucket: "bkt",
			want: []string{
				"AWS_ACCESS_KEY_ID=ak", "AWS_SECRET_ACCESS_KEY=sk", "AWS_REGION=" + s3store.DefaultEndpointRegion,
				"FHIRBUCKET_S3_ENDPOINT_URL=http://127.0.0.1:9999", "FHIRBUCKET_S3_ALLOW_HTTP=true", "FHIRBUCKET_S3_BUCKET=bkt",
			},
		},
		{
			name:    "no bucket",
			srv:     &Server{Kind: "versitygw", Endpoint: "https://127.0.0.1:1", AccessKey: "a", SecretKey: "b", Region: "r"},
			want:    []string{"AWS_ACCESS_KEY_ID=a", "FHIRBUCKET_S3_ALLOW_HTTP=false", "AWS_REGION=r"},
			notWant: []string{"FHIRBUCKET_S3_BUCKET="},
		},
		{
			name:    "aws",
			srv:     &Server{Kind: "aws", Region: "eu-west-1"},
			bucket:  "b",
			want:    []string{"AWS_REGION=eu-west-1", "FHIRBUCKET_S3_BUCKET=b"},
			notWant: []string{"AWS_ACCESS_KEY_ID=", "FHIRBUCKET_S3_ENDPOINT_URL="},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.srv.Env(tc.bucket)
			for _, want := range tc.want {
				if !slices.Contains(got, want) {
					t.Errorf("Env(%q) = %q, missing %q", tc.bucket, got, want)
				}
			}
			for _, prefix := range tc.notWant {
				for _, kv := range got {
					if strings.HasPrefix(kv, prefix) {
						t.Errorf("Env(%q) sets %s", tc.bucket, kv)
					}
				}
			}
			if err := tc.srv.Config().Validate(); err != nil {
				t.Errorf("Config() is invalid: %v", err)
			}
		})
	}
}

func TestCreateBucketWithoutAdmin(t *testing.T) {
	s := &Server{Kind: "aws", Region: "us-east-1"}
	if s.Admin() != nil || s.Private() {
		t.Fatalf("a literal Server has Admin() = %v, Private() = %v", s.Admin(), s.Private())
	}
	if err := s.CreateBucket(t.Context(), "b"); !errors.Is(err, ErrNoAdmin) {
		t.Errorf("CreateBucket on %s = %v, want ErrNoAdmin", s.Kind, err)
	}
}

// TestStartS3Servers starts each enabled server kind, uses it, stops it,
// and checks that nothing of it is left: no listener, no data folder.
func TestStartS3Servers(t *testing.T) {
	for _, tc := range []struct {
		kind, env string
		start     func(context.Context) (*Server, func(), error)
	}{
		{"minio", "RUN_MINIO_S3_TESTS", func(ctx context.Context) (*Server, func(), error) { return StartMinIO(ctx, "", "") }},
		{"versitygw", "RUN_VERSITYGW_S3_TESTS", StartVersityGW},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			if os.Getenv(tc.env) != "1" {
				t.Skipf("set %s=1 to run (`make test` does, installing the server into .tools/bin)", tc.env)
			}
			if v, err := ToolVersion(tc.kind); err != nil || v == "" {
				t.Errorf("ToolVersion(%q) = %q, %v", tc.kind, v, err)
			}
			srv, stop, err := tc.start(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(stop)
			if srv.Kind != tc.kind || !srv.Private() || srv.Admin() == nil {
				t.Fatalf("started server: Kind %q, Private %t, Admin %v", srv.Kind, srv.Private(), srv.Admin())
			}
			const bucket = "s3server-test"
			if err := srv.CreateBucket(t.Context(), bucket); err != nil {
				t.Fatalf("CreateBucket: %v", err)
			}
			client, err := s3store.New(t.Context(), srv.Config())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := client.Bucket(bucket).Put(t.Context(), "k", strings.NewReader("v"), storage.PutOptions{}); err != nil {
				t.Fatalf("Put in the new bucket: %v", err)
			}
			if _, err := os.Stat(srv.dataDir); err != nil {
				t.Fatalf("data folder: %v", err)
			}

			stop()
			stop() // a second call must be harmless
			addr := strings.TrimPrefix(srv.Endpoint, "http://")
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				t.Errorf("%s still accepts connections after stop", addr)
			}
			if _, err := os.Stat(srv.dataDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("data folder %s still there after stop: %v", srv.dataDir, err)
			}
		})
	}
}

func TestStartWithoutBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Chdir(t.TempDir()) // no go.mod above, so no <repo>/.tools/bin either
	for name, start := range map[string]func(context.Context) (*Server, func(), error){
		"minio":     func(ctx context.Context) (*Server, func(), error) { return StartMinIO(ctx, "", "") },
		"versitygw": StartVersityGW,
	} {
		if srv, _, err := start(t.Context()); err == nil || !strings.Contains(err.Error(), "make tools") {
			t.Errorf("%s without a binary: %v, %v; want an error naming `make tools`", name, srv, err)
		}
	}
}

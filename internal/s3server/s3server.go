// Package s3server finds, starts and stops local S3-compatible servers
// (MinIO, versitygw) and talks to them as their administrator: creating
// buckets, handing out the s3store configuration and the environment that
// point fhirbucket at them.
//
// It serves both the test harness (internal/s3test, which adds the
// testing.TB-aware parts on top) and the benchmark runner (`fhirbucket
// bench`). It must never import the testing package, directly or through
// another package: it is linked into the production binary, and
// cmd/fhirbucket has a test that fails if the binary links testing.
//
// Server binaries are looked up in $PATH, then in <repo>/.tools/bin, where
// `make tools` (scripts/install-tools.sh) installs the pinned versions. A
// started server listens on 127.0.0.1 only, keeps its data in a fresh
// temporary folder, and is stopped, with that folder removed, by the stop
// function its Start function returns.
package s3server

import (
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"fhirbucket/storage/s3store"
)

// Server is a reachable S3-compatible endpoint with root credentials.
type Server struct {
	// Kind is "minio", "versitygw" or "aws".
	Kind string
	// Endpoint is the base URL ("http://127.0.0.1:PORT"); "" for AWS.
	Endpoint string
	// AccessKey and SecretKey are the credentials (empty for AWS, which
	// uses the standard chain).
	AccessKey, SecretKey string
	// Region is the signing region.
	Region string

	// private: this process started the server (StartMinIO,
	// StartVersityGW); its data folder goes away with it.
	private bool
	// dataDir is the temporary data folder of a private server.
	dataDir string
	// admin creates and removes buckets; nil for AWS and for a Server
	// built as a literal.
	admin *s3.Client
}

// New returns a Server for an already running endpoint reached with root
// credentials access and secret; kind is "minio" or "versitygw". It makes
// no request: the first bucket operation finds out whether the server
// answers.
func New(kind, endpoint, access, secret string) *Server {
	s := &Server{Kind: kind, Endpoint: endpoint, AccessKey: access, SecretKey: secret, Region: s3store.DefaultEndpointRegion}
	s.admin = s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(access, secret, ""),
		// Only what an API requires (versitygw and older MinIO differ on
		// the SDK's default trailing checksums).
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
	return s
}

// Private reports whether this process started the server (StartMinIO,
// StartVersityGW): everything on it, buckets included, disappears when it
// is stopped, so nothing written to it needs cleaning up.
func (s *Server) Private() bool { return s.private }

// Admin returns the S3 client holding the root credentials, for bucket
// administration (CreateBucket, HeadBucket, DeleteBucket); nil when the
// Server cannot administer buckets (AWS).
func (s *Server) Admin() *s3.Client { return s.admin }

// Config is the s3store configuration that reaches the server with its
// root credentials.
func (s *Server) Config() s3store.Config {
	if s.Kind == "aws" {
		return s3store.Config{Region: s.Region}
	}
	return s3store.Config{
		Region:      s.Region,
		EndpointURL: s.Endpoint,
		AllowHTTP:   strings.HasPrefix(s.Endpoint, "http://"),
		Credentials: credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	}
}

// Env returns the environment (KEY=value) that points a spawned fhirbucket
// process at the server and bucket: AWS_ACCESS_KEY_ID,
// AWS_SECRET_ACCESS_KEY, AWS_REGION, FHIRBUCKET_S3_ENDPOINT_URL,
// FHIRBUCKET_S3_ALLOW_HTTP and, unless bucket is "", FHIRBUCKET_S3_BUCKET.
func (s *Server) Env(bucket string) []string {
	var env []string
	if bucket != "" {
		env = append(env, "FHIRBUCKET_S3_BUCKET="+bucket)
	}
	if s.Region != "" {
		env = append(env, "AWS_REGION="+s.Region)
	}
	if s.Kind == "aws" {
		return env
	}
	return append(env,
		"AWS_ACCESS_KEY_ID="+s.AccessKey,
		"AWS_SECRET_ACCESS_KEY="+s.SecretKey,
		"FHIRBUCKET_S3_ENDPOINT_URL="+s.Endpoint,
		fmt.Sprintf("FHIRBUCKET_S3_ALLOW_HTTP=%t", strings.HasPrefix(s.Endpoint, "http://")),
	)
}

// ErrNoAdmin is returned by CreateBucket on a Server without an admin
// client (AWS, or a Server built as a literal).
var ErrNoAdmin = errors.New("s3server: bucket administration is not supported on this server")

// CreateBucket creates an empty bucket named name. A server that is still
// initialising (HTTP 503) is asked again until ctx ends.
func (s *Server) CreateBucket(ctx context.Context, name string) error {
	if s.admin == nil {
		return fmt.Errorf("creating bucket %s on %s: %w", name, s.Kind, ErrNoAdmin)
	}
	// A MinIO that just answered /minio/health/ready may still refuse
	// bucket operations for a moment with 503 XMinioServerNotInitialized;
	// wait that out rather than failing every caller.
	for {
		_, err := s.admin.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
		var re *smithyhttp.ResponseError
		if err == nil || !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusServiceUnavailable {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last answer: %v)", ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// ToolVersion names the version of the server binary name ("minio",
// "versitygw") that StartMinIO / StartVersityGW would start: its Go module
// version when it was built with `go install` (as
// scripts/install-tools.sh does), else the first line of `name --version`.
func ToolVersion(name string) (string, error) {
	bin, err := FindBinary(name)
	if err != nil {
		return "", err
	}
	if bi, err := buildinfo.ReadFile(bin); err == nil && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Path + "@" + bi.Main.Version, nil
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "", fmt.Errorf("%s --version: %w", bin, err)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return first, nil
}

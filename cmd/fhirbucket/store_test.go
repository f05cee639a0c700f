package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"fhirbucket/internal/testenv"
	"fhirbucket/storage/s3store"
)

// staticAWSCredentials gives the AWS SDK, which reads credentials from the
// process environment, static ones: it then never probes instance
// metadata.
func staticAWSCredentials(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "x")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "y")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
}

// TestStoreS3ConfigError: an s3store configuration error reaches the user
// naming the command-line setting, with the *s3store.ConfigError still in
// the chain.
func TestStoreS3ConfigError(t *testing.T) {
	staticAWSCredentials(t)
	t.Setenv("AWS_REGION", "")
	s3 := []string{"FHIRBUCKET_BACKEND=s3", "FHIRBUCKET_S3_BUCKET=b", "FHIRBUCKET_S3_VALIDATE_BUCKETS=false"}
	cases := []struct {
		name  string
		args  []string
		env   []string
		field string // s3store.ConfigError.Field
		label string // how the message names the setting
	}{
		{"plain http", nil, append(s3, "FHIRBUCKET_S3_ENDPOINT_URL=http://127.0.0.1:1"), "AllowHTTP", "FHIRBUCKET_S3_ALLOW_HTTP (--s3-allow-http)"},
		{"bad endpoint flag", []string{"--s3-endpoint-url", "ftp://x"}, s3, "EndpointURL", "--s3-endpoint-url"},
		{"bad endpoint env", nil, append(s3, "FHIRBUCKET_S3_ENDPOINT_URL=https://u:p@x"), "EndpointURL", "FHIRBUCKET_S3_ENDPOINT_URL"},
		{"no region on AWS", nil, s3, "Region", "FHIRBUCKET_S3_REGION (--s3-region)"},
		{"http on AWS", []string{"--s3-allow-http"}, append(s3, "FHIRBUCKET_S3_REGION=eu-west-1"), "AllowHTTP", "--s3-allow-http"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fs, v := newFlagSet("serve", "", &bytes.Buffer{}, serveSettings, storeSettings)
			if err := v.parse(fs, c.args, c.env); err != nil {
				t.Fatalf("parse: %v", err)
			}
			b, err := openBackend(t.Context(), v, testenv.QuietLogger(), 0)
			if err == nil {
				b.Close()
				t.Fatal("openBackend succeeded")
			}
			var ce *s3store.ConfigError
			if !errors.As(err, &ce) || ce.Field != c.field {
				t.Fatalf("error %v: want a *s3store.ConfigError for %s in the chain", err, c.field)
			}
			if !errors.Is(err, s3store.ErrInvalidConfig) {
				t.Errorf("error %v does not match s3store.ErrInvalidConfig", err)
			}
			if !strings.HasPrefix(err.Error(), c.label+": ") {
				t.Errorf("error %q does not start with the setting %s", err, c.label)
			}
		})
	}
}

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeConfigErrors starts serve with a bad configuration: it must
// fail before listening, with exit code 2 and a message that names the
// setting at fault.
func TestServeConfigErrors(t *testing.T) {
	staticAWSCredentials(t)
	dir := t.TempDir()
	mem := []string{"FHIRBUCKET_BACKEND=memory"}
	s3 := func(extra ...string) []string {
		return append([]string{"FHIRBUCKET_BACKEND=s3", "FHIRBUCKET_S3_ENDPOINT_URL=http://127.0.0.1:1", "FHIRBUCKET_S3_ALLOW_HTTP=true",
			"AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=y", "FHIRBUCKET_S3_VALIDATE_BUCKETS=false"}, extra...)
	}
	cases := []struct {
		name string
		args []string
		env  []string
		want string // must appear in stderr
	}{
		{"unknown env", nil, []string{"FHIRBUCKET_BACKEN=file"}, "FHIRBUCKET_BACKEN"},
		{"unknown flag", []string{"--bogus"}, mem, "bogus"},
		{"positional", []string{"extra"}, mem, "extra"},
		{"bad backend", nil, []string{"FHIRBUCKET_BACKEND=postgres"}, "FHIRBUCKET_BACKEND"},
		{"bad backend flag wins", []string{"--backend", "nope"}, mem, "--backend"},
		{"bad routing", nil, append(mem, "FHIRBUCKET_TENANT_ROUTING=cookie"), "FHIRBUCKET_TENANT_ROUTING"},
		{"bad body limit", nil, append(mem, "FHIRBUCKET_MAX_BODY_BYTES=10MB"), "FHIRBUCKET_MAX_BODY_BYTES"},
		{"zero body limit", []string{"--max-body-bytes", "0"}, mem, "--max-body-bytes"},
		{"bad log level", []string{"--log-level", "loud"}, mem, "--log-level"},
		{"bad log format", nil, append(mem, "FHIRBUCKET_LOG_FORMAT=xml"), "FHIRBUCKET_LOG_FORMAT"},
		{"bad base URL", nil, append(mem, "FHIRBUCKET_BASE_URL=example.org/fhir"), "FHIRBUCKET_BASE_URL"},
		{"bad base path", []string{"--base-path", "/a/../b"}, mem, "--base-path"},
		{"bad timeout", nil, append(mem, "FHIRBUCKET_SHUTDOWN_TIMEOUT=soon"), "FHIRBUCKET_SHUTDOWN_TIMEOUT"},
		{"bad header timeout", nil, append(mem, "FHIRBUCKET_READ_HEADER_TIMEOUT=-1s"), "FHIRBUCKET_READ_HEADER_TIMEOUT"},
		{"bad read timeout", nil, append(mem, "FHIRBUCKET_READ_TIMEOUT=0s"), "FHIRBUCKET_READ_TIMEOUT"},
		{"bad addr", []string{"--addr", "127.0.0.1:99999"}, mem, "--addr"},
		{"short export lease", nil, append(mem, "FHIRBUCKET_EXPORT_LEASE_TTL=1s"), "FHIRBUCKET_EXPORT_LEASE_TTL"},
		{"bad export part lines", []string{"--export-part-lines", "many"}, mem, "--export-part-lines"},
		{"tiny export part bytes", nil, append(mem, "FHIRBUCKET_EXPORT_PART_BYTES=10"), "FHIRBUCKET_EXPORT_PART_BYTES"},
		{"zero export workers", nil, append(mem, "FHIRBUCKET_EXPORT_WORKERS=0"), "FHIRBUCKET_EXPORT_WORKERS"},
		{"export min poll above retry-after", nil, append(mem, "FHIRBUCKET_EXPORT_MIN_POLL=5s"), "FHIRBUCKET_EXPORT_MIN_POLL"},
		{"data dir with memory", nil, append(mem, "FHIRBUCKET_DATA_DIR="+dir), "FHIRBUCKET_DATA_DIR"},
		{"S3 setting with file", nil, []string{"FHIRBUCKET_DATA_DIR=" + dir, "FHIRBUCKET_S3_BUCKET=b"}, "FHIRBUCKET_S3_BUCKET"},
		{"S3 flag with memory", []string{"--s3-prefix", "p"}, mem, "--s3-prefix"},
		{"data dir is a file", []string{"--data-dir", "/dev/null"}, nil, "--data-dir"},
		{"s3 without bucket", nil, s3(), "FHIRBUCKET_S3_BUCKET"},
		{"bad tenancy mode", nil, s3("FHIRBUCKET_S3_TENANCY_MODE=table", "FHIRBUCKET_S3_BUCKET=b"), "FHIRBUCKET_S3_TENANCY_MODE"},
		{"bad boolean", nil, s3("FHIRBUCKET_S3_BUCKET=b", "FHIRBUCKET_S3_FORCE_PATH_STYLE=yes please"), "FHIRBUCKET_S3_FORCE_PATH_STYLE"},
		{"bad validate boolean", nil, append(s3("FHIRBUCKET_S3_BUCKET=b"), "FHIRBUCKET_S3_VALIDATE_BUCKETS=maybe"), "FHIRBUCKET_S3_VALIDATE_BUCKETS"},
		{"http without allow", nil, []string{"FHIRBUCKET_BACKEND=s3", "FHIRBUCKET_S3_ENDPOINT_URL=http://127.0.0.1:1", "FHIRBUCKET_S3_BUCKET=b"}, "FHIRBUCKET_S3_ALLOW_HTTP"},
		{"bad endpoint", nil, s3("FHIRBUCKET_S3_BUCKET=b", "FHIRBUCKET_S3_ENDPOINT_URL=ftp://x"), "FHIRBUCKET_S3_ENDPOINT_URL"},
		{"tenant buckets in prefix mode", nil, s3("FHIRBUCKET_S3_BUCKET=b", "FHIRBUCKET_S3_TENANT_BUCKETS=a=x"), "FHIRBUCKET_S3_TENANT_BUCKETS"},
		{"bucket in bucket mode", nil, s3("FHIRBUCKET_S3_TENANCY_MODE=bucket", "FHIRBUCKET_S3_BUCKET=b", "FHIRBUCKET_S3_TENANT_BUCKETS=a=x"), "FHIRBUCKET_S3_BUCKET"},
		{"no tenant buckets", nil, s3("FHIRBUCKET_S3_TENANCY_MODE=bucket"), "FHIRBUCKET_S3_TENANT_BUCKETS"},
		{"shared tenant bucket", nil, s3("FHIRBUCKET_S3_TENANCY_MODE=bucket", "FHIRBUCKET_S3_TENANT_BUCKETS=a=x,b=x"), "FHIRBUCKET_S3_TENANT_BUCKETS"},
		{"tenant twice", nil, s3("FHIRBUCKET_S3_TENANCY_MODE=bucket", "FHIRBUCKET_S3_TENANT_BUCKETS=a=x,a=y"), "FHIRBUCKET_S3_TENANT_BUCKETS"},
		{"bad tenant name", nil, s3("FHIRBUCKET_S3_TENANCY_MODE=bucket", "FHIRBUCKET_S3_TENANT_BUCKETS=../a=x"), "FHIRBUCKET_S3_TENANT_BUCKETS"},
		{"reserved tenant name", nil, s3("FHIRBUCKET_S3_TENANCY_MODE=bucket", "FHIRBUCKET_S3_TENANT_BUCKETS=resources=x"), "FHIRBUCKET_S3_TENANT_BUCKETS"},
		{"pair without =", nil, s3("FHIRBUCKET_S3_TENANCY_MODE=bucket", "FHIRBUCKET_S3_TENANT_BUCKETS=a"), "FHIRBUCKET_S3_TENANT_BUCKETS"},
		{"bad prefix", nil, s3("FHIRBUCKET_S3_BUCKET=b", "FHIRBUCKET_S3_PREFIX=a/../b"), "FHIRBUCKET_S3_PREFIX"},
		{"unreachable bucket", nil, []string{"FHIRBUCKET_BACKEND=s3", "FHIRBUCKET_S3_ENDPOINT_URL=http://127.0.0.1:1", "FHIRBUCKET_S3_ALLOW_HTTP=1",
			"AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=y", "FHIRBUCKET_S3_BUCKET=nowhere"}, "FHIRBUCKET_S3_BUCKET"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// A configuration that wrongly starts the server is stopped
			// after a while and then fails the exit-code check.
			ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
			defer cancel()
			var stdout, stderr bytes.Buffer
			args := append([]string{"serve", "--log-level", "error"}, c.args...)
			env := c.env
			if !strings.Contains(strings.Join(env, " "), "FHIRBUCKET_ADDR") {
				env = append(env, "FHIRBUCKET_ADDR=127.0.0.1:0")
			}
			start := time.Now()
			code := run(ctx, args, env, &stdout, &stderr)
			if code != exitError {
				t.Fatalf("exit code %d, want %d; stderr: %s", code, exitError, stderr.String())
			}
			if !strings.Contains(stderr.String(), c.want) {
				t.Errorf("stderr does not name %s: %s", c.want, stderr.String())
			}
			if time.Since(start) > 30*time.Second {
				t.Errorf("took %v to fail", time.Since(start))
			}
		})
	}
}

// TestFlagsWin: a flag overrides its environment variable.
func TestFlagsWin(t *testing.T) {
	fs, v := newFlagSet("serve", "", &bytes.Buffer{}, serveSettings, storeSettings)
	err := v.parse(fs, []string{"--addr", "127.0.0.1:1", "--s3-allow-http"}, []string{"FHIRBUCKET_ADDR=:9", "FHIRBUCKET_BACKEND=memory", "FHIRBUCKET_TEST_X=ignored", "PATH=/bin"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, want, label string }{
		{"addr", "127.0.0.1:1", "--addr"},
		{"backend", "memory", "FHIRBUCKET_BACKEND"},
		{"data-dir", "./fhirbucket-data", "FHIRBUCKET_DATA_DIR (--data-dir)"},
		{"s3-allow-http", "true", "--s3-allow-http"},
	} {
		if got := v.str(c.name); got != c.want {
			t.Errorf("%s = %q, want %q", c.name, got, c.want)
		}
		if got := v.label(c.name); got != c.label {
			t.Errorf("label(%s) = %q, want %q", c.name, got, c.label)
		}
	}
}

// TestHelpListsEverySetting: serve --help documents every setting with its
// variable, and docs/configuration.md mentions every variable.
func TestHelpListsEverySetting(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"serve", "--help"}, nil, &stdout, &stderr); code != exitOK {
		t.Fatalf("serve --help: exit %d", code)
	}
	doc := readDoc(t)
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range serveSettings {
		if !strings.Contains(string(readme), "| `"+s.env+"`") {
			t.Errorf("README.md's settings table does not list %s", s.env)
		}
	}
	for _, list := range [][]setting{serveSettings, storeSettings, fsckSettings} {
		for _, s := range list {
			if s.env != "" && !strings.Contains(stderr.String(), s.env) && list[0].flag != "repair" {
				t.Errorf("serve --help does not list %s", s.env)
			}
			name := s.env
			if name == "" {
				name = "--" + s.flag
			}
			if !strings.Contains(doc, name) {
				t.Errorf("docs/configuration.md does not document %s", name)
			}
		}
	}
}

func TestVersionAndUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"version"}, nil, &stdout, &stderr); code != exitOK || !strings.HasPrefix(stdout.String(), "fhirbucket ") || !strings.Contains(stdout.String(), "FHIR 4.0.1") {
		t.Errorf("version: exit %d, %q", code, stdout.String())
	}
	if code := run(t.Context(), []string{"frobnicate"}, nil, &stdout, &stderr); code != exitError {
		t.Errorf("unknown command: exit %d", code)
	}
	if code := run(t.Context(), nil, nil, &stdout, &stderr); code != exitError {
		t.Errorf("no command: exit %d", code)
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"fhirbucket/internal/testenv"
)

func TestBenchCommand(t *testing.T) {
	out := filepath.Join(t.TempDir(), "report")
	examples := testenv.ExamplesDir()
	tests := []struct {
		name    string
		args    []string
		code    int
		stderr  string // substring expected on stderr
		written bool
	}{
		{"memory run", []string{"--backend", "memory", "--cell", "50ms", "--concurrency", "1,2", "--history-sizes", "3",
			"--history-page", "2", "--examples", examples, "--out", out}, exitOK, "", true},
		{"s3 flag on memory", []string{"--backend", "memory", "--bucket", "b"}, exitError, "--bucket applies to --backend s3 only", false},
		{"s3 without bucket", []string{"--backend", "s3", "--endpoint", "http://127.0.0.1:1"}, exitError, "--bucket is required", false},
		{"bad concurrency", []string{"--backend", "memory", "--concurrency", "0"}, exitError, "--concurrency", false},
		{"unknown backend", []string{"--backend", "tape"}, exitError, "want minio, s3, memory or file", false},
		{"data-dir on memory", []string{"--backend", "memory", "--data-dir", "x"}, exitError, "--data-dir applies", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), append([]string{"bench"}, tc.args...), nil, &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit code %d, want %d; stderr:\n%s", code, tc.code, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, stderr.String())
			}
			if !tc.written {
				return
			}
			md, err := os.ReadFile(out + ".md")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(stdout.String(), string(md)) {
				t.Error("the Markdown report was not printed")
			}
			data, err := os.ReadFile(out + ".json")
			if err != nil {
				t.Fatal(err)
			}
			var rep struct {
				Backend struct{ Kind string }
				FHIR    []struct{ Op string }
			}
			if err := json.Unmarshal(data, &rep); err != nil {
				t.Fatalf("JSON report: %v", err)
			}
			if rep.Backend.Kind != "memory" || len(rep.FHIR) != 8 {
				t.Errorf("JSON report: backend %q, %d FHIR rows, want memory and 8", rep.Backend.Kind, len(rep.FHIR))
			}
		})
	}
}

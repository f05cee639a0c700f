package server

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fhirKitVersion is the fhir-kit-client release the test installs.
const fhirKitVersion = "2.0.3"

// TestFHIRKitClient drives the server with the npm package fhir-kit-client,
// used unchanged: create, read, vread, update, delete, restore, history
// paging and search paging (testdata/fhirkit/drive.mjs). It needs node and
// npm and RUN_FHIRKIT_TESTS=1; the package is installed into
// <repo>/.tools/npm (git-ignored) on first use.
func TestFHIRKitClient(t *testing.T) {
	if os.Getenv("RUN_FHIRKIT_TESTS") != "1" {
		t.Skip("fhir-kit-client test disabled: set RUN_FHIRKIT_TESTS=1 (needs node and npm)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed")
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Skip("npm is not installed")
	}
	prefix, err := filepath.Abs(filepath.Join("..", ".tools", "npm"))
	if err != nil {
		t.Fatal(err)
	}
	module := filepath.Join(prefix, "node_modules", "fhir-kit-client", "dist", "index.js")
	if _, err := os.Stat(module); err != nil {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
		defer cancel()
		if err := os.MkdirAll(prefix, 0o755); err != nil {
			t.Fatal(err)
		}
		cmd := exec.CommandContext(ctx, npm, "install", "--prefix", prefix, "--no-audit", "--no-fund", "fhir-kit-client@"+fhirKitVersion)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Skipf("npm install fhir-kit-client failed (registry unreachable?): %v\n%s", err, out)
		}
	}
	e := newEnv(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, node, filepath.Join("testdata", "fhirkit", "drive.mjs"), module, e.url).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Fatalf("fhir-kit-client run: %v\n%s", err, out)
	}
}

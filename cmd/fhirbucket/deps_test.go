package main

import (
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestDepsWithoutTesting fails when production code links the testing
// package (and with it test-only harnesses such as internal/s3test, which
// creates and removes buckets): the fhirbucket binary and the packages it
// shares with the tests must reach local S3 servers through
// internal/s3server instead.
func TestDepsWithoutTesting(t *testing.T) {
	// `go test` puts its own GOROOT/bin first in PATH, so this is the
	// toolchain that built the test.
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go command not found in $PATH: %v", err)
	}
	forbidden := []string{"testing", "fhirbucket/internal/s3test"}
	for _, pkg := range []string{
		"fhirbucket/cmd/fhirbucket",
		"fhirbucket/internal/s3server",
		"fhirbucket/bench",
	} {
		t.Run(pkg, func(t *testing.T) {
			cmd := exec.CommandContext(t.Context(), goBin, "list", "-deps", pkg)
			out, err := cmd.Output()
			if err != nil {
				var stderr []byte
				if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
					stderr = ee.Stderr
				}
				t.Fatalf("go list -deps %s: %v\n%s", pkg, err, stderr)
			}
			deps := strings.Fields(string(out))
			// A listing without the package itself means go list did not
			// look at what this test thinks it did.
			if !slices.Contains(deps, pkg) {
				t.Fatalf("go list -deps %s does not list %s itself: %q", pkg, pkg, deps)
			}
			for _, bad := range forbidden {
				if slices.Contains(deps, bad) {
					t.Errorf("%s depends on %s; production code must not link test-only packages (see `go list -f '{{.ImportPath}}: {{.Imports}}' -deps %s`)", pkg, bad, pkg)
				}
			}
		})
	}
}

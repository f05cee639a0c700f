package main

import (
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// layerRule says which project packages a package may import (its
// non-test files; tests may reach further). Patterns are relative to the
// module: "storage" is that package alone, "storage/..." it and every
// package below it.
type layerRule struct {
	pkg   string
	allow []string
	// testOnly marks test infrastructure: no other row may allow it.
	testOnly bool
}

// Groups of the layering in docs/architecture.md, bottom up.
var (
	// base is what knows nothing of the services above it.
	base = []string{"fhir", "storage"}
	// core is the resource store and what it stands on.
	core = append([]string{"fhirstore", "lease", "internal/layout"}, base...)
	// services are the FHIR services the HTTP layer talks to.
	services = append([]string{"auth/...", "outcome", "bundle", "bulk/...", "index", "journal"}, core...)
	drivers  = []string{"storage/s3store", "storage/filestore", "storage/memstore"}
)

// layerRules is the import table: adding a package is adding a row.
var layerRules = []layerRule{
	// The command and the benchmark runner wire everything together.
	{pkg: "cmd/fhirbucket", allow: slices.Concat([]string{"server", "metrics", "bench", "loader", "bulkclient", "internal/clientkit", "internal/s3server"}, services, drivers)},
	{pkg: "bench", allow: slices.Concat([]string{"server", "metrics", "internal/s3server"}, services, drivers)},

	// The HTTP layer talks to the services, never to a driver.
	{pkg: "server", allow: append([]string{"metrics"}, services...)},
	{pkg: "metrics", allow: base},

	// The services, each above what it builds on.
	{pkg: "bundle", allow: append([]string{"index", "journal"}, core...)},
	{pkg: "bulk/...", allow: append([]string{"bulk", "outcome", "index", "journal"}, core...)},
	// outcome maps the sentinels of bundle, index and bulk (the root
	// package, which imports no service) as it does those of fhirstore.
	{pkg: "outcome", allow: append([]string{"auth", "bundle", "bulk", "index"}, core...)},
	{pkg: "index", allow: core},
	{pkg: "journal", allow: core},
	// auth checks tenant names with internal/layout, not with the store.
	{pkg: "auth", allow: []string{"fhir", "internal/layout"}},
	// The SMART token endpoint keeps its replay records in the bucket.
	{pkg: "auth/smart", allow: []string{"auth", "fhir", "internal/layout", "storage"}},
	// The client side of SMART Backend Services, shared by the CLIs.
	{pkg: "auth/smartclient"},
	// The CLI clients (load, export) speak HTTP to a server; they share
	// retries and progress through internal/clientkit, a leaf.
	{pkg: "loader", allow: []string{"fhir", "internal/clientkit"}},
	{pkg: "bulkclient", allow: []string{"fhir", "internal/clientkit"}},
	{pkg: "internal/clientkit"},

	// The resource store and what it stands on: nothing below fhirstore
	// knows what FHIR is.
	{pkg: "fhirstore", allow: []string{"lease", "internal/layout", "fhir", "storage"}},
	{pkg: "lease", allow: []string{"internal/layout", "storage"}},
	{pkg: "internal/layout", allow: []string{"storage"}},
	{pkg: "fhir"},
	{pkg: "storage"},
	{pkg: "storage/s3store", allow: []string{"storage"}},
	{pkg: "storage/filestore", allow: []string{"storage"}},
	{pkg: "storage/memstore", allow: []string{"storage"}},

	// Infrastructure for tests and benchmarks.
	{pkg: "internal/s3server", allow: []string{"storage", "storage/s3store"}},
	{pkg: "storage/storagetest", allow: []string{"storage"}, testOnly: true},
	{pkg: "internal/s3test", allow: []string{"internal/s3server", "storage", "storage/s3store"}, testOnly: true},
	// testenv stays below fhirstore, whose own tests use it.
	{pkg: "internal/testenv", allow: []string{"fhir", "internal/s3test", "storage/..."}, testOnly: true},
	{pkg: "internal/jepsen", allow: []string{"internal/faultproxy", "internal/s3server"}, testOnly: true},
	{pkg: "internal/faultproxy", testOnly: true},
	{pkg: "loader/loadertest", allow: []string{"loader", "fhir"}, testOnly: true},
	{pkg: "lease/leasetest", allow: []string{"lease", "storage", "storage/storagetest"}, testOnly: true},
}

const modulePath = "fhirbucket"

// matchPattern reports whether the module-relative package rel matches
// pattern (see layerRule).
func matchPattern(pattern, rel string) bool {
	if dir, ok := strings.CutSuffix(pattern, "/..."); ok {
		return rel == dir || strings.HasPrefix(rel, dir+"/")
	}
	return rel == pattern
}

// ruleFor returns the row of rel: an exact row wins over a "/..." row,
// and a longer "/..." row over a shorter one.
func ruleFor(rel string) (layerRule, bool) {
	var best layerRule
	found := false
	for _, r := range layerRules {
		if !matchPattern(r.pkg, rel) {
			continue
		}
		if r.pkg == rel {
			return r, true
		}
		if !found || len(r.pkg) > len(best.pkg) {
			best, found = r, true
		}
	}
	return best, found
}

// TestLayering asserts the import rules of docs/architecture.md: every
// project package has a row in layerRules and imports only what its row
// allows.
func TestLayering(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go command not found in $PATH: %v", err)
	}
	cmd := exec.CommandContext(t.Context(), goBin, "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", modulePath+"/...")
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			stderr = ee.Stderr
		}
		t.Fatalf("go list %s/...: %v\n%s", modulePath, err, stderr)
	}
	seen := 0
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		pkg, imports := fields[0], fields[1:]
		rel, ok := strings.CutPrefix(pkg, modulePath+"/")
		if !ok {
			continue
		}
		seen++
		rule, ok := ruleFor(rel)
		if !ok {
			t.Errorf("package %s has no row in layerRules (cmd/fhirbucket/layers_test.go): add one listing the project packages it may import, following docs/architecture.md", rel)
			continue
		}
		for _, imp := range imports {
			dep, ok := strings.CutPrefix(imp, modulePath+"/")
			if !ok {
				continue
			}
			if !slices.ContainsFunc(rule.allow, func(p string) bool { return matchPattern(p, dep) }) {
				t.Errorf("%s imports %s, which its row (%q) does not allow %q; dependencies point down docs/architecture.md, never up", rel, dep, rule.pkg, rule.allow)
			}
		}
	}
	// A listing without the packages of this module means go list did not
	// look at what this test thinks it did.
	if seen < 10 {
		t.Fatalf("go list %s/... listed only %d project packages:\n%s", modulePath, seen, out)
	}
}

// TestLayerRules checks the table itself: no row allows test-only code
// unless the row is test-only too, and rows are not repeated.
func TestLayerRules(t *testing.T) {
	var testOnly []string
	rows := map[string]bool{}
	for _, r := range layerRules {
		if rows[r.pkg] {
			t.Errorf("layerRules has two rows for %s", r.pkg)
		}
		rows[r.pkg] = true
		if r.testOnly {
			testOnly = append(testOnly, r.pkg)
		}
	}
	for _, r := range layerRules {
		if r.testOnly {
			continue
		}
		for _, a := range r.allow {
			for _, to := range testOnly {
				if matchPattern(a, to) || matchPattern(to, a) {
					t.Errorf("row %s allows %s, which covers the test-only package %s", r.pkg, a, to)
				}
			}
		}
	}
	for _, c := range []struct {
		pattern, rel string
		want         bool
	}{
		{"storage", "storage", true},
		{"storage", "storage/memstore", false},
		{"storage/...", "storage", true},
		{"storage/...", "storage/memstore", true},
		{"storage/...", "storagex", false},
		{"bulk/...", "bulk/export", true},
	} {
		if got := matchPattern(c.pattern, c.rel); got != c.want {
			t.Errorf("matchPattern(%q, %q) = %v, want %v", c.pattern, c.rel, got, c.want)
		}
	}
}

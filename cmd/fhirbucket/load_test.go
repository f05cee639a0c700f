package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"fhirbucket/loader/loadertest"
)

// loadFiles writes name → content files below a new folder.
func loadFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func patientLines(n int) string {
	var b strings.Builder
	for i := range n {
		if i%2 == 0 {
			fmt.Fprintf(&b, `{"resourceType":"Patient","id":"p%d"}`+"\n", i)
		} else {
			b.WriteString(`{"resourceType":"Patient"}` + "\n")
		}
	}
	return b.String()
}

func bundleOf(typ string, ids ...string) string {
	var entries []string
	for _, id := range ids {
		entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Patient","id":%q},"request":{"method":"PUT","url":"Patient/%s"}}`, id, id))
	}
	return fmt.Sprintf(`{"resourceType":"Bundle","type":%q,"entry":[%s]}`, typ, strings.Join(entries, ","))
}

// TestLoadCommand runs `fhirbucket load` through run against a fake
// batch/transaction endpoint over real HTTP.
func TestLoadCommand(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		files    map[string]string
		args     []string // before the folder
		after    []string // after the folder
		script   func(r loadertest.Request) (int, http.Header)
		code     int
		requests int
		stdout   []string // substrings
		stderr   []string
		check    func(t *testing.T, reqs []loadertest.Request)
	}{
		{
			name:     "ndjson and bundles load",
			files:    map[string]string{"a/patients.ndjson": patientLines(25), "b/tx.json": bundleOf("transaction", "t1", "t2")},
			args:     []string{"--batch-size", "10", "--tenant", "acme"},
			code:     exitOK,
			requests: 4,
			stdout:   []string{"files: 2, bundles: 4, entries: 27 ok, 0 failed"},
			stderr:   []string{"loading 2 files into http://", "patients.ndjson: 25 entries, 0 failed, 3 bundles", "tx.json: 2 entries, 0 failed, 1 bundles"},
			check: func(t *testing.T, reqs []loadertest.Request) {
				for _, r := range reqs {
					if r.Header.Get("X-Tenant-ID") != "acme" || r.Header.Get("Authorization") != "" {
						t.Errorf("headers %v", r.Header)
					}
				}
			},
		},
		{
			name:     "failures: exit 1 and listed",
			files:    map[string]string{"batch.json": bundleOf("batch", "ok1", "bad2", "ok3"), "doc.json": bundleOf("document", "d"), "tx.json": bundleOf("transaction", "x", "bad9")},
			code:     exitProblems,
			requests: 2, // the document is not sent
			stdout: []string{"files: 3 (3 with failures), bundles: 2, entries: 2 ok, 3 failed", "failures (3):",
				"batch.json entry[1] PUT Patient/bad2: 422: entry 1: Patient/bad2 is refused",
				`doc.json: not sent: only batch and transaction Bundles can be loaded, and Bundle.type is "document"`,
				"tx.json (all 2 entries): 400: transaction failed: entry 1: Patient/bad9 is refused"},
		},
		{
			name:  "429 and 503 are retried",
			files: map[string]string{"p.ndjson": patientLines(3)},
			args:  []string{"--token-file", tokenFile},
			script: func(r loadertest.Request) (int, http.Header) {
				switch r.Attempt {
				case 1:
					return http.StatusTooManyRequests, http.Header{"Retry-After": {"0"}}
				case 2:
					return http.StatusServiceUnavailable, http.Header{"Retry-After": {"0"}}
				}
				return 0, nil
			},
			code:     exitOK,
			requests: 3,
			stdout:   []string{"entries: 3 ok, 0 failed, retries: 2"},
			check: func(t *testing.T, reqs []loadertest.Request) {
				if got := reqs[2].Header.Get("Authorization"); got != "Bearer tok-123" {
					t.Errorf("Authorization %q", got)
				}
			},
		},
		{
			name:  "no retries",
			files: map[string]string{"p.ndjson": patientLines(3)},
			args:  []string{"--retries", "0"},
			script: func(loadertest.Request) (int, http.Header) {
				return http.StatusServiceUnavailable, http.Header{"Retry-After": {"0"}}
			},
			code:     exitProblems,
			requests: 1,
			stdout:   []string{"p.ndjson from line 1 (3 entries): 503: scripted 503"},
		},
		{
			name:     "flags after the paths, progress bar forced",
			files:    map[string]string{"p.ndjson": patientLines(4)},
			after:    []string{"--progress", "always", "--parallel", "2", "--token", "t0k"},
			code:     exitOK,
			requests: 1,
			stderr:   []string{"\r[", "files 1/1"},
			check: func(t *testing.T, reqs []loadertest.Request) {
				if got := reqs[0].Header.Get("Authorization"); got != "Bearer t0k" {
					t.Errorf("Authorization %q", got)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := loadertest.New()
			defer srv.Close()
			srv.Script = tc.script
			dir := loadFiles(t, tc.files)
			args := append([]string{"load", "--url", srv.URL}, tc.args...)
			args = append(append(args, dir), tc.after...)
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), args, nil, &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout.String(), stderr.String())
			}
			reqs := srv.Requests()
			if len(reqs) != tc.requests {
				t.Errorf("%d requests, want %d", len(reqs), tc.requests)
			}
			for _, want := range tc.stdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
				}
			}
			for _, want := range tc.stderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%q", want, stderr.String())
				}
			}
			if !strings.Contains(strings.Join(tc.after, " "), "always") && strings.ContainsAny(stderr.String(), "\r\x1b") {
				t.Errorf("stderr is not a terminal but has control characters: %q", stderr.String())
			}
			if tc.check != nil {
				tc.check(t, reqs)
			}
		})
	}
}

// TestLoadUsageErrors: bad usage exits 2, before anything is sent, with
// a message naming the flag or path at fault.
func TestLoadUsageErrors(t *testing.T) {
	srv := loadertest.New()
	defer srv.Close()
	dir := loadFiles(t, map[string]string{"p.ndjson": patientLines(1), "notes.txt": "x", "token": ""})
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no path", nil, "no FILE or DIR"},
		{"missing path", []string{filepath.Join(dir, "nope")}, "nope"},
		{"empty folder", []string{t.TempDir()}, "nothing to load"},
		{"not loadable", []string{filepath.Join(dir, "notes.txt")}, "notes.txt: not a *.json Bundle or *.ndjson file"},
		{"unknown flag", []string{"--bogus", dir}, "bogus"},
		{"bad url", []string{"--url", "ftp://x", dir}, "--url"},
		{"url without host", []string{"--url", "localhost:8080", dir}, "--url"},
		{"zero parallel", []string{"--parallel", "0", dir}, "--parallel"},
		{"bad batch size", []string{dir, "--batch-size", "ten"}, "--batch-size"},
		{"negative retries", []string{"--retries", "-1", dir}, "--retries"},
		{"bad timeout", []string{"--timeout", "5", dir}, "--timeout"},
		{"bad progress", []string{"--progress", "sometimes", dir}, "--progress"},
		{"token twice", []string{"--token", "a", "--token-file", filepath.Join(dir, "token"), dir}, "--token and --token-file"},
		{"empty token file", []string{"--token-file", filepath.Join(dir, "token"), dir}, "--token-file"},
		{"missing token file", []string{"--token-file", filepath.Join(dir, "none"), dir}, "--token-file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), append([]string{"load", "--url", srv.URL}, tc.args...), nil, &stdout, &stderr)
			if code != exitError {
				t.Errorf("exit code %d, want %d", code, exitError)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr lacks %q:\n%s", tc.want, stderr.String())
			}
			if n := len(srv.Requests()); n != 0 {
				t.Errorf("%d requests sent on bad usage", n)
			}
		})
	}
}

func TestLoadHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"load", "--help"}, nil, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit code %d", code)
	}
	for _, s := range loadSettings {
		if !strings.Contains(stderr.String(), "--"+s.flag+"\n") {
			t.Errorf("--help does not list --%s:\n%s", s.flag, stderr.String())
		}
	}
	if !strings.Contains(stderr.String(), "usage: fhirbucket load [flags] FILE|DIR") {
		t.Errorf("--help:\n%s", stderr.String())
	}
	stdout.Reset()
	run(t.Context(), []string{"help"}, nil, &stdout, &stderr)
	if !strings.Contains(stdout.String(), "  load ") {
		t.Errorf("the command list lacks load:\n%s", stdout.String())
	}
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"

	"fhirbucket/loader"
)

const loadSummary = `Load FHIR data into a FHIR server through its batch/transaction endpoint (POST to
the base URL). Directories are read recursively. A *.json file is one batch or
transaction Bundle, sent as it is (any other Bundle type is refused without being
sent). A *.ndjson file holds one resource per line, sent as batch Bundles of
--batch-size entries: PUT Type/id for a line with an id, POST Type without. Both
may be gzipped (.json.gz, .ndjson.gz). 429 and 503 answers are retried, honouring
Retry-After. A summary and the failures go to stdout, progress to stderr.
Exit code 0 when everything loaded, 1 when something failed, 2 on bad usage or
when interrupted.`

// loadSettings are flags only: load is a client and reads no environment.
var loadSettings = slices.Concat([]setting{
	{flag: "url", def: "http://localhost:8080", usage: "FHIR base URL of the server (with path tenant routing: including the tenant)"},
	{flag: "tenant", usage: "tenant, sent as the X-Tenant-ID header"},
	{flag: "token", usage: "bearer token (other users of the machine can see it in the process list: prefer --token-file)"},
	{flag: "token-file", usage: "file holding the bearer token"},
}, backendServicesSettings("system/*.*", "batch and transaction Bundles need system/*.*"), []setting{
	{flag: "parallel", def: strconv.Itoa(loader.DefaultParallel), usage: "Bundles in flight at once, across all files"},
	{flag: "batch-size", def: strconv.Itoa(loader.DefaultBatchSize), usage: "NDJSON lines per batch Bundle"},
	{flag: "timeout", def: loader.DefaultTimeout.String(), usage: "time allowed for each request, its answer included"},
	{flag: "retries", def: strconv.Itoa(loader.DefaultRetries), usage: "times a request is sent again after a 429, a 503 or no answer; 0: never"},
	{flag: "progress", def: "auto", usage: "progress on stderr: always (a bar redrawn in place), never (a line per finished file), or auto (the bar when stderr is a terminal)"},
})

// loadCmd runs `fhirbucket load`.
func loadCmd(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs, v := newFlagSet("load", loadSummary, stderr, loadSettings)
	fs.Usage = func() { clientUsage(stderr, "load [flags] FILE|DIR …", loadSummary, loadSettings) }
	paths, err := parseInterleaved(fs, args)
	if err != nil {
		return exitError, err
	}
	cfg, mode, err := loadConfig(v)
	if err != nil {
		return exitError, err
	}
	if len(paths) == 0 {
		return exitError, fmt.Errorf("no FILE or DIR to load (see --help)")
	}
	inputs, err := loader.Collect(paths)
	if err != nil {
		return exitError, err
	}
	if len(inputs) == 0 {
		return exitError, fmt.Errorf("nothing to load: no *.json or *.ndjson file (optionally .gz) in %s", strings.Join(paths, ", "))
	}
	bar := mode == "always" || (mode == "auto" && isTerminal(stderr))
	var prog *loader.Progress
	cfg.OnFileDone = func(r loader.FileResult, t loader.Totals) { prog.FileDone(r, t) }
	l, err := loader.New(cfg)
	if err != nil {
		return exitError, err
	}
	if !bar {
		fmt.Fprintf(stderr, "loading %d files into %s\n", len(inputs), cfg.URL)
	}
	prog = loader.StartProgress(stderr, bar, l.Totals)
	rep, err := l.Run(ctx, inputs)
	prog.Stop()
	if werr := rep.WriteSummary(stdout, 0); werr != nil && err == nil {
		err = werr
	}
	switch {
	case err != nil:
		return exitError, fmt.Errorf("interrupted: %w", err)
	case !rep.OK():
		return exitProblems, nil
	}
	return exitOK, nil
}

// loadConfig turns the flags into the loader's configuration and the
// progress mode; errors name the flag.
func loadConfig(v *values) (loader.Config, string, error) {
	var cfg loader.Config
	var err error
	if cfg.URL, cfg.Token, err = clientTarget(v); err != nil {
		return cfg, "", err
	}
	cfg.Tenant = v.str("tenant")
	if cfg.Client, cfg.Tokens, err = clientAuth(v, cfg.URL, cfg.Tenant); err != nil {
		return cfg, "", err
	}
	for _, s := range []struct {
		name string
		dst  *int
	}{{"parallel", &cfg.Parallel}, {"batch-size", &cfg.BatchSize}} {
		n, err := strconv.Atoi(v.str(s.name))
		if err != nil || n <= 0 {
			return cfg, "", fmt.Errorf("--%s: %q is not a positive integer", s.name, v.str(s.name))
		}
		*s.dst = n
	}
	n, err := strconv.Atoi(v.str("retries"))
	if err != nil || n < 0 {
		return cfg, "", fmt.Errorf("--retries: %q is not a non-negative integer", v.str("retries"))
	}
	cfg.Retries = n
	if n == 0 {
		cfg.Retries = -1 // 0 means "default" in loader.Config
	}
	if cfg.Timeout, err = v.duration("timeout"); err != nil {
		return cfg, "", fmt.Errorf("--timeout: %q is not a positive duration such as 30s", v.str("timeout"))
	}
	mode := v.str("progress")
	switch mode {
	case "auto", "always", "never":
	default:
		return cfg, "", fmt.Errorf("--progress: %q is not one of auto, always, never", mode)
	}
	return cfg, mode, nil
}

// clientTarget reads the --url, --token and --token-file flags of the
// client commands (load, export).
func clientTarget(v *values) (base, token string, err error) {
	raw := v.str("url")
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return "", "", fmt.Errorf("--url: %q is not an http:// or https:// base URL (without query or fragment)", raw)
	}
	if v.given("token") && v.given("token-file") {
		return "", "", fmt.Errorf("--token and --token-file: give one, not both")
	}
	token = v.str("token")
	if v.given("token-file") {
		data, err := os.ReadFile(v.str("token-file"))
		if err != nil {
			return "", "", fmt.Errorf("--token-file: %w", err)
		}
		if token = strings.TrimSpace(string(data)); token == "" {
			return "", "", fmt.Errorf("--token-file %s: the file is empty", v.str("token-file"))
		}
	}
	return raw, token, nil
}

// clientUsage prints the usage of a client command (flags only).
func clientUsage(w io.Writer, synopsis, summary string, defs []setting) {
	fmt.Fprintf(w, "usage: fhirbucket %s\n\n%s\n\nflags (no environment variables):\n\n", synopsis, summary)
	for _, s := range defs {
		def := s.def
		if def == "" {
			def = "none"
		}
		fmt.Fprintf(w, "  --%s\n        %s (default: %s)\n", s.flag, s.usage, def)
	}
}

// parseInterleaved parses flags that may come before, between and after
// the positional arguments (`load data/ --parallel 8`), which it returns
// in order; after "--" everything is positional.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

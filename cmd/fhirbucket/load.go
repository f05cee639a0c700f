package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"fhirbucket/auth/smartclient"
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
var loadSettings = []setting{
	{flag: "url", def: "http://localhost:8080", usage: "FHIR base URL of the server (with path tenant routing: including the tenant)"},
	{flag: "tenant", usage: "tenant, sent as the X-Tenant-ID header"},
	{flag: "token", usage: "bearer token (other users of the machine can see it in the process list: prefer --token-file)"},
	{flag: "token-file", usage: "file holding the bearer token"},
	{flag: "client-id", usage: "SMART Backend Services: the registered client id (with --private-key; instead of --token)"},
	{flag: "private-key", usage: "SMART Backend Services: PEM or JWK private key file that signs the client's assertions"},
	{flag: "scope", def: "system/*.*", usage: "SMART Backend Services: scopes to ask for (batch and transaction Bundles need system/*.*)"},
	{flag: "token-url", usage: "SMART Backend Services: the token endpoint (default: from {url}/.well-known/smart-configuration)"},
	{flag: "ca-cert", usage: "PEM file of CA certificates to trust for https:// URLs, besides the system's"},
	{flag: "parallel", def: strconv.Itoa(loader.DefaultParallel), usage: "Bundles in flight at once, across all files"},
	{flag: "batch-size", def: strconv.Itoa(loader.DefaultBatchSize), usage: "NDJSON lines per batch Bundle"},
	{flag: "timeout", def: loader.DefaultTimeout.String(), usage: "time allowed for each request, its answer included"},
	{flag: "retries", def: strconv.Itoa(loader.DefaultRetries), usage: "times a request is sent again after a 429, a 503 or no answer; 0: never"},
	{flag: "progress", def: "auto", usage: "progress on stderr: always (a bar redrawn in place), never (a line per finished file), or auto (the bar when stderr is a terminal)"},
}

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
	hc, err := clientHTTP(v)
	if err != nil {
		return cfg, "", err
	}
	cfg.Client = hc
	if cfg.Tokens, err = backendServices(v, cfg.URL, cfg.Tenant, hc); err != nil {
		return cfg, "", err
	}
	if cfg.Tokens != nil && (v.given("token") || v.given("token-file")) {
		return cfg, "", fmt.Errorf("--client-id and --token/--token-file: authenticate one way, not both")
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

// clientHTTP is the HTTP client of a CLI: the default transport, trusting
// --ca-cert's CAs as well as the system's.
func clientHTTP(v *values) (*http.Client, error) {
	if !v.given("ca-cert") {
		return nil, nil
	}
	data, err := os.ReadFile(v.str("ca-cert"))
	if err != nil {
		return nil, fmt.Errorf("--ca-cert: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("--ca-cert %s: no PEM certificate in it", v.str("ca-cert"))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}, nil
}

// backendServices is the token source of --client-id and --private-key,
// or nil without them.
func backendServices(v *values, baseURL, tenant string, hc *http.Client) (loader.TokenSource, error) {
	id, keyFile := v.given("client-id"), v.given("private-key")
	switch {
	case !id && !keyFile:
		if v.given("token-url") {
			return nil, fmt.Errorf("--token-url needs --client-id and --private-key")
		}
		return nil, nil
	case !id:
		return nil, fmt.Errorf("--private-key needs --client-id")
	case !keyFile:
		return nil, fmt.Errorf("--client-id needs --private-key")
	}
	key, kid, err := smartclient.LoadPrivateKey(v.str("private-key"))
	if err != nil {
		return nil, fmt.Errorf("--private-key: %w", err)
	}
	h := http.Header{}
	if tenant != "" {
		h.Set("X-Tenant-ID", tenant)
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	src, err := smartclient.New(smartclient.Config{
		BaseURL: baseURL, TokenURL: v.str("token-url"), Header: h, ClientID: v.str("client-id"),
		Key: key, KeyID: kid, Scope: v.str("scope"), HTTPClient: hc,
	})
	if err != nil {
		return nil, err
	}
	return src, nil
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

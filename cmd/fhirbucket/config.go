package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// envPrefix starts every environment setting.
const envPrefix = "FHIRBUCKET_"

// testEnvPrefix is reserved for the test suites (for example
// FHIRBUCKET_TEST_MINIO_ENDPOINT) and never read by the command.
const testEnvPrefix = "FHIRBUCKET_TEST_"

// setting is one configuration value, settable by a flag and by an
// environment variable; the flag wins.
type setting struct {
	flag   string // without dashes
	env    string
	def    string
	isBool bool
	usage  string
}

// storeSettings select and reach the storage; serve and fsck share them.
var storeSettings = []setting{
	{flag: "backend", env: "FHIRBUCKET_BACKEND", def: "file", usage: "storage backend: file, s3 or memory"},
	{flag: "data-dir", env: "FHIRBUCKET_DATA_DIR", def: "./fhirbucket-data", usage: "folder of the file backend, created if missing"},
	{flag: "s3-tenancy-mode", env: "FHIRBUCKET_S3_TENANCY_MODE", def: "prefix", usage: "s3: prefix (all tenants in one bucket, one prefix each) or bucket (one bucket per tenant)"},
	{flag: "s3-bucket", env: "FHIRBUCKET_S3_BUCKET", usage: "s3, prefix mode: the bucket"},
	{flag: "s3-tenant-buckets", env: "FHIRBUCKET_S3_TENANT_BUCKETS", usage: "s3, bucket mode: tenant=bucket pairs, comma-separated (a=bucket-a,b=bucket-b)"},
	{flag: "s3-prefix", env: "FHIRBUCKET_S3_PREFIX", usage: "s3: global key prefix below which all data lives"},
	{flag: "s3-region", env: "FHIRBUCKET_S3_REGION", usage: "s3: signing region (default AWS_REGION; us-east-1 with an endpoint URL)"},
	{flag: "s3-endpoint-url", env: "FHIRBUCKET_S3_ENDPOINT_URL", usage: "s3: URL of an S3-compatible server (MinIO, …); empty for AWS"},
	{flag: "s3-force-path-style", env: "FHIRBUCKET_S3_FORCE_PATH_STYLE", isBool: true, usage: "s3: path-style addressing (default true with an endpoint URL, false on AWS)"},
	{flag: "s3-allow-http", env: "FHIRBUCKET_S3_ALLOW_HTTP", def: "false", isBool: true, usage: "s3: allow a plain http:// endpoint URL"},
	{flag: "s3-validate-buckets", env: "FHIRBUCKET_S3_VALIDATE_BUCKETS", def: "true", isBool: true, usage: "s3: check every bucket with HeadBucket at start-up"},
	{flag: "log-level", env: "FHIRBUCKET_LOG_LEVEL", def: "info", usage: "log level: debug, info, warn or error"},
	{flag: "log-format", env: "FHIRBUCKET_LOG_FORMAT", def: "auto", usage: "log format: json, text, or auto (json unless stderr is a terminal)"},
}

// serveSettings are the settings of the HTTP server only.
var serveSettings = []setting{
	{flag: "addr", env: "FHIRBUCKET_ADDR", def: ":8080", usage: "listen address"},
	{flag: "base-url", env: "FHIRBUCKET_BASE_URL", usage: "public URL of the FHIR base, used in Location, fullUrl and links (default: from each request)"},
	{flag: "base-path", env: "FHIRBUCKET_BASE_PATH", usage: "path of the FHIR base below the server root, e.g. /fhir (default: the root)"},
	{flag: "tenant-routing", env: "FHIRBUCKET_TENANT_ROUTING", def: "header", usage: "where the tenant comes from: header (X-Tenant-ID, default tenant \"default\"), path (/{tenant}/Patient/…) or both (URL wins)"},
	{flag: "max-body-bytes", env: "FHIRBUCKET_MAX_BODY_BYTES", def: "8388608", usage: "largest request body in bytes; larger answers 413"},
	{flag: "read-header-timeout", env: "FHIRBUCKET_READ_HEADER_TIMEOUT", def: "10s", usage: "time allowed to read request headers"},
	{flag: "read-timeout", env: "FHIRBUCKET_READ_TIMEOUT", def: "2m", usage: "time allowed to read a whole request, body included; a slower client is cut off"},
	{flag: "shutdown-timeout", env: "FHIRBUCKET_SHUTDOWN_TIMEOUT", def: "30s", usage: "on SIGINT/SIGTERM, how long in-flight requests may take to finish"},
	{flag: "auth", env: "FHIRBUCKET_AUTH", def: "none", usage: "access control: none (every request allowed; for a server only its host can reach), token (bearer tokens from --auth-token-file) or smart (SMART Backend Services: clients from --auth-smart-clients trade signed JWTs for access tokens)"},
	{flag: "auth-token-file", env: "FHIRBUCKET_AUTH_TOKEN_FILE", usage: "auth token: JSON file of SHA-256 token hashes with their tenant and scopes (see docs/guarantees.md)"},
	{flag: "max-bundle-entries", env: "FHIRBUCKET_MAX_BUNDLE_ENTRIES", def: "1000", usage: "most entries of one batch or transaction Bundle; more answers 413"},
	{flag: "bundle-parallelism", env: "FHIRBUCKET_BUNDLE_PARALLELISM", def: "16", usage: "batch entries, and writes of one transaction phase, processed at a time"},
	{flag: "tx-lease-ttl", env: "FHIRBUCKET_TX_LEASE_TTL", def: "30s", usage: "lease of an open transaction journal; a journal whose owner stops renewing it is finished by any replica after it"},
	{flag: "claim-ttl", env: "FHIRBUCKET_CLAIM_TTL", def: "10s", usage: "lease of an identifier claim of a conditional create; a claim whose holder stopped blocks its identifier at most this long"},
	{flag: "tx-recovery-interval", env: "FHIRBUCKET_TX_RECOVERY_INTERVAL", def: "1m", usage: "how often serve looks for transactions a stopped process left open, and aborts them"},
	{flag: "auth-smart-clients", env: "FHIRBUCKET_AUTH_SMART_CLIENTS", usage: "auth smart: JSON file of registered clients: client_id, tenant, scopes, and jwks or jwks_url (see docs/guarantees.md)"},
	{flag: "auth-smart-signing-key", env: "FHIRBUCKET_AUTH_SMART_SIGNING_KEY", usage: "auth smart: PEM private key (EC P-256/P-384 or RSA) that signs the access tokens; every replica needs the same (default: a key made at start-up, valid at this process only)"},
	{flag: "auth-smart-token-lifetime", env: "FHIRBUCKET_AUTH_SMART_TOKEN_LIFETIME", def: "5m", usage: "auth smart: lifetime of the access tokens, at most 5m"},
	{flag: "auth-smart-jwks-timeout", env: "FHIRBUCKET_AUTH_SMART_JWKS_TIMEOUT", def: "5s", usage: "auth smart: time allowed to fetch a client's jwks_url (fetched key sets are kept 5 minutes)"},
	{flag: "tls-cert", env: "FHIRBUCKET_TLS_CERT", usage: "serve HTTPS: PEM certificate chain file (with --tls-key); reloaded on SIGHUP and when the files change"},
	{flag: "tls-key", env: "FHIRBUCKET_TLS_KEY", usage: "serve HTTPS: PEM private key file of --tls-cert"},
	{flag: "allow-plain-http", env: "FHIRBUCKET_ALLOW_PLAIN_HTTP", def: "false", isBool: true, usage: "with auth token or smart, serve plain HTTP on a non-loopback address (only behind a TLS-terminating reverse proxy)"},
	{flag: "export-lease-ttl", env: "FHIRBUCKET_EXPORT_LEASE_TTL", def: "30s", usage: "lease of a running bulk export job (at least 3s); a job whose replica stops renewing it is resumed by another after it"},
	{flag: "export-scan-interval", env: "FHIRBUCKET_EXPORT_SCAN_INTERVAL", def: "5s", usage: "how often serve looks for export jobs to take over (with jitter)"},
	{flag: "export-workers", env: "FHIRBUCKET_EXPORT_WORKERS", def: "2", usage: "export jobs this process runs at once; more wait for a free worker on any replica"},
	{flag: "export-max-per-tenant", env: "FHIRBUCKET_EXPORT_MAX_PER_TENANT", def: "4", usage: "unfinished export jobs of one tenant (and, with auth, of one client); one more kick-off answers 429"},
	{flag: "export-parallelism", env: "FHIRBUCKET_EXPORT_PARALLELISM", def: "16", usage: "resource reads in flight per export job"},
	{flag: "export-part-lines", env: "FHIRBUCKET_EXPORT_PART_LINES", def: "50000", usage: "most resources of one export file (fixed per job at kick-off)"},
	{flag: "export-part-bytes", env: "FHIRBUCKET_EXPORT_PART_BYTES", def: "134217728", usage: "most bytes of one export file (fixed per job at kick-off; a larger resource is a file of its own)"},
	{flag: "export-retry-after", env: "FHIRBUCKET_EXPORT_RETRY_AFTER", def: "2s", usage: "Retry-After of an export status answer while the job runs"},
	{flag: "export-min-poll", env: "FHIRBUCKET_EXPORT_MIN_POLL", usage: "a status poll of a running job sooner than this after the previous one answers 429 (default a quarter of --export-retry-after)"},
	{flag: "export-manifest-page", env: "FHIRBUCKET_EXPORT_MANIFEST_PAGE", def: "100", usage: "files on one partial manifest page (allowPartialManifests)"},
}

// knownEnv is every environment setting of every subcommand: a variable
// one subcommand does not use is not an error for it (serve and fsck share
// one environment), but a name no subcommand knows is.
func knownEnv() map[string]bool {
	m := map[string]bool{}
	for _, list := range [][]setting{storeSettings, serveSettings} {
		for _, s := range list {
			m[s.env] = true
		}
	}
	return m
}

// flagValue records whether a flag was given on the command line.
type flagValue struct {
	val    string
	set    bool
	isBool bool
}

func (f *flagValue) String() string   { return f.val }
func (f *flagValue) IsBoolFlag() bool { return f.isBool }
func (f *flagValue) Set(s string) error {
	f.val, f.set = s, true
	return nil
}

// values is the resolved configuration of one subcommand.
type values struct {
	defs  map[string]setting
	flags map[string]*flagValue
	env   map[string]string
}

// newFlagSet registers defs on a FlagSet whose usage lists every setting
// with its variable and default.
func newFlagSet(name, summary string, out io.Writer, defs ...[]setting) (*flag.FlagSet, *values) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	v := &values{defs: map[string]setting{}, flags: map[string]*flagValue{}}
	var all []setting
	for _, list := range defs {
		all = append(all, list...)
	}
	for _, s := range all {
		fv := &flagValue{isBool: s.isBool}
		v.defs[s.flag], v.flags[s.flag] = s, fv
		fs.Var(fv, s.flag, s.usage)
	}
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: fhirbucket %s [flags]\n\n%s\n\nEvery flag can also be set by its environment variable; the flag wins.\n\n", name, summary)
		for _, s := range all {
			if s.env == "" {
				fmt.Fprintf(out, "  --%s\n", s.flag)
			} else {
				fmt.Fprintf(out, "  --%s, %s\n", s.flag, s.env)
			}
			switch {
			case strings.Contains(s.usage, "(default"):
				fmt.Fprintf(out, "        %s\n", s.usage)
			case s.def == "":
				fmt.Fprintf(out, "        %s (default: none)\n", s.usage)
			default:
				fmt.Fprintf(out, "        %s (default: %s)\n", s.usage, s.def)
			}
		}
	}
	return fs, v
}

// parse reads args and the environment (KEY=value lines). Unknown flags,
// positional arguments and unknown FHIRBUCKET_ variables are errors.
func (v *values) parse(fs *flag.FlagSet, args, environ []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: settings are flags (--name value) or %s* variables", fs.Arg(0), envPrefix)
	}
	known := knownEnv()
	v.env = map[string]string{}
	var unknown []string
	for _, kv := range environ {
		k, val, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, envPrefix) || strings.HasPrefix(k, testEnvPrefix) {
			continue
		}
		if !known[k] {
			unknown = append(unknown, k)
			continue
		}
		v.env[k] = val
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		return fmt.Errorf("unknown setting %s: no such %s variable (see --help)", strings.Join(unknown, ", "), envPrefix)
	}
	return nil
}

// get returns the value of a setting and whether it was given (by flag
// or environment) rather than defaulted.
func (v *values) get(name string) (string, bool) {
	s, ok := v.defs[name]
	if !ok {
		panic("unknown setting " + name)
	}
	if f := v.flags[name]; f.set {
		return f.val, true
	}
	if val, ok := v.env[s.env]; ok {
		return val, true
	}
	return s.def, false
}

func (v *values) str(name string) string {
	val, _ := v.get(name)
	return strings.TrimSpace(val)
}

// given reports whether a setting was set to a non-empty value.
func (v *values) given(name string) bool {
	val, set := v.get(name)
	return set && strings.TrimSpace(val) != ""
}

// label names a setting in messages the way the user set it.
func (v *values) label(name string) string {
	s := v.defs[name]
	if v.flags[name].set {
		return "--" + s.flag
	}
	if _, ok := v.env[s.env]; ok {
		return s.env
	}
	return s.env + " (--" + s.flag + ")"
}

// boolean parses a boolean setting; absent (or empty) returns nil.
func (v *values) boolean(name string) (*bool, error) {
	val := v.str(name)
	if val == "" {
		return nil, nil
	}
	b, err := strconv.ParseBool(val)
	if err != nil {
		return nil, fmt.Errorf("%s: %q is not a boolean (use true or false)", v.label(name), val)
	}
	return &b, nil
}

func (v *values) positiveInt(name string) (int64, error) {
	val := v.str(name)
	n, err := strconv.ParseInt(val, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s: %q is not a positive integer", v.label(name), val)
	}
	return n, nil
}

func (v *values) duration(name string) (time.Duration, error) {
	val := v.str(name)
	d, err := time.ParseDuration(val)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s: %q is not a positive duration such as 10s", v.label(name), val)
	}
	return d, nil
}

// oneOf checks an enumerated setting.
func (v *values) oneOf(name string, allowed ...string) (string, error) {
	val := v.str(name)
	if !slices.Contains(allowed, val) {
		return "", fmt.Errorf("%s: %q is not one of %s", v.label(name), val, strings.Join(allowed, ", "))
	}
	return val, nil
}

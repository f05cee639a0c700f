package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/index"
	"fhirbucket/metrics"
	"fhirbucket/storage"
	"fhirbucket/storage/filestore"
	"fhirbucket/storage/memstore"
	"fhirbucket/storage/s3store"
)

// newIndex builds the identifier index over the backend's store; claims
// last ttl (0: the default).
func (b *backend) newIndex(log *slog.Logger, ttl time.Duration) (*index.Index, error) {
	return index.New(index.Config{Store: b.store, Owner: processOwner(), ClaimTTL: ttl, Validator: b.validator, Logger: log})
}

// backend is the opened storage: the resource store plus a readiness
// probe for /readyz.
type backend struct {
	store     *fhirstore.Store
	validator *fhir.Validator
	ready     func(ctx context.Context) error
	desc      string
	// driver is what openBackend opened (a memstore or filestore bucket,
	// an s3store client); Close closes it.
	driver io.Closer
}

// Close releases the storage.
func (b *backend) Close() error {
	if b.driver == nil {
		return nil
	}
	return b.driver.Close()
}

// startupCheckTimeout bounds the HeadBucket checks at start-up.
const startupCheckTimeout = 30 * time.Second

// openBackend builds the storage named by the store settings. Every error
// names the setting at fault.
// maxBytes bounds the resources the validator accepts (0: its default).
func openBackend(ctx context.Context, v *values, log *slog.Logger, maxBytes int64) (*backend, error) {
	return openInstrumentedBackend(ctx, v, log, maxBytes, nil)
}

// openInstrumentedBackend is openBackend reporting storage requests,
// S3 wire requests and roll-forwards to m (nil: no metrics).
func openInstrumentedBackend(ctx context.Context, v *values, log *slog.Logger, maxBytes int64, m *metrics.Metrics) (*backend, error) {
	kind, err := v.oneOf("backend", "file", "s3", "memory")
	if err != nil {
		return nil, err
	}
	// Settings of another backend are a contradiction, not something to
	// ignore: they usually mean the backend setting is missing.
	s3Only := []string{"s3-bucket", "s3-tenant-buckets", "s3-prefix", "s3-region", "s3-endpoint-url",
		"s3-force-path-style", "s3-allow-http", "s3-validate-buckets", "s3-tenancy-mode"}
	if kind != "s3" {
		for _, name := range s3Only {
			if v.given(name) {
				return nil, fmt.Errorf("%s is set but %s is %q: S3 settings need %s=s3", v.label(name), v.label("backend"), kind, v.defs["backend"].env)
			}
		}
	}
	if kind != "file" && v.given("data-dir") {
		return nil, fmt.Errorf("%s is set but %s is %q: the data folder is used by the file backend only", v.label("data-dir"), v.label("backend"), kind)
	}

	validator, err := fhir.NewValidator(fhir.ValidatorOptions{MaxBytes: maxBytes})
	if err != nil {
		return nil, fmt.Errorf("loading the FHIR validator: %w", err)
	}
	// Every command that writes maintains the identifier index.
	cfg := fhirstore.Config{Mode: fhirstore.TenancyPrefix, Validator: validator, Logger: log, Indexer: &index.Keys{}}
	b := &backend{validator: validator}
	switch kind {
	case "memory":
		mb := memstore.New()
		cfg.Bucket, b.driver = mb, mb
		b.desc = "memory (data is lost on exit)"
	case "file":
		dir := v.str("data-dir")
		if dir == "" {
			return nil, fmt.Errorf("%s is empty: give a folder", v.label("data-dir"))
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("%s: creating %s: %w", v.label("data-dir"), dir, err)
		}
		fb, err := filestore.Open(dir)
		if err != nil {
			return nil, fmt.Errorf("%s: opening %s: %w", v.label("data-dir"), dir, err)
		}
		cfg.Bucket, b.driver = fb, fb
		abs, _ := filepath.Abs(dir)
		b.desc = "file " + abs
		b.ready = func(ctx context.Context) error { return dirWritable(filepath.Join(dir, filestore.ReservedDir)) }
	case "s3":
		if err := openS3(ctx, v, &cfg, b, m); err != nil {
			_ = b.Close()
			return nil, err
		}
	}
	if m != nil {
		cfg.Hooks.RollForward = m.RollForward
		if cfg.Bucket != nil {
			cfg.Bucket = m.InstrumentBucket(cfg.Bucket)
		}
		for t, tb := range cfg.TenantBuckets {
			cfg.TenantBuckets[t] = m.InstrumentBucket(tb)
		}
	}
	st, err := fhirstore.New(cfg)
	if err != nil {
		_ = b.Close()
		return nil, fmt.Errorf("configuring the resource store: %w", err)
	}
	b.store = st
	return b, nil
}

// dirWritable checks that the data folder exists and accepts a new file.
// The probe goes to the driver's reserved folder, which never holds keys.
func dirWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".readyz-*")
	if err != nil {
		return fmt.Errorf("data folder %s is not writable: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

func openS3(ctx context.Context, v *values, cfg *fhirstore.Config, b *backend, m *metrics.Metrics) error {
	mode, err := v.oneOf("s3-tenancy-mode", "prefix", "bucket")
	if err != nil {
		return err
	}
	forcePath, err := v.boolean("s3-force-path-style")
	if err != nil {
		return err
	}
	allowHTTP, err := v.boolean("s3-allow-http")
	if err != nil {
		return err
	}
	validate, err := v.boolean("s3-validate-buckets")
	if err != nil {
		return err
	}
	sc := s3store.Config{
		Region:         v.str("s3-region"),
		EndpointURL:    v.str("s3-endpoint-url"),
		ForcePathStyle: forcePath,
		AllowHTTP:      allowHTTP != nil && *allowHTTP,
	}
	if m != nil {
		sc.Observe = m.ObserveS3
	}
	client, err := s3store.New(ctx, sc)
	if err != nil {
		var ce *s3store.ConfigError
		if errors.As(err, &ce) && s3Settings[ce.Field] != "" {
			return fmt.Errorf("%s: %w", v.label(s3Settings[ce.Field]), err)
		}
		return fmt.Errorf("S3 settings: %w", err)
	}
	b.driver = client
	cfg.Prefix = strings.Trim(v.str("s3-prefix"), "/")
	if cfg.Prefix != "" {
		if err := storage.ValidPrefix(cfg.Prefix); err != nil {
			return fmt.Errorf("%s: %w", v.label("s3-prefix"), err)
		}
	}

	// bucketSetting remembers which setting named each bucket, for the
	// start-up check's message.
	var names []string
	bucketSetting := map[string]string{}
	switch mode {
	case "prefix":
		if v.given("s3-tenant-buckets") {
			return fmt.Errorf("%s is set but %s is prefix: tenant buckets need %s=bucket", v.label("s3-tenant-buckets"), v.label("s3-tenancy-mode"), v.defs["s3-tenancy-mode"].env)
		}
		name := v.str("s3-bucket")
		if name == "" {
			return fmt.Errorf("%s is required with %s=s3 in prefix tenancy mode", v.label("s3-bucket"), v.defs["backend"].env)
		}
		cfg.Mode, cfg.Bucket = fhirstore.TenancyPrefix, client.Bucket(name)
		names, bucketSetting[name] = []string{name}, v.label("s3-bucket")
		b.desc = fmt.Sprintf("s3 bucket %s, tenant per prefix", name)
	case "bucket":
		if v.given("s3-bucket") {
			return fmt.Errorf("%s is set but %s is bucket: in bucket mode every tenant's bucket comes from %s", v.label("s3-bucket"), v.label("s3-tenancy-mode"), v.defs["s3-tenant-buckets"].env)
		}
		pairs, err := parseTenantBuckets(v.str("s3-tenant-buckets"))
		if err != nil {
			return fmt.Errorf("%s: %w", v.label("s3-tenant-buckets"), err)
		}
		cfg.Mode, cfg.TenantBuckets = fhirstore.TenancyBucket, map[string]storage.Bucket{}
		for tenant, name := range pairs {
			cfg.TenantBuckets[tenant] = client.Bucket(name)
			names = append(names, name)
			bucketSetting[name] = v.label("s3-tenant-buckets")
		}
		slices.Sort(names)
		b.desc = fmt.Sprintf("s3, bucket per tenant (%d tenants)", len(pairs))
	}
	b.ready = func(ctx context.Context) error { return client.CheckBuckets(ctx, names...) }
	if validate == nil || *validate {
		cctx, cancel := context.WithTimeout(ctx, startupCheckTimeout)
		defer cancel()
		for _, name := range names {
			if err := client.CheckBuckets(cctx, name); err != nil {
				hint := ""
				if errors.Is(err, storage.ErrBucketNotFound) {
					hint = " (the server never creates buckets: create it first)"
				}
				return fmt.Errorf("%s: bucket %q is not usable%s: %w", bucketSetting[name], name, hint, err)
			}
		}
	}
	return nil
}

// parseTenantBuckets reads "a=bucket-a,b=bucket-b". A tenant given twice,
// or two tenants on one bucket name (their data would mix), is an error.
func parseTenantBuckets(s string) (map[string]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("required in bucket tenancy mode: give tenant=bucket pairs, comma-separated")
	}
	out := map[string]string{}
	owner := map[string]string{} // bucket -> tenant
	for pair := range strings.SplitSeq(s, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		tenant, name, ok := strings.Cut(pair, "=")
		tenant, name = strings.TrimSpace(tenant), strings.TrimSpace(name)
		if !ok || tenant == "" || name == "" {
			return nil, fmt.Errorf("%q is not a tenant=bucket pair", pair)
		}
		if err := fhirstore.ValidTenant(tenant); err != nil {
			return nil, fmt.Errorf("tenant %q: %w", tenant, err)
		}
		if _, dup := out[tenant]; dup {
			return nil, fmt.Errorf("tenant %q is mapped twice", tenant)
		}
		if other, dup := owner[name]; dup {
			return nil, fmt.Errorf("tenants %q and %q share bucket %q: give each tenant its own bucket", other, tenant, name)
		}
		out[tenant], owner[name] = name, tenant
	}
	if len(out) == 0 {
		return nil, errors.New("no tenant=bucket pair given")
	}
	return out, nil
}

// s3Settings names the setting that fills each s3store.Config field, for
// the message of an s3store.ConfigError. Fields the command line cannot
// set are missing: their errors name no setting.
var s3Settings = map[string]string{
	"Region":         "s3-region",
	"EndpointURL":    "s3-endpoint-url",
	"ForcePathStyle": "s3-force-path-style",
	"AllowHTTP":      "s3-allow-http",
}

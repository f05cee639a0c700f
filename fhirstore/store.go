package fhirstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/internal/layout"
	"fhirbucket/storage"
)

// TenancyMode says where a tenant's data lives.
type TenancyMode int

const (
	// TenancyPrefix keeps every tenant in one bucket, under G/{tenant}/.
	TenancyPrefix TenancyMode = iota
	// TenancyBucket gives every tenant its own bucket from an explicit map,
	// with the tenant base G/.
	TenancyBucket
)

func (m TenancyMode) String() string {
	switch m {
	case TenancyPrefix:
		return "prefix"
	case TenancyBucket:
		return "bucket"
	}
	return fmt.Sprintf("TenancyMode(%d)", int(m))
}

// DefaultTenant is the tenant used when a request names none.
const DefaultTenant = "default"

// Defaults of the optional Config settings.
const (
	DefaultParallelism  = 16
	DefaultWriteRetries = 50
	DefaultListCount    = 20
	DefaultHistoryCount = 50
	MaxCount            = 1000
)

// Config configures a Store.
type Config struct {
	Mode TenancyMode
	// Bucket is the one bucket of TenancyPrefix.
	Bucket storage.Bucket
	// TenantBuckets maps tenant -> bucket in TenancyBucket mode. The
	// caller checks that no two tenants share a bucket name; New also
	// rejects two tenants mapped to the identical Bucket value.
	TenantBuckets map[string]storage.Bucket
	// Prefix is the global prefix G; leading and trailing "/" are trimmed;
	// "" means none.
	Prefix string
	// Validator checks every body written (required).
	Validator *fhir.Validator
	// Now is the clock (default time.Now). Times are kept at millisecond
	// precision.
	Now func() time.Time
	// Logger (default slog.Default()).
	Logger *slog.Logger

	// Parallelism bounds the concurrent requests one call makes (history
	// and list pages, Verify). Default DefaultParallelism.
	Parallelism int
	// WriteRetries bounds how often an unconditional write that lost the
	// race for a version number re-reads and tries again before it fails
	// with ErrVersionConflict. Default DefaultWriteRetries.
	WriteRetries int
	// HistoryWindow is the first time window a type or system history page
	// lists when it has no hint from an earlier page. Default one second.
	HistoryWindow time.Duration
	// Hooks report events for telemetry (optional; see Hooks).
	Hooks Hooks
	// TxWait is how long a writer waits for an open transaction whose
	// version it finds current before it fails with ErrTxInProgress.
	// Default DefaultTxWait; negative: do not wait.
	TxWait time.Duration
	// Indexer, when set, names the index objects every version needs
	// (see Indexer); nil: no secondary index is kept.
	Indexer Indexer
}

// Store keeps versioned FHIR resources in object storage. It is safe for
// concurrent use, also by several processes sharing the same buckets: all
// coordination goes through conditional writes (see the package doc).
type Store struct {
	mode      TenancyMode
	bucket    storage.Bucket
	tenants   map[string]storage.Bucket // bucket mode: tenant -> tenant base
	prefix    string
	validator *fhir.Validator
	now       func() time.Time
	log       *slog.Logger
	par       int
	retries   int
	window    int64 // ms
	hooks     Hooks
	txWait    time.Duration
	txs       txCache // finished transaction outcomes (tx.go)
	indexer   Indexer // nil: none

	// windowHint remembers, per tenant and history listing, the window
	// size that last produced a full page, so that the next first page
	// starts with a good guess. It is only a cost hint, never state.
	windowHint sync.Map // string -> int64
	// newestHint remembers, per tenant and history listing, the newest
	// event {ts} this process wrote or listed (a cost hint as well).
	newestHint sync.Map // string -> int64
}

// New checks cfg and returns a Store. It does no I/O. Errors name the
// setting at fault.
func New(cfg Config) (*Store, error) {
	s := &Store{
		mode: cfg.Mode, validator: cfg.Validator, now: cfg.Now, log: cfg.Logger,
		par: cfg.Parallelism, retries: cfg.WriteRetries, window: cfg.HistoryWindow.Milliseconds(),
		prefix: strings.Trim(cfg.Prefix, "/"), hooks: cfg.Hooks, txWait: cfg.TxWait, indexer: cfg.Indexer,
	}
	if s.validator == nil {
		return nil, errors.New("fhirstore: Config.Validator is required")
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.par <= 0 {
		s.par = DefaultParallelism
	}
	if s.retries <= 0 {
		s.retries = DefaultWriteRetries
	}
	if s.txWait == 0 {
		s.txWait = DefaultTxWait
	}
	if s.window <= 0 {
		s.window = 1000
	}
	if s.prefix != "" {
		if err := storage.ValidKey(s.prefix); err != nil {
			return nil, fmt.Errorf("fhirstore: Config.Prefix %q: %w", cfg.Prefix, err)
		}
	}
	switch cfg.Mode {
	case TenancyPrefix:
		if cfg.Bucket == nil {
			return nil, errors.New("fhirstore: Config.Bucket is required in prefix tenancy mode")
		}
		if len(cfg.TenantBuckets) > 0 {
			return nil, errors.New("fhirstore: Config.TenantBuckets is only allowed in bucket tenancy mode")
		}
		s.bucket = cfg.Bucket
	case TenancyBucket:
		if cfg.Bucket != nil {
			return nil, errors.New("fhirstore: Config.Bucket is not allowed in bucket tenancy mode (use Config.TenantBuckets)")
		}
		if len(cfg.TenantBuckets) == 0 {
			return nil, errors.New("fhirstore: Config.TenantBuckets is empty in bucket tenancy mode")
		}
		s.tenants = make(map[string]storage.Bucket, len(cfg.TenantBuckets))
		names := make([]string, 0, len(cfg.TenantBuckets))
		for t := range cfg.TenantBuckets {
			names = append(names, t)
		}
		slices.Sort(names)
		for i, t := range names {
			b := cfg.TenantBuckets[t]
			if err := ValidTenant(t); err != nil {
				return nil, fmt.Errorf("fhirstore: Config.TenantBuckets: %w", err)
			}
			if b == nil {
				return nil, fmt.Errorf("fhirstore: Config.TenantBuckets[%q] is nil", t)
			}
			for _, o := range names[:i] {
				if sameBucket(cfg.TenantBuckets[o], b) {
					return nil, fmt.Errorf("fhirstore: Config.TenantBuckets: tenants %q and %q are mapped to the same bucket", o, t)
				}
			}
			tb, err := storage.Prefixed(b, s.prefix)
			if err != nil {
				return nil, fmt.Errorf("fhirstore: Config.Prefix: %w", err)
			}
			s.tenants[t] = tb
		}
	default:
		return nil, fmt.Errorf("fhirstore: Config.Mode %d is not a tenancy mode", int(cfg.Mode))
	}
	return s, nil
}

// sameBucket compares two Bucket values without panicking on dynamic types
// that are not comparable (those can never be "the same value" anyway).
func sameBucket(a, b storage.Bucket) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}

// ValidTenant checks a tenant id with layout.ValidTenant:
// [A-Za-z0-9][A-Za-z0-9._-]{0,63}, and not one of the reserved words
// resources, history, bulk, tenants, _system. Errors wrap ErrInvalidTenant.
func ValidTenant(tenant string) error {
	if err := layout.ValidTenant(tenant); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidTenant, err)
	}
	return nil
}

// TenantBucket returns the storage.Bucket rooted at the tenant base T
// (G/{tenant}/ in prefix mode, G/ of the mapped bucket in bucket mode).
// An invalid or (in bucket mode) unmapped tenant fails with
// ErrInvalidTenant. It does no I/O.
func (s *Store) TenantBucket(tenant string) (storage.Bucket, error) {
	if err := ValidTenant(tenant); err != nil {
		return nil, err
	}
	if s.mode == TenancyBucket {
		b, ok := s.tenants[tenant]
		if !ok {
			return nil, fmt.Errorf("%w: %q is not mapped to a bucket", ErrInvalidTenant, tenant)
		}
		return b, nil
	}
	p := tenant
	if s.prefix != "" {
		p = s.prefix + "/" + tenant
	}
	return storage.Prefixed(s.bucket, p)
}

// Tenants lists the tenants that have data, sorted. In prefix mode it lists
// G/ with a delimiter (one LIST per 1,000 tenants) and keeps the names that
// are valid tenant ids; in bucket mode it returns the configured tenants
// without I/O.
func (s *Store) Tenants(ctx context.Context) ([]string, error) {
	if s.mode == TenancyBucket {
		out := make([]string, 0, len(s.tenants))
		for t := range s.tenants {
			out = append(out, t)
		}
		slices.Sort(out)
		return out, nil
	}
	base := ""
	if s.prefix != "" {
		base = s.prefix + "/"
	}
	var out []string
	opts := storage.ListOptions{Prefix: base, Delimiter: "/"}
	for {
		page, err := s.bucket.List(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("fhirstore: listing tenants: %w", err)
		}
		for _, p := range page.Prefixes {
			t := strings.TrimSuffix(strings.TrimPrefix(p, base), "/")
			if ValidTenant(t) == nil {
				out = append(out, t)
			}
		}
		if page.Next == "" {
			return out, nil
		}
		opts.StartAfter = page.Next
	}
}

// scope is one tenant's keyspace: the tenant base and the tenant id that
// every envelope below it carries.
type scope struct {
	b      storage.Bucket
	tenant string
}

// scope validates tenant and returns its scope.
func (s *Store) scope(tenant string) (scope, error) {
	b, err := s.TenantBucket(tenant)
	if err != nil {
		return scope{}, err
	}
	return scope{b: b, tenant: tenant}, nil
}

// checkTarget validates tenant, type and (when needID) id before any I/O
// and returns the tenant's scope.
func (s *Store) checkTarget(tenant, typ, id string, needID bool) (scope, error) {
	b, err := s.TenantBucket(tenant)
	if err != nil {
		return scope{}, err
	}
	if !fhir.IsResourceType(typ) {
		return scope{}, fmt.Errorf("%w: %q is not a FHIR R4 resource type", ErrInvalid, typ)
	}
	if needID && !fhir.ValidID(id) {
		return scope{}, fmt.Errorf("%w: %q is not a valid FHIR id ([A-Za-z0-9.-]{1,64}, not \".\" or \"..\")", ErrInvalid, id)
	}
	return scope{b: b, tenant: tenant}, nil
}

// forEach runs f(i) for i in [0, n) with at most s.par calls at a time and
// returns the first error (by index) it saw.
func (s *Store) forEach(ctx context.Context, n int, f func(ctx context.Context, i int) error) error {
	if n == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, n)
	sem := make(chan struct{}, s.par)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(ctx, i); err != nil {
				errs[i] = err
				cancel()
			}
		}()
	}
	wg.Wait()
	// Report the first real failure rather than a cancellation it caused.
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// Package index owns the identifier index: objects below index/identifier/
// in each tenant that say which version of which resource carries which
// identifier (docs/object-layout.md), the lookup that verifies every
// candidate against the visible current version, the claims that give
// conditional create exactly one winner across replicas, and reindex for
// data written before the index existed.
//
// The index objects themselves are written by fhirstore, with every
// version claim (Keys is its fhirstore.Indexer); this package only reads
// them, and writes claims, completeness markers and repairs.
package index

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/internal/layout"
	"fhirbucket/lease"
	"fhirbucket/storage"
)

// ErrIncomplete: the tenant's identifier index is not known to cover
// every resource (data written before the index existed), so an answer
// could miss a match. The operator runs `fhirbucket reindex`.
var ErrIncomplete = errors.New("index: the identifier index is not known to be complete")

// Defaults of Config.
const (
	DefaultClaimTTL    = 10 * time.Second
	DefaultParallelism = 16
	// DefaultClaimWait bounds how long a conditional create waits for a
	// claim another request holds before it answers ErrBusy.
	DefaultClaimWait = 30 * time.Second
)

// ErrBusy: another request held the identifier's claim for longer than
// Config.ClaimWait. Nothing was written; the client retries.
var ErrBusy = errors.New("index: the identifier is being claimed by another request")

// Config configures an Index.
type Config struct {
	// Store keeps the resources (required). It must have been built with
	// Indexer: &Keys{}, or the index is never maintained.
	Store *fhirstore.Store
	// Owner names this process in claims (default: host name and a random
	// suffix). It must be unique among the processes sharing the bucket.
	Owner string
	// ClaimTTL is how long a claim of a conditional create lasts; a
	// claimant that stopped blocks its identifier for at most this long
	// (plus the skew margin). Default DefaultClaimTTL.
	ClaimTTL time.Duration
	// ClaimWait bounds the wait for a claim held by another request.
	// Default DefaultClaimWait.
	ClaimWait time.Duration
	// Parallelism bounds the concurrent reads of one lookup. Default
	// DefaultParallelism.
	Parallelism int
	// Validator checks the bodies of conditional writes before anything
	// is claimed (required: the store's own validator).
	Validator *fhir.Validator
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// Index answers identifier lookups and conditional interactions. It is
// safe for concurrent use, also by several processes sharing the bucket.
type Index struct {
	store     *fhirstore.Store
	owner     string
	ttl       time.Duration
	wait      time.Duration
	par       int
	log       *slog.Logger
	validator *fhir.Validator
	// complete caches the tenants whose index is known complete: a marker
	// is never removed by the server, so a positive answer stays true.
	complete sync.Map // tenant -> struct{}
}

// New checks cfg and returns an Index. It does no I/O.
func New(cfg Config) (*Index, error) {
	if cfg.Store == nil {
		return nil, errors.New("index: Config.Store is required")
	}
	ix := &Index{store: cfg.Store, owner: cfg.Owner, ttl: cfg.ClaimTTL, wait: cfg.ClaimWait, par: cfg.Parallelism, log: cfg.Logger, validator: cfg.Validator}
	if ix.validator == nil {
		return nil, errors.New("index: Config.Validator is required")
	}
	if ix.owner == "" {
		host, _ := os.Hostname()
		ix.owner = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), randomHex(4))
	}
	switch {
	case ix.ttl < 0:
		return nil, fmt.Errorf("index: Config.ClaimTTL must be positive, got %v", cfg.ClaimTTL)
	case ix.ttl == 0:
		ix.ttl = DefaultClaimTTL
	}
	if ix.wait <= 0 {
		ix.wait = DefaultClaimWait
	}
	if ix.par <= 0 {
		ix.par = DefaultParallelism
	}
	if ix.log == nil {
		ix.log = slog.Default()
	}
	return ix, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// checkType refuses a type the index does not cover.
func checkType(typ string) error {
	if !identifierTypes[typ] {
		return fmt.Errorf("%w: %s has no identifier element; search and conditional interactions by identifier are not available for it", fhirstore.ErrNotSupported, typ)
	}
	return nil
}

// Complete reports whether the tenant's index is known to cover every
// resource, and fails with ErrIncomplete when it is not. A tenant without
// any resource is complete from the start: the marker is written then
// (1 GET + 1 LIST + 1 PUT, once per tenant and process; 0 requests once
// known).
func (ix *Index) Complete(ctx context.Context, tenant string) error {
	if _, ok := ix.complete.Load(tenant); ok {
		return nil
	}
	b, err := ix.store.TenantBucket(tenant)
	if err != nil {
		return err
	}
	ok, err := markIfEmpty(ctx, b, "no resources when first searched")
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w for tenant %q: it holds resources that may have been written before the index existed; run `fhirbucket reindex --tenant %s` once", ErrIncomplete, tenant, tenant)
	}
	ix.complete.Store(tenant, struct{}{})
	return nil
}

// markIfEmpty reports whether the tenant's index is marked complete,
// marking it first when the tenant has no resources at all.
func markIfEmpty(ctx context.Context, b storage.Bucket, reason string) (bool, error) {
	_, err := b.Stat(ctx, layout.IdentifierCompleteKey)
	switch {
	case err == nil:
		return true, nil
	case !errors.Is(err, storage.ErrNotExist):
		return false, fmt.Errorf("index: reading the completeness marker: %w", err)
	}
	page, err := b.List(ctx, storage.ListOptions{Prefix: layout.ResourcesPrefix, MaxKeys: 1})
	if err != nil {
		return false, fmt.Errorf("index: listing the resources: %w", err)
	}
	if len(page.Objects) > 0 || len(page.Prefixes) > 0 {
		// An indexed writer of an empty tenant writes the marker before
		// its first resource: a resource listed now that such a writer
		// wrote has its marker in place already. Look again, so that a
		// concurrent first write is not taken for old data.
		switch _, err := b.Stat(ctx, layout.IdentifierCompleteKey); {
		case err == nil:
			return true, nil
		case errors.Is(err, storage.ErrNotExist):
			return false, nil
		default:
			return false, fmt.Errorf("index: reading the completeness marker: %w", err)
		}
	}
	if err := writeMarker(ctx, b, time.Now().UTC(), reason); err != nil {
		return false, err
	}
	return true, nil
}

func (ix *Index) now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

// Search returns the current, visible resources of typ that match c, in
// id order. Every candidate the index names is read (Store.Read) and
// checked: a version that dropped the identifier, a deletion, a write
// that never completed or a transaction that has not committed is no
// match. Cost: 1 LIST per token (per 1,000 entries) + 1 GET per distinct
// candidate, the GETs in parallel.
func (ix *Index) Search(ctx context.Context, tenant, typ string, c Criteria) ([]*fhirstore.Resource, error) {
	if err := checkType(typ); err != nil {
		return nil, err
	}
	if len(c.Tokens) == 0 {
		return nil, fmt.Errorf("%w: no identifier to search", fhirstore.ErrInvalid)
	}
	if err := ix.Complete(ctx, tenant); err != nil {
		return nil, err
	}
	b, err := ix.store.TenantBucket(tenant)
	if err != nil {
		return nil, err
	}
	ids, err := ix.candidates(ctx, b, typ, c)
	if err != nil {
		return nil, err
	}
	found := make([]*fhirstore.Resource, len(ids))
	err = forEach(ctx, ix.par, len(ids), func(ctx context.Context, i int) error {
		res, err := ix.store.Read(ctx, tenant, typ, ids[i])
		switch {
		case errors.Is(err, fhirstore.ErrNotFound), errors.Is(err, fhirstore.ErrGone):
			return nil
		case err != nil:
			return err
		}
		if c.Match(res.Content) {
			found[i] = res
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := slices.DeleteFunc(found, func(r *fhirstore.Resource) bool { return r == nil })
	return out, nil
}

// candidates lists the entries of c's tokens and returns the distinct ids
// they name (restricted to c.IDs when given), sorted.
func (ix *Index) candidates(ctx context.Context, b storage.Bucket, typ string, c Criteria) ([]string, error) {
	set := map[string]bool{}
	prefixes := map[string]bool{}
	for _, t := range c.Tokens {
		p := layout.IdentifierValuePrefix(typ, layout.IdentifierValueHash(t.Value))
		if t.HasSystem {
			p = layout.IdentifierSystemPrefix(typ, layout.IdentifierValueHash(t.Value), layout.IdentifierSystemHash(t.System))
		}
		prefixes[p] = true
	}
	for p := range prefixes {
		for a, err := range storage.Walk(ctx, b, storage.ListOptions{Prefix: p}) {
			if err != nil {
				return nil, fmt.Errorf("index: listing %s: %w", p, err)
			}
			if e, ok := layout.ParseIdentifierEntry(a.Key); ok && e.Type == typ {
				set[e.ID] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for id := range set {
		if len(c.IDs) == 0 || slices.Contains(c.IDs, id) {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out, nil
}

// forEach runs f(i) for i in [0, n), at most par at a time, and returns
// the first error.
func forEach(ctx context.Context, par, n int, f func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, n)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if errs[i] = f(ctx, i); errs[i] != nil {
				cancel()
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	return errors.Join(errs...)
}

// claimManager is the lease manager of a tenant's claims.
func (ix *Index) claimManager(b storage.Bucket) (*lease.Manager, error) {
	return lease.New(lease.Config{Bucket: b, Owner: ix.owner, TTL: ix.ttl})
}

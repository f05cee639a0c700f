package smart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// maxJWKSBytes bounds a fetched key set.
const maxJWKSBytes = 1 << 20

// jwksCache fetches the key sets of clients that publish them at a URL,
// keeps each for a TTL, fetches again early (at most once per minRefetch)
// when an assertion names a kid the cached set lacks, and remembers a
// failed fetch briefly so that a dead URL costs one timeout, not one per
// request.
type jwksCache struct {
	client     *http.Client
	timeout    time.Duration
	ttl        time.Duration
	minRefetch time.Duration
	now        func() time.Time

	mu      sync.Mutex
	entries map[string]*jwksEntry
}

type jwksEntry struct {
	mu      sync.Mutex // held while fetching: one fetch per URL at a time
	set     *jose.JSONWebKeySet
	fetched time.Time
	err     error
	failed  time.Time
}

func (c *jwksCache) entry(url string) *jwksEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[url]
	if !ok {
		e = &jwksEntry{}
		c.entries[url] = e
	}
	return e
}

// keys returns the key set at url that has kid, fetching it when the
// cached one is stale or lacks kid. The fetch is bounded by the cache's
// timeout and by ctx.
func (c *jwksCache) keys(ctx context.Context, url, kid string) (*jose.JSONWebKeySet, error) {
	e := c.entry(url)
	e.mu.Lock()
	defer e.mu.Unlock()
	now := c.now()
	fresh := e.set != nil && now.Sub(e.fetched) < c.ttl
	if fresh && (len(e.set.Key(kid)) > 0 || now.Sub(e.fetched) < c.minRefetch) {
		return e.set, nil
	}
	if e.err != nil && now.Sub(e.failed) < c.minRefetch {
		return nil, e.err
	}
	set, err := c.fetch(ctx, url)
	if err != nil {
		e.err, e.failed = err, c.now()
		return nil, err
	}
	e.set, e.fetched, e.err = set, c.now(), nil
	return set, nil
}

func (c *jwksCache) fetch(ctx context.Context, url string) (*jose.JSONWebKeySet, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("the client's jwks_url %s: %w", url, err)
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := c.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("the client's jwks_url %s did not answer within %s", url, c.timeout)
		}
		return nil, fmt.Errorf("the client's jwks_url %s could not be fetched: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("the client's jwks_url %s answered %s", url, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("the client's jwks_url %s: reading the key set: %w", url, err)
	}
	if len(data) > maxJWKSBytes {
		return nil, fmt.Errorf("the client's jwks_url %s: the key set is larger than %d bytes", url, maxJWKSBytes)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("the client's jwks_url %s: not a JWK set: %v", url, err)
	}
	if err := checkPublicKeys(&set); err != nil {
		return nil, fmt.Errorf("the client's jwks_url %s: %v", url, err)
	}
	return &set, nil
}

package smart

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"fhirbucket/auth"
	"fhirbucket/internal/layout"
	"fhirbucket/storage"
)

// ErrReplayed: the assertion id was used before.
var ErrReplayed = errors.New("smart: the assertion's jti was used before")

// Replay records the assertion ids (jti) the token endpoint accepted.
type Replay interface {
	// Claim records that client c used jti in an assertion that expires
	// at exp. Of all claims of one (client, jti), across every process
	// that shares the record, exactly one succeeds; the others fail with
	// ErrReplayed. Any other error means the claim could not be recorded
	// (the token request then fails: an unrecorded jti could be replayed).
	Claim(ctx context.Context, c *Client, jti string, exp time.Time) error
}

// BucketReplay keeps each accepted jti as an object,
// auth/jti/{client}/{sha256(jti)}.json, created with If-None-Match: * in
// the tenant base of the client's tenant (of AnyTenantBase for a client
// bound to every tenant), so that every replica on the bucket sees it.
// Records are deleted once they are older than SweepAge, which is far
// beyond any assertion's exp: by then a replay fails on exp anyway.
type BucketReplay struct {
	// Bucket returns the bucket rooted at a tenant's base.
	Bucket func(tenant string) (storage.Bucket, error)
	// AnyTenantBase is the tenant whose base holds the records of clients
	// bound to every tenant ("*").
	AnyTenantBase string
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// SweepEvery is how often (per client, per process) a claim also
	// deletes the client's old records; SweepAge is the age past which a
	// record is deleted. Defaults DefaultSweepEvery, DefaultSweepAge.
	SweepEvery, SweepAge time.Duration

	mu        sync.Mutex
	lastSweep map[string]time.Time
}

// The sweep defaults.
const (
	DefaultSweepEvery = 10 * time.Minute
	DefaultSweepAge   = time.Hour
)

var _ Replay = (*BucketReplay)(nil)

type jtiRecord struct {
	ClientID  string `json:"client_id"`
	Expires   string `json:"exp"`
	ClaimedAt string `json:"claimed_at"`
}

func (r *BucketReplay) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Claim implements Replay.
func (r *BucketReplay) Claim(ctx context.Context, c *Client, jti string, exp time.Time) error {
	tenant := c.Tenant
	if tenant == auth.AnyTenant {
		tenant = r.AnyTenantBase
	}
	b, err := r.Bucket(tenant)
	if err != nil {
		return fmt.Errorf("smart: replay record of client %q: %w", c.ID, err)
	}
	now := r.now()
	body, _ := json.Marshal(jtiRecord{ClientID: c.ID, Expires: exp.UTC().Format(time.RFC3339), ClaimedAt: now.UTC().Format(time.RFC3339Nano)})
	_, err = b.Put(ctx, layout.JTIKey(c.ID, jti), bytes.NewReader(body), storage.PutOptions{
		ContentType: "application/json", IfNoneMatch: "*", Size: int64(len(body)),
	})
	switch {
	case errors.Is(err, storage.ErrPreconditionFailed), errors.Is(err, storage.ErrConflict):
		return ErrReplayed
	case err != nil:
		return fmt.Errorf("smart: recording the jti of client %q: %w", c.ID, err)
	}
	r.sweep(ctx, b, c.ID, now)
	return nil
}

// sweep deletes the client's records older than SweepAge, at most once
// per SweepEvery and one listing page at a time. Its failures are
// ignored: a record left behind costs storage, not safety.
func (r *BucketReplay) sweep(ctx context.Context, b storage.Bucket, client string, now time.Time) {
	every, age := r.SweepEvery, r.SweepAge
	if every <= 0 {
		every = DefaultSweepEvery
	}
	if age <= 0 {
		age = DefaultSweepAge
	}
	r.mu.Lock()
	if r.lastSweep == nil {
		r.lastSweep = map[string]time.Time{}
	}
	if last, ok := r.lastSweep[client]; ok && now.Sub(last) < every {
		r.mu.Unlock()
		return
	}
	r.lastSweep[client] = now
	r.mu.Unlock()
	page, err := b.List(ctx, storage.ListOptions{Prefix: layout.ClientJTIPrefix(client)})
	if err != nil {
		return
	}
	for _, o := range page.Objects {
		if !o.ModTime.IsZero() && now.Sub(o.ModTime) > age {
			_ = b.Delete(ctx, o.Key)
		}
	}
}

// Package lease owns leases on objects of a storage.Bucket, built from
// conditional puts alone: an owner holds an object until an expiry, renews
// it while it works, and any other replica may take an expired lease over
// and finish the work. It knows nothing of FHIR; transaction journals, bulk
// export jobs and bulk submit manifests build on it.
//
// The lease lives inside the object it guards, next to the caller's state,
// so that one conditional PUT changes both at once:
//
//	{"lease":{"owner":"replica-a","expires":"2026-01-02T03:04:05.678Z","token":3},"state":<caller's JSON>}
//
// A released lease keeps only its token: {"lease":{"token":3},"state":…}.
// The caller's state is kept byte for byte (it never passes through
// float64 or a re-encoding).
//
// Every operation that changes an object is exactly one conditional PUT:
// If-None-Match:* to create, If-Match with the ETag the caller last saw to
// change. Of several replicas racing on one object exactly one wins; the
// others learn it from ErrExists or ErrLost. The store is the only
// arbiter: the clock only decides when a replica may try to take a lease
// over and when a holder must stop working (see docs/leases.md).
//
// Fencing: the token is 1 when the object is created and grows by one with
// every takeover, never with a renewal, update or release. A holder that
// writes to other objects on the lease's behalf stamps them with its token
// (or conditions them on the lease's ETag), so that a write of an older
// holder can be recognised and refused.
package lease

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode/utf8"

	"fhirbucket/storage"
)

// The errors of this package. Test with errors.Is; each is wrapped with the
// operation, the key and, where there is one, the storage error.
var (
	// ErrExists: Create found the key already present (or lost a race to
	// create it). Nothing was written.
	ErrExists = errors.New("lease: object exists")
	// ErrHeld: the document the caller passed shows a lease of another
	// owner (for Renew, Update, Release, Keep) or an unexpired one (for
	// TakeOver). No request was made.
	ErrHeld = errors.New("lease: held by another owner")
	// ErrLost: the conditional put failed because the object changed since
	// the caller read it (renewed, taken over, updated or released by
	// someone else), or it is gone, or the document is released. The
	// caller does not hold the lease; nothing was written.
	ErrLost = errors.New("lease: lost")
	// ErrExpired: a Holder's clock reached the lease's expiry less the
	// skew margin without a confirmed renewal (the store kept failing, or
	// the process was paused). The holder must stop working; whether the
	// lease is still its own is unknown until it reads the object again.
	ErrExpired = errors.New("lease: expired before it could be renewed")
	// ErrUnknown: the put may or may not have landed (the store was
	// unavailable, the context ended mid-request, or an unclassified
	// error). The storage error is wrapped too, so
	// errors.Is(err, storage.ErrUnavailable) holds when that was the
	// cause. The caller must read the object again before assuming it
	// holds or lost the lease (Holder.Refresh does that).
	ErrUnknown = errors.New("lease: outcome unknown")
	// ErrCorrupt: the object is not a lease document.
	ErrCorrupt = errors.New("lease: not a lease document")
	// ErrInvalid: an argument or a Config value is not allowed (the state
	// is not one JSON value, an empty owner, a negative duration).
	ErrInvalid = errors.New("lease: invalid argument")
)

// Defaults of Config.
const (
	DefaultTTL = 30 * time.Second
)

// Clock is the time source of a Manager. Tests inject a fake one
// (leasetest.Clock) to move time without sleeping.
type Clock interface {
	// Now is the current time.
	Now() time.Time
	// After sends the time on the returned channel once d has passed
	// (at once when d <= 0), like time.After.
	After(d time.Duration) <-chan time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Config configures a Manager.
type Config struct {
	// Bucket holds the lease documents. Required.
	Bucket storage.Bucket
	// Owner names the holder in the documents this Manager writes (a
	// replica id). Required; it must be valid UTF-8 and unique among the
	// processes that share the bucket at one time, since a holder
	// recognises its own writes by owner and token.
	Owner string
	// TTL is how long a lease lasts after each write (create, renew,
	// takeover, update). Default DefaultTTL. A Holder renews every TTL/3.
	TTL time.Duration
	// Skew bounds the difference between the clocks of any two replicas.
	// A taker treats a lease as expired only Skew after its expiry; a
	// holder treats it as gone Skew before. 0 means TTL/6; it must be
	// less than TTL/3, so that a holder gets two renewal attempts before
	// it must stop.
	Skew time.Duration
	// Clock is the time source. Default: the system clock.
	Clock Clock
}

// Manager reads and writes lease documents for one owner. It is safe for
// concurrent use and holds no state besides its Config.
type Manager struct {
	b     storage.Bucket
	owner string
	ttl   time.Duration
	skew  time.Duration
	clock Clock
}

// New checks cfg, fills in its defaults and returns a Manager.
func New(cfg Config) (*Manager, error) {
	if cfg.Bucket == nil {
		return nil, fmt.Errorf("%w: Config.Bucket is required", ErrInvalid)
	}
	if cfg.Owner == "" || !utf8.ValidString(cfg.Owner) {
		return nil, fmt.Errorf("%w: Config.Owner must be a non-empty UTF-8 string, got %q", ErrInvalid, cfg.Owner)
	}
	if cfg.TTL < 0 || cfg.Skew < 0 {
		return nil, fmt.Errorf("%w: Config.TTL (%v) and Config.Skew (%v) must not be negative", ErrInvalid, cfg.TTL, cfg.Skew)
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Skew == 0 {
		cfg.Skew = cfg.TTL / 6
	}
	if cfg.TTL < 3*time.Millisecond || 3*cfg.Skew >= cfg.TTL {
		return nil, fmt.Errorf("%w: Config.Skew (%v) must be less than a third of Config.TTL (%v)", ErrInvalid, cfg.Skew, cfg.TTL)
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	return &Manager{b: cfg.Bucket, owner: cfg.Owner, ttl: cfg.TTL, skew: cfg.Skew, clock: cfg.Clock}, nil
}

// Owner is the owner name this Manager writes.
func (m *Manager) Owner() string { return m.owner }

// TTL is the lease duration after each write.
func (m *Manager) TTL() time.Duration { return m.ttl }

// Skew is the clock-skew margin.
func (m *Manager) Skew() time.Duration { return m.skew }

// Lease is the lease part of a document.
type Lease struct {
	// Owner holds the lease; "" once it is released.
	Owner string
	// Expires is the end of the lease by the holder's clock, in UTC with
	// millisecond precision; zero once released.
	Expires time.Time
	// Token is the fencing token: 1 at creation, one more with every
	// takeover, unchanged by renewals, updates and releases. Tokens count
	// per key: a key deleted and created again starts at 1.
	Token int64
}

// Released reports whether the lease was released (no owner).
func (l Lease) Released() bool { return l.Owner == "" }

// Doc is one lease document as last written or read.
type Doc struct {
	// Key is the object's key.
	Key string
	// ETag is the object's ETag: the precondition of the next write.
	ETag  string
	Lease Lease
	// State is the caller's JSON value, byte for byte as written (less
	// surrounding whitespace). It must not be modified.
	State json.RawMessage
}

// Status is a lease's standing by the reader's clock.
type Status int

const (
	// Held: the lease has an owner and is not expired by more than the
	// skew margin; TakeOver refuses it.
	Held Status = iota + 1
	// Expired: more than the skew margin past its expiry; TakeOver may
	// take it.
	Expired
	// Released: the holder released it; TakeOver may take it.
	Released
)

func (s Status) String() string {
	switch s {
	case Held:
		return "held"
	case Expired:
		return "expired"
	case Released:
		return "released"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Status reports l's standing by the Manager's clock: Expired only once
// the clock is more than Skew past l.Expires.
func (m *Manager) Status(l Lease) Status {
	switch {
	case l.Released():
		return Released
	case m.clock.Now().After(l.Expires.Add(m.skew)):
		return Expired
	}
	return Held
}

// Read returns the document at key: one GET. A missing key fails with
// storage.ErrNotExist, an object that is not a lease document with
// ErrCorrupt.
func (m *Manager) Read(ctx context.Context, key string) (Doc, error) {
	data, a, err := storage.ReadAll(ctx, m.b, key)
	if err != nil {
		return Doc{}, fmt.Errorf("lease: read %q: %w", key, err)
	}
	d, err := decode(data)
	if err != nil {
		return Doc{Key: key, ETag: a.ETag}, fmt.Errorf("lease: read %q: %w", key, err)
	}
	d.Key, d.ETag = key, a.ETag
	return d, nil
}

// Create writes a new document at key held by the Manager's owner with
// token 1 and the given state (nil means JSON null): one PUT with
// If-None-Match:*. Of concurrent Creates of one key exactly one succeeds;
// the others fail with ErrExists.
func (m *Manager) Create(ctx context.Context, key string, state json.RawMessage) (Doc, error) {
	st, err := checkState(state)
	if err != nil {
		return Doc{}, fmt.Errorf("lease: create %q: %w", key, err)
	}
	return m.write(ctx, "create", key, "", m.held(1), st, ErrExists)
}

// Renew extends the lease of d, which the Manager's owner holds, to TTL
// from now, keeping its token and state: one PUT with If-Match d.ETag. It
// fails with ErrHeld (no request) when d shows another owner, ErrLost when
// d is released or the object changed since d was read.
//
// Renew does not consult the clock: if nobody changed the object, the
// lease is still the caller's even past its expiry, and the put says so.
func (m *Manager) Renew(ctx context.Context, d Doc) (Doc, error) {
	if err := m.mine("renew", d); err != nil {
		return Doc{}, err
	}
	return m.write(ctx, "renew", d.Key, d.ETag, m.held(d.Lease.Token), d.State, ErrLost)
}

// Update replaces the state of d, which the Manager's owner holds, and
// extends the lease to TTL from now, keeping the token: one PUT with
// If-Match d.ETag. Errors as for Renew.
func (m *Manager) Update(ctx context.Context, d Doc, state json.RawMessage) (Doc, error) {
	if err := m.mine("update", d); err != nil {
		return Doc{}, err
	}
	st, err := checkState(state)
	if err != nil {
		return Doc{}, fmt.Errorf("lease: update %q: %w", d.Key, err)
	}
	return m.write(ctx, "update", d.Key, d.ETag, m.held(d.Lease.Token), st, ErrLost)
}

// Release writes the final state of d, which the Manager's owner holds,
// with the lease cleared (no owner, no expiry, the token kept): one PUT
// with If-Match d.ETag. Errors as for Renew.
func (m *Manager) Release(ctx context.Context, d Doc, state json.RawMessage) (Doc, error) {
	if err := m.mine("release", d); err != nil {
		return Doc{}, err
	}
	st, err := checkState(state)
	if err != nil {
		return Doc{}, fmt.Errorf("lease: release %q: %w", d.Key, err)
	}
	return m.write(ctx, "release", d.Key, d.ETag, Lease{Token: d.Lease.Token}, st, ErrLost)
}

// TakeOver makes the Manager's owner the holder of d, which must be
// Expired or Released by the Manager's clock (else ErrHeld, no request),
// with the token one more than d's and the state kept: one PUT with
// If-Match d.ETag. Of concurrent takeovers of one document exactly one
// succeeds; the others, and a takeover of a document that changed since it
// was read, fail with ErrLost.
func (m *Manager) TakeOver(ctx context.Context, d Doc) (Doc, error) {
	if d.ETag == "" {
		return Doc{}, noETag("take over", d)
	}
	if m.Status(d.Lease) == Held {
		return Doc{}, fmt.Errorf("lease: take over %q: %w: %q until %s (skew margin %v)",
			d.Key, ErrHeld, d.Lease.Owner, d.Lease.Expires.Format(timeFormat), m.skew)
	}
	return m.write(ctx, "take over", d.Key, d.ETag, m.held(d.Lease.Token+1), d.State, ErrLost)
}

// held is a lease of the Manager's owner expiring TTL from now.
func (m *Manager) held(token int64) Lease {
	return Lease{Owner: m.owner, Expires: m.clock.Now().Add(m.ttl).UTC().Truncate(time.Millisecond), Token: token}
}

// mine checks that d shows a lease of the Manager's owner.
func (m *Manager) mine(op string, d Doc) error {
	switch {
	case d.ETag == "":
		return noETag(op, d)
	case d.Lease.Released():
		return fmt.Errorf("lease: %s %q: %w: the lease is released", op, d.Key, ErrLost)
	case d.Lease.Owner != m.owner:
		return fmt.Errorf("lease: %s %q: %w: %q holds it, not %q", op, d.Key, ErrHeld, d.Lease.Owner, m.owner)
	}
	return nil
}

// noETag refuses a change without a precondition, which would be a blind
// create instead.
func noETag(op string, d Doc) error {
	return fmt.Errorf("lease: %s %q: %w: the document has no ETag (pass one returned by Read or a write)", op, d.Key, ErrInvalid)
}

// write puts the document as the one conditional request of every
// operation (create-only when ifMatch is ""), classifying its failure:
// raced is the sentinel for a failed precondition.
func (m *Manager) write(ctx context.Context, op, key, ifMatch string, l Lease, state json.RawMessage, raced error) (Doc, error) {
	if err := ctx.Err(); err != nil {
		// Nothing was sent, so the outcome is known.
		return Doc{}, fmt.Errorf("lease: %s %q: %w", op, key, err)
	}
	body := encode(l, state)
	opts := storage.PutOptions{ContentType: "application/json", Size: int64(len(body))}
	if ifMatch == "" {
		opts.IfNoneMatch = "*"
	} else {
		opts.IfMatch = ifMatch
	}
	a, err := m.b.Put(ctx, key, bytes.NewReader(body), opts)
	if err != nil {
		return Doc{}, fmt.Errorf("lease: %s %q: %w", op, key, classify(err, raced))
	}
	return Doc{Key: key, ETag: a.ETag, Lease: l, State: state}, nil
}

// classify tells a put that certainly did not land (a lost precondition
// or an error the store reports before writing) from one that may have.
func classify(err, raced error) error {
	switch {
	case errors.Is(err, storage.ErrPreconditionFailed),
		errors.Is(err, storage.ErrConflict), // a concurrent write won; ours did not land
		errors.Is(err, storage.ErrNotExist): // If-Match on a deleted object
		return fmt.Errorf("%w: %w", raced, err)
	case errors.Is(err, storage.ErrInvalidKey),
		errors.Is(err, storage.ErrInvalidArgument),
		errors.Is(err, storage.ErrAccessDenied),
		errors.Is(err, storage.ErrBucketNotFound):
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnknown, err)
}

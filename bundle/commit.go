package bundle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"fhirbucket/fhirstore"
	"fhirbucket/internal/layout"
	"fhirbucket/lease"
	"fhirbucket/storage"
)

// Store is what a transaction needs of the resource store;
// *fhirstore.Store satisfies it.
type Store interface {
	Head(ctx context.Context, tenant, typ, id string) (fhirstore.Head, error)
	Apply(ctx context.Context, tenant string, c fhirstore.Change) (*fhirstore.Resource, bool, error)
	TenantBucket(tenant string) (storage.Bucket, error)
	NoteTx(tenant, tx string, st fhirstore.TxState, at time.Time)
}

// Defaults of Config.
const (
	DefaultParallelism = 16
	DefaultLeaseTTL    = 30 * time.Second
	// DefaultCommitTimeout bounds a whole commit or abort once started;
	// it runs detached from the request, so the client cannot cut it.
	DefaultCommitTimeout = 5 * time.Minute
)

// Config configures a Transactor.
type Config struct {
	// Store is the resource store (required).
	Store Store
	// Owner names this process in journal leases; it must be unique per
	// process (required).
	Owner string
	// Parallelism bounds the writes in flight within one phase. Default
	// DefaultParallelism.
	Parallelism int
	// LeaseTTL is the lease of an open journal; the owner renews it at a
	// third of it. Default DefaultLeaseTTL.
	LeaseTTL time.Duration
	// CommitTimeout bounds a commit once started. Default
	// DefaultCommitTimeout.
	CommitTimeout time.Duration
	// Clock is the leases' clock. Default the system clock.
	Clock lease.Clock
	// Logger. Default slog.Default().
	Logger *slog.Logger
	// Now is the clock of journal timestamps. Default time.Now.
	Now func() time.Time
}

// Transactor commits transaction plans through journals: see the package
// comment for the protocol.
type Transactor struct {
	cfg Config
	wg  sync.WaitGroup // commits in flight (Close waits for them)
	mu  sync.Mutex
	off bool // closed: no new commits
	// finished are the journals known finished, per tenant: recovery
	// passes need not read them again (recover.go).
	finished map[string]map[string]struct{}
}

// New checks cfg and returns a Transactor.
func New(cfg Config) (*Transactor, error) {
	if cfg.Store == nil {
		return nil, errors.New("bundle: Config.Store is required")
	}
	if cfg.Owner == "" {
		return nil, errors.New("bundle: Config.Owner is required")
	}
	if cfg.Parallelism <= 0 {
		cfg.Parallelism = DefaultParallelism
	}
	if cfg.LeaseTTL <= 0 {
		cfg.LeaseTTL = DefaultLeaseTTL
	}
	if cfg.CommitTimeout <= 0 {
		cfg.CommitTimeout = DefaultCommitTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Transactor{cfg: cfg}, nil
}

// Journal is the state part of a transaction journal,
// transactions/{tx_id}.json (the lease part is package lease's). It is
// written before the first write, with every change the transaction will
// make, and finished once: committed or aborted.
type Journal struct {
	TxID     string         `json:"tx_id"`
	Status   string         `json:"status"` // open, committed, aborted
	Created  string         `json:"created"`
	Finished string         `json:"finished,omitempty"`
	Reason   string         `json:"reason,omitempty"` // why it aborted
	Entries  []JournalEntry `json:"entries"`
}

// JournalEntry is one change of a transaction: the version it writes and
// the version it replaces.
type JournalEntry struct {
	Index   int    `json:"index"` // Bundle.entry index
	Method  string `json:"method"`
	Type    string `json:"type"`
	ID      string `json:"id"`
	Base    int    `json:"base"`    // the version replaced (0: none)
	Version int    `json:"version"` // the version written (planned while open; as written once committed)
}

// Written is the result of one write entry of a committed transaction.
type Written struct {
	Entry *Entry
	// Resource is the version written; nil for a DELETE that found
	// nothing to delete.
	Resource *fhirstore.Resource
	Created  bool
}

// ErrClosed: the Transactor is shutting down and takes no new commits.
var ErrClosed = errors.New("bundle: shutting down")

// change is one planned write.
type change struct {
	e    *Entry
	c    fhirstore.Change
	noop bool // a DELETE of nothing: no write
	res  *fhirstore.Resource
	crt  bool
}

// Commit applies the write entries of a transaction plan (DELETE, POST,
// PUT; the caller answers the GET and HEAD entries after it) all or
// nothing, and returns one Written per write entry in request order.
//
// Before the first write it reads the current version of every resource a
// PUT or DELETE touches (a stale ifMatch fails here) and puts the journal
// with If-None-Match. The writes carry the transaction id, so no reader
// sees them until the journal flips to committed. Any failure flips it to
// aborted instead, which hides every version the transaction wrote: the
// store reads as before. Failures name the entry: an *EntryError wrapping
// the store's error.
//
// Once the journal exists the commit runs detached from ctx (a client
// that goes away cannot stop it half way), bounded by
// Config.CommitTimeout; Close waits for it.
func (t *Transactor) Commit(ctx context.Context, tenant string, p *Plan) ([]Written, error) {
	if !p.Transaction {
		return nil, fmt.Errorf("%w: Commit needs a transaction plan", ErrInvalid)
	}
	t.mu.Lock()
	if t.off {
		t.mu.Unlock()
		return nil, ErrClosed
	}
	t.wg.Add(1)
	t.mu.Unlock()
	defer t.wg.Done()

	phases := p.Phases()
	var changes []*change
	for _, ph := range []Phase{PhaseDelete, PhaseCreate, PhaseUpdate} {
		for _, e := range phases[ph] {
			ch, err := newChange(e)
			if err != nil {
				return nil, err
			}
			changes = append(changes, ch)
		}
	}
	if err := t.readHeads(ctx, tenant, changes); err != nil {
		return nil, err
	}
	if len(changes) == 0 {
		return nil, nil
	}

	b, err := t.cfg.Store.TenantBucket(tenant)
	if err != nil {
		return nil, err
	}
	m, err := lease.New(lease.Config{Bucket: b, Owner: t.cfg.Owner, TTL: t.cfg.LeaseTTL, Clock: t.cfg.Clock})
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	j := &Journal{TxID: newID(), Status: string(fhirstore.TxOpen), Created: t.stamp()}
	for _, ch := range changes {
		if ch.noop {
			continue
		}
		ch.c.Tx = j.TxID
		j.Entries = append(j.Entries, JournalEntry{Index: ch.e.Index, Method: ch.e.Method, Type: ch.c.Type, ID: ch.c.ID,
			Base: ch.c.Base, Version: ch.c.Base + 1})
	}
	if len(j.Entries) == 0 {
		return t.results(changes), nil // only DELETEs of nothing
	}
	state, _ := json.Marshal(j)
	doc, err := m.Create(ctx, layout.TransactionKey(j.TxID), state)
	if err != nil {
		return nil, fmt.Errorf("bundle: writing the journal of transaction %s: %w", j.TxID, err)
	}

	// From here on the transaction finishes whatever the client does.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), t.cfg.CommitTimeout)
	defer cancel()
	h, err := m.Keep(wctx, doc)
	if err != nil {
		return nil, fmt.Errorf("bundle: holding the journal of transaction %s: %w", j.TxID, err)
	}
	defer func() { _ = h.Stop() }()
	log := t.cfg.Logger.With("tenant", tenant, "tx", j.TxID)

	if err := t.applyAll(h.Context(), tenant, phasesOf(changes)); err != nil {
		t.abort(wctx, m, h, tenant, j, err, log)
		return nil, err
	}
	// The commit record names the versions written: a version number
	// held by an aborted transaction's claim is built over, so a version
	// can be above the planned one.
	written := map[int]int{}
	for _, ch := range changes {
		if ch.res != nil {
			written[ch.e.Index] = ch.res.Version
		}
	}
	for i := range j.Entries {
		if v, ok := written[j.Entries[i].Index]; ok {
			j.Entries[i].Version = v
		}
	}
	j.Status, j.Finished = string(fhirstore.TxCommitted), t.stamp()
	state, _ = json.Marshal(j)
	if _, err := h.Release(wctx, state); err != nil {
		// The commit record may or may not have landed: the journal says.
		got, rerr := m.Read(wctx, layout.TransactionKey(j.TxID))
		switch {
		case rerr == nil && isStatus(got.State, fhirstore.TxCommitted):
			// It landed; only its answer was lost.
		case rerr == nil && isStatus(got.State, fhirstore.TxOpen):
			log.Warn("bundle: commit not recorded", "error", err)
			t.abort(wctx, m, h, tenant, j, err, log)
			return nil, fmt.Errorf("bundle: committing transaction %s: %w", j.TxID, err)
		default:
			// Aborted by a replica that took the lease over, or unknown:
			// nothing more to do here, and nothing to remember (recovery
			// and readers go by the journal).
			log.Warn("bundle: commit outcome unknown", "error", err, "read_back", rerr)
			return nil, fmt.Errorf("bundle: committing transaction %s: the outcome is unknown: %w", j.TxID, errors.Join(err, rerr))
		}
	}
	t.cfg.Store.NoteTx(tenant, j.TxID, fhirstore.TxCommitted, t.finishedAt(j))
	t.noteFinished(tenant, j.TxID)
	return t.results(changes), nil
}

// newChange turns a write entry into a change (Base is set by readHeads).
func newChange(e *Entry) (*change, error) {
	ch := &change{e: e, c: fhirstore.Change{Type: e.Type, ID: e.ID, Content: e.Resource, Validated: true}}
	if e.NoOp {
		// A resolved conditional entry that writes nothing.
		ch.noop, ch.res = true, e.Existing
		return ch, nil
	}
	if e.Interaction == ConditionalUpdate || e.Interaction == ConditionalDelete || e.IfNoneExist != "" || len(e.CondRefs) > 0 {
		return nil, &EntryError{Index: e.Index, FullURL: e.FullURL, Err: fmt.Errorf("%w: conditional %s: resolve the plan's conditional entries before Commit", ErrNotSupported, e.Method)}
	}
	switch e.Method {
	case "POST":
		ch.c.Method = fhirstore.MethodPost
	case "PUT":
		ch.c.Method = fhirstore.MethodPut
	case "DELETE":
		ch.c.Method = fhirstore.MethodDelete
	default:
		return nil, &EntryError{Index: e.Index, FullURL: e.FullURL, Err: fmt.Errorf("%w: %s is not a write", ErrInvalid, e.Method)}
	}
	if e.IfMatch != "" {
		m, err := fhirstore.ParseIfMatch(e.IfMatch)
		if err != nil {
			return nil, &EntryError{Index: e.Index, FullURL: e.FullURL, Err: err}
		}
		ch.c.IfMatch = m
	}
	return ch, nil
}

// readHeads reads the current version of every PUT and DELETE target in
// parallel and checks their ifMatch; POSTs have fresh ids (base 0).
func (t *Transactor) readHeads(ctx context.Context, tenant string, changes []*change) error {
	return t.each(ctx, changes, func(ctx context.Context, ch *change) error {
		if ch.c.Method == fhirstore.MethodPost || ch.noop {
			return nil
		}
		h, err := t.cfg.Store.Head(ctx, tenant, ch.c.Type, ch.c.ID)
		if err != nil {
			return err
		}
		if ch.c.IfMatch != nil && !ch.c.IfMatch.Matches(h.Visible) {
			return fmt.Errorf("%w: If-Match %s: %s/%s is at version %s", fhirstore.ErrPreconditionFailed,
				ch.c.IfMatch, ch.c.Type, ch.c.ID, versionOf(h.Visible))
		}
		ch.c.Base, ch.c.Head = h.Base, &h
		if ch.c.Method == fhirstore.MethodDelete && (h.Visible == nil || h.Visible.Deleted()) {
			ch.noop = true
		}
		return nil
	})
}

func versionOf(r *fhirstore.Resource) string {
	if r == nil {
		return "none"
	}
	return r.VersionID()
}

// phasesOf groups changes by phase, in order.
func phasesOf(changes []*change) [][]*change {
	var out [][]*change
	last := Phase(-1)
	for _, ch := range changes {
		if ch.noop {
			continue
		}
		if ph := ch.e.Phase(); ph != last || len(out) == 0 {
			out = append(out, nil)
			last = ph
		}
		out[len(out)-1] = append(out[len(out)-1], ch)
	}
	return out
}

// applyAll applies the phases one after the other, the changes of a phase
// concurrently. The first failure (lowest entry index) is returned.
func (t *Transactor) applyAll(ctx context.Context, tenant string, phases [][]*change) error {
	for _, ph := range phases {
		err := t.each(ctx, ph, func(ctx context.Context, ch *change) error {
			res, created, err := t.cfg.Store.Apply(ctx, tenant, ch.c)
			ch.res, ch.crt = res, created
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// each runs f over changes with bounded parallelism; the error of the
// lowest failing entry comes back as an *EntryError. The first failure
// cancels the others.
func (t *Transactor) each(ctx context.Context, changes []*change, f func(context.Context, *change) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(changes))
	sem := make(chan struct{}, t.cfg.Parallelism)
	var wg sync.WaitGroup
	for i, ch := range changes {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(ctx, ch); err != nil {
				errs[i] = err
				cancel()
			}
		}()
	}
	wg.Wait()
	// Report the real failure, not the cancellations it caused.
	var first error
	for i, err := range errs {
		if err == nil {
			continue
		}
		ee := &EntryError{Index: changes[i].e.Index, FullURL: changes[i].e.FullURL, Err: err}
		if !errors.Is(err, context.Canceled) {
			return ee
		}
		if first == nil {
			first = ee
		}
	}
	if first == nil && ctx.Err() != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
			return cause
		}
	}
	return first
}

// abort flips the journal to aborted, which hides every version the
// transaction wrote. When the flip fails the journal stays open and its
// lease runs out: any replica's Recover then aborts it. The outcome this
// process remembers is the one the journal says afterwards: a holder that
// retried after a lost answer cannot tell which of its writes landed.
func (t *Transactor) abort(ctx context.Context, m *lease.Manager, h *lease.Holder, tenant string, j *Journal, cause error, log *slog.Logger) {
	j.Status, j.Finished, j.Reason = string(fhirstore.TxAborted), t.stamp(), cause.Error()
	state, _ := json.Marshal(j)
	if _, err := h.Release(ctx, state); err != nil {
		log.Warn("bundle: abort not recorded; the journal is finished by recovery once its lease expires", "error", err)
		return
	}
	got, err := m.Read(ctx, layout.TransactionKey(j.TxID))
	if err != nil {
		log.Warn("bundle: aborted, but the journal could not be read back", "error", err)
		return
	}
	var final Journal
	if json.Unmarshal(got.State, &final) == nil && final.Status != string(fhirstore.TxOpen) {
		t.cfg.Store.NoteTx(tenant, j.TxID, fhirstore.TxState(final.Status), t.finishedAt(&final))
		t.noteFinished(tenant, j.TxID)
	}
	log.Info("bundle: transaction aborted", "cause", cause, "journal", final.Status)
}

func (t *Transactor) results(changes []*change) []Written {
	out := make([]Written, 0, len(changes))
	for _, ch := range changes {
		out = append(out, Written{Entry: ch.e, Resource: ch.res, Created: ch.crt})
	}
	slices.SortFunc(out, func(a, b Written) int { return a.Entry.Index - b.Entry.Index }) // request order
	return out
}

// finishedAt is when j finished (zero when it does not say).
func (t *Transactor) finishedAt(j *Journal) time.Time {
	at, _ := time.Parse(time.RFC3339Nano, j.Finished)
	return at
}

func (t *Transactor) stamp() string { return t.cfg.Now().UTC().Format("2006-01-02T15:04:05.000Z") }

func isStatus(state json.RawMessage, st fhirstore.TxState) bool {
	var j Journal
	return json.Unmarshal(state, &j) == nil && j.Status == string(st)
}

// Close stops taking commits and waits for those in flight, or for ctx.
func (t *Transactor) Close(ctx context.Context) error {
	t.mu.Lock()
	t.off = true
	t.mu.Unlock()
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

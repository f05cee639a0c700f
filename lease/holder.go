package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"fhirbucket/storage"
)

// errStopped is the context cause of a Holder stopped by its owner.
var errStopped = errors.New("lease: holder stopped")

// Holder keeps a lease renewed in the background while its owner works,
// and is the way the owner changes the document meanwhile (Update,
// Release), so that renewals and updates share one current ETag.
//
// The owner does its work under Context(), which is cancelled as soon as
// the lease is lost (ErrLost), cannot be confirmed in time (ErrExpired),
// or the Holder is stopped or released; Err tells which.
type Holder struct {
	m      *Manager
	key    string
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{}

	mu      sync.Mutex // serialises the holder's writes and guards what follows
	doc     Doc
	lastTry time.Time // the last renewal attempt
	err     error     // ErrLost or ErrExpired once the loop gave up
}

// Keep starts renewing d, which the Manager's owner holds, every TTL/3
// until ctx is done, the Holder is stopped or released, or the lease is
// lost. It fails with ErrHeld or ErrLost when d is not held by the
// Manager's owner. The first renewal is due TTL/3 after d was last
// written.
//
// A renewal that finds the object changed reads it (one GET): if it still
// shows the owner and token, the change was a write of this holder whose
// response was lost, and the holder carries on from it. A renewal whose
// outcome is unknown is retried at the next tick. When the Manager's
// clock reaches the expiry less Skew without a confirmed renewal, the
// holder gives up with ErrExpired: the owner must stop before a taker
// may begin.
func (m *Manager) Keep(ctx context.Context, d Doc) (*Holder, error) {
	if err := m.mine("keep", d); err != nil {
		return nil, err
	}
	hctx, cancel := context.WithCancelCause(ctx)
	h := &Holder{m: m, key: d.Key, ctx: hctx, cancel: cancel, done: make(chan struct{}), doc: d}
	go h.run()
	return h, nil
}

// Context is cancelled when the holder stops renewing for any reason; its
// cause (context.Cause) is the Holder's error, or the parent's cause.
func (h *Holder) Context() context.Context { return h.ctx }

// Done is closed when the renewal loop has ended.
func (h *Holder) Done() <-chan struct{} { return h.done }

// Err is ErrLost or ErrExpired (wrapped) once the lease was lost or could
// not be renewed in time, else nil (also after Stop, Release or the end of
// the parent context).
func (h *Holder) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// Doc is the document as last written or confirmed by the holder.
func (h *Holder) Doc() Doc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.doc
}

// Stop ends the renewals without releasing the lease (it then expires
// after at most TTL) and waits for the loop to end. It returns Err.
func (h *Holder) Stop() error {
	h.cancel(errStopped)
	<-h.done
	return h.Err()
}

// Update writes state and extends the lease, as Manager.Update, with the
// holder's current ETag: one PUT (plus a GET and a PUT when the object
// changed, to recognise an earlier write of this holder whose response
// was lost). It counts as a renewal. After ErrUnknown, Refresh tells
// whether the write landed. Update works after the loop ended too: the
// conditional put decides.
func (h *Holder) Update(ctx context.Context, state json.RawMessage) (Doc, error) {
	st, err := checkState(state)
	if err != nil {
		return Doc{}, fmt.Errorf("lease: update %q: %w", h.key, err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.writeLocked(ctx, func(d Doc) (Doc, error) { return h.m.Update(ctx, d, st) })
}

// Release writes the final state with the lease cleared, as
// Manager.Release, then stops the renewals and cancels Context. It may be
// called with Context() itself. On ErrUnknown the lease expires by itself
// if the release did not land; Refresh tells which.
func (h *Holder) Release(ctx context.Context, state json.RawMessage) (Doc, error) {
	st, err := checkState(state)
	if err != nil {
		return Doc{}, fmt.Errorf("lease: release %q: %w", h.key, err)
	}
	h.mu.Lock()
	d, err := h.writeLocked(ctx, func(d Doc) (Doc, error) { return h.m.Release(ctx, d, st) })
	h.mu.Unlock()
	h.Stop()
	return d, err
}

// Refresh reads the object (one GET). If it still shows the holder's
// owner and token, the holder adopts it (its ETag and state) and returns
// it; otherwise it fails with ErrLost, returns what the store holds (a
// released lease with the holder's token is its own Release that landed
// unseen), and the renewals stop. A failed read changes nothing.
func (h *Holder) Refresh(ctx context.Context) (Doc, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, err := h.confirmLocked(ctx)
	if errors.Is(err, ErrLost) {
		h.failLocked(err)
	}
	return d, err
}

// writeLocked runs one holder write with the current document. When the
// object changed, it reads it back: still ours means an earlier write of
// the holder landed unseen, so it adopts that and writes once more.
func (h *Holder) writeLocked(ctx context.Context, write func(Doc) (Doc, error)) (Doc, error) {
	if h.doc.Lease.Released() {
		return Doc{}, fmt.Errorf("lease: %q: %w: the holder released it", h.doc.Key, ErrLost)
	}
	d, err := write(h.doc)
	if errors.Is(err, ErrLost) {
		if _, cerr := h.confirmLocked(ctx); cerr != nil {
			if errors.Is(cerr, ErrLost) {
				h.failLocked(err)
				return Doc{}, err
			}
			// Nothing was written, but whose the lease is now is unknown.
			return Doc{}, fmt.Errorf("lease: %q: %w: the object changed and reading it failed: %w", h.key, ErrUnknown, cerr)
		}
		d, err = write(h.doc)
		if errors.Is(err, ErrLost) {
			h.failLocked(err)
		}
	}
	if err != nil {
		return Doc{}, err
	}
	h.doc = d
	return d, nil
}

// confirmLocked reads the object and adopts it if it shows the holder's
// owner and token, else fails with ErrLost.
func (h *Holder) confirmLocked(ctx context.Context) (Doc, error) {
	d, err := h.m.Read(ctx, h.doc.Key)
	switch {
	case errors.Is(err, ErrCorrupt), errors.Is(err, storage.ErrNotExist):
		return Doc{}, fmt.Errorf("%w: %w", ErrLost, err)
	case err != nil:
		return Doc{}, err
	case d.Lease.Owner != h.m.owner || d.Lease.Token != h.doc.Lease.Token:
		return d, fmt.Errorf("lease: %q: %w: now %q with token %d, was %q with token %d", h.doc.Key, ErrLost,
			d.Lease.Owner, d.Lease.Token, h.m.owner, h.doc.Lease.Token)
	}
	h.doc = d
	return d, nil
}

// failLocked records the loss and cancels Context.
func (h *Holder) failLocked(err error) {
	if h.err == nil {
		h.err = err
		h.cancel(err)
	}
}

// run is the renewal loop.
func (h *Holder) run() {
	defer close(h.done)
	interval := h.m.ttl / 3
	var lastErr error
	for {
		h.mu.Lock()
		d, lastTry := h.doc, h.lastTry
		h.mu.Unlock()
		if d.Lease.Released() || h.ctx.Err() != nil {
			return
		}
		deadline := d.Lease.Expires.Add(-h.m.skew)
		// Due TTL/3 after the last write (which set Expires to write+TTL)
		// or after the last failed attempt, whichever is later.
		due := d.Lease.Expires.Add(interval - h.m.ttl)
		if t := lastTry.Add(interval); t.After(due) {
			due = t
		}
		now := h.m.clock.Now()
		if !now.Before(deadline) {
			err := fmt.Errorf("lease: keep %q: %w at %s", d.Key, ErrExpired, deadline.Format(timeFormat))
			if lastErr != nil {
				err = fmt.Errorf("%w: last renewal: %w", err, lastErr)
			}
			h.mu.Lock()
			h.failLocked(err)
			h.mu.Unlock()
			return
		}
		if now.Before(due) {
			select {
			case <-h.ctx.Done():
				return
			case <-h.m.clock.After(min(due.Sub(now), deadline.Sub(now))):
			}
			continue
		}
		h.mu.Lock()
		h.lastTry = now
		if h.doc.ETag != d.ETag { // an Update renewed meanwhile
			h.mu.Unlock()
			continue
		}
		_, err := h.writeLocked(h.ctx, func(d Doc) (Doc, error) { return h.m.Renew(h.ctx, d) })
		lost := h.err != nil
		h.mu.Unlock()
		if lost || h.ctx.Err() != nil {
			return
		}
		lastErr = err
	}
}

package fhirstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"fhirbucket/internal/layout"
	"fhirbucket/storage"
)

// Transaction visibility.
//
// A version written inside a transaction carries the transaction's id
// (Resource.Tx, the envelope's "transaction_id"). Its journal,
// transactions/{tx_id}.json below the tenant base, says whether the
// transaction is open, committed or aborted. Until the journal says
// committed, no reader sees the version: Read, VRead, List, Count and
// History answer as if the newest visible version (the first one below it
// that carries no transaction id or a committed one) were current. An
// aborted transaction's versions stay invisible for good; nothing needs
// to be undone on abort, so an abort is one write of the journal.
//
// A writer that finds an open transaction's version as current.json waits
// for the transaction to finish (Config.TxWait), and then fails with
// ErrTxInProgress rather than build on content that may never commit.
//
// Finished outcomes never change, so this process caches them: a read of
// a version of a finished transaction costs one extra GET per transaction
// per process, and versions written outside transactions cost nothing.

// TxState is the state of a transaction as its journal records it.
type TxState string

// The journal states. A missing journal counts as aborted: a version can
// carry a transaction id only after its journal was written, so a
// transaction whose journal is gone never committed as far as anyone can
// prove.
const (
	TxOpen      TxState = "open"
	TxCommitted TxState = "committed"
	TxAborted   TxState = "aborted"
)

// ErrTxInProgress: the resource's current version belongs to a
// transaction that has not finished (HTTP 409, retry shortly).
var ErrTxInProgress = errors.New("fhirstore: transaction in progress")

// DefaultTxWait is how long a writer waits for an open transaction.
const DefaultTxWait = 2 * time.Second

// txCacheMax bounds the cache of finished outcomes; past it the cache is
// emptied (the outcomes can always be read again).
const txCacheMax = 100_000

type txCache struct {
	mu sync.RWMutex
	m  map[string]txOutcome // tenant "\x00" tx -> committed or aborted
}

// txOutcome is a finished transaction: its state and when it finished
// (zero when unknown).
type txOutcome struct {
	st TxState
	at time.Time
}

func (c *txCache) get(key string) (txOutcome, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	o, ok := c.m[key]
	return o, ok
}

func (c *txCache) put(key string, o txOutcome) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= txCacheMax {
		c.m = map[string]txOutcome{}
	}
	c.m[key] = o
}

// journalState is the part of a journal fhirstore reads: its status. The
// journal document is {"lease":{…},"state":{"status":…,…}} (see
// docs/object-layout.md).
type journalState struct {
	State struct {
		Status   TxState `json:"status"`
		Finished string  `json:"finished"`
	} `json:"state"`
}

// NoteTx records the final outcome of a transaction this process
// finished at instant at, so its readers need not read the journal.
func (s *Store) NoteTx(tenant, tx string, st TxState, at time.Time) {
	if st == TxCommitted || st == TxAborted {
		s.txs.put(tenant+"\x00"+tx, txOutcome{st: st, at: at})
	}
}

// TxStatus returns the state of transaction tx of tenant from its journal
// (finished outcomes from the cache). Cost: at most 1 GET.
func (s *Store) TxStatus(ctx context.Context, tenant, tx string) (TxState, error) {
	sc, err := s.scope(tenant)
	if err != nil {
		return "", err
	}
	return s.txState(ctx, sc, tx)
}

func (s *Store) txState(ctx context.Context, sc scope, tx string) (TxState, error) {
	o, err := s.txOutcome(ctx, sc, tx)
	return o.st, err
}

// txOutcome reads the state of tx (and when it finished) from its journal,
// or from the cache of finished outcomes.
func (s *Store) txOutcome(ctx context.Context, sc scope, tx string) (txOutcome, error) {
	key := sc.tenant + "\x00" + tx
	if o, ok := s.txs.get(key); ok {
		return o, nil
	}
	data, _, err := storage.ReadAll(ctx, sc.b, layout.TransactionKey(tx))
	if errors.Is(err, storage.ErrNotExist) {
		o := txOutcome{st: TxAborted}
		s.txs.put(key, o)
		return o, nil
	}
	if err != nil {
		return txOutcome{}, fmt.Errorf("fhirstore: reading the journal of transaction %s: %w", tx, err)
	}
	var j journalState
	if err := json.Unmarshal(data, &j); err != nil {
		return txOutcome{}, fmt.Errorf("fhirstore: journal of transaction %s: %w", tx, err)
	}
	o := txOutcome{st: j.State.Status}
	switch o.st {
	case TxCommitted, TxAborted:
		if t, err := time.Parse(time.RFC3339Nano, j.State.Finished); err == nil {
			o.at = t
		}
		s.txs.put(key, o)
		return o, nil
	case TxOpen:
		return o, nil
	}
	return txOutcome{}, fmt.Errorf("fhirstore: journal of transaction %s has status %q", tx, j.State.Status)
}

// committedBy reports whether r was visible at instant at: written
// outside a transaction, or by one that committed at or before at (a
// journal without its finishing time counts as committed when it says
// so).
func (s *Store) committedBy(ctx context.Context, sc scope, r *Resource, at time.Time) (bool, error) {
	if r.Tx == "" {
		return true, nil
	}
	o, err := s.txOutcome(ctx, sc, r.Tx)
	if err != nil || o.st != TxCommitted {
		return false, err
	}
	return o.at.IsZero() || !o.at.After(at), nil
}

// committed reports whether r is visible: written outside a transaction,
// or by a committed one.
func (s *Store) committed(ctx context.Context, sc scope, r *Resource) (bool, error) {
	if r.Tx == "" {
		return true, nil
	}
	st, err := s.txState(ctx, sc, r.Tx)
	return st == TxCommitted, err
}

// visible returns the newest visible version at or below r (nil: none).
// Each hidden version costs the GET of the version below it.
func (s *Store) visible(ctx context.Context, sc scope, r *Resource) (*Resource, error) {
	for r != nil {
		ok, err := s.committed(ctx, sc, r)
		if err != nil || ok {
			return r, err
		}
		if r.Version == 1 {
			return nil, nil
		}
		prev, err := s.readVersion(ctx, sc, r.Type, r.ID, r.Version-1)
		if errors.Is(err, ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		r = prev
	}
	return nil, nil
}

// filterVisible drops the versions of rs that are not visible (nil
// entries are dropped too).
func (s *Store) filterVisible(ctx context.Context, sc scope, rs []*Resource) ([]*Resource, error) {
	out := rs[:0]
	for _, r := range rs {
		if r == nil {
			continue
		}
		ok, err := s.committed(ctx, sc, r)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, r)
		}
	}
	return out, nil
}

// settle waits while cur holds a version of an open transaction (polling
// its journal) and returns the visible version at or below it. It fails
// with ErrTxInProgress when the transaction is still open after
// Config.TxWait.
func (s *Store) settle(ctx context.Context, sc scope, cur *current) (*Resource, error) {
	if cur.res == nil || cur.res.Tx == "" {
		return cur.res, nil
	}
	deadline := time.Now().Add(s.txWait)
	delay := 10 * time.Millisecond
	for {
		st, err := s.txState(ctx, sc, cur.res.Tx)
		if err != nil {
			return nil, err
		}
		if st != TxOpen {
			return s.visible(ctx, sc, cur.res)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("%w: %s/%s version %d belongs to transaction %s, which has not finished",
				ErrTxInProgress, cur.res.Type, cur.res.ID, cur.res.Version, cur.res.Tx)
		}
		t := time.NewTimer(min(delay, left))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		delay = min(2*delay, 200*time.Millisecond)
	}
}

// Head is what a planner knows of a resource before it writes it: the
// version its change must name as Change.Base, and the version readers
// see (nil: none, or a tombstone as it is).
type Head struct {
	Base    int
	Visible *Resource

	cur *current // what was read, so Apply with this Head need not read it again
}

// Head reads the current version of typ/id for a planner, waiting for an
// open transaction as a writer does (ErrTxInProgress when it does not
// finish in time). Cost: 1 GET, plus 1 GET per hidden version.
func (s *Store) Head(ctx context.Context, tenant, typ, id string) (Head, error) {
	sc, err := s.checkTarget(tenant, typ, id, true)
	if err != nil {
		return Head{}, err
	}
	cur, err := s.readCurrent(ctx, sc, typ, id)
	if err != nil {
		return Head{}, err
	}
	vis, err := s.settle(ctx, sc, cur)
	if err != nil {
		return Head{}, err
	}
	return Head{Base: cur.version(), Visible: vis, cur: cur}, nil
}

package bundle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"fhirbucket/fhirstore"
	"fhirbucket/internal/layout"
	"fhirbucket/lease"
)

// RecoverReport counts what Recover found.
type RecoverReport struct {
	Journals int // journals read
	Open     int // open with a live lease (left to their owner)
	Aborted  int // open with an expired lease: taken over and aborted
	Failed   int // could not be finished this time (Recover runs again)
}

// Recover finishes the transactions of tenant that a process left open:
// every journal whose lease has expired is taken over (a conditional put
// with the next fencing token, so the old owner can no longer commit) and
// aborted, which hides every version the transaction wrote. It never
// commits: a transaction whose owner died before its commit record was
// never acknowledged, so aborting it loses nothing a client was told.
// Journals of finished transactions are kept (the audit trail) and
// skipped. Cost: 1 LIST per 1,000 journals + 1 GET per journal not yet
// known to this Transactor as finished (so a recovery pass after the first
// reads only the journals written since), and 2 PUTs per journal finished.
func (t *Transactor) Recover(ctx context.Context, tenant string) (RecoverReport, error) {
	var rep RecoverReport
	b, err := t.cfg.Store.TenantBucket(tenant)
	if err != nil {
		return rep, err
	}
	m, err := lease.New(lease.Config{Bucket: b, Owner: t.cfg.Owner, TTL: t.cfg.LeaseTTL, Clock: t.cfg.Clock})
	if err != nil {
		return rep, fmt.Errorf("bundle: %w", err)
	}
	for e, err := range m.ScanSkipping(ctx, layout.TransactionsPrefix, func(key string) bool {
		tx, ok := layout.ParseTransactionKey(key)
		return ok && t.isFinished(tenant, tx)
	}) {
		if errors.Is(err, lease.ErrCorrupt) {
			t.cfg.Logger.Warn("bundle: unreadable transaction journal", "tenant", tenant, "error", err)
			rep.Failed++
			continue
		}
		if err != nil {
			return rep, fmt.Errorf("bundle: scanning transaction journals: %w", err)
		}
		rep.Journals++
		var j Journal
		if err := json.Unmarshal(e.Doc.State, &j); err != nil {
			rep.Failed++
			continue
		}
		if j.Status != string(fhirstore.TxOpen) {
			t.cfg.Store.NoteTx(tenant, j.TxID, fhirstore.TxState(j.Status), t.finishedAt(&j))
			t.noteFinished(tenant, j.TxID)
			continue
		}
		if e.Status != lease.Expired {
			rep.Open++
			continue
		}
		if err := t.finishAbandoned(ctx, m, tenant, e.Doc, &j); err != nil {
			t.cfg.Logger.Warn("bundle: could not finish an abandoned transaction", "tenant", tenant, "tx", j.TxID, "error", err)
			rep.Failed++
			continue
		}
		rep.Aborted++
	}
	return rep, nil
}

// finishAbandoned takes over an expired journal and aborts it.
func (t *Transactor) finishAbandoned(ctx context.Context, m *lease.Manager, tenant string, d lease.Doc, j *Journal) error {
	d, err := m.TakeOver(ctx, d)
	if err != nil {
		return err
	}
	j.Status, j.Finished = string(fhirstore.TxAborted), t.stamp()
	j.Reason = "abandoned: its owner stopped renewing the lease; aborted by " + t.cfg.Owner
	state, _ := json.Marshal(j)
	if _, err := m.Release(ctx, d, state); err != nil {
		return err
	}
	t.cfg.Store.NoteTx(tenant, j.TxID, fhirstore.TxAborted, t.finishedAt(j))
	t.noteFinished(tenant, j.TxID)
	t.cfg.Logger.Info("bundle: abandoned transaction aborted", "tenant", tenant, "tx", j.TxID, "entries", len(j.Entries))
	return nil
}

// maxFinished bounds the finished journals a Transactor remembers per
// tenant; past it the set starts again (the next pass reads them again).
const maxFinished = 1_000_000

func (t *Transactor) isFinished(tenant, tx string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.finished[tenant][tx]
	return ok
}

func (t *Transactor) noteFinished(tenant, tx string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.finished == nil {
		t.finished = map[string]map[string]struct{}{}
	}
	set := t.finished[tenant]
	if set == nil || len(set) >= maxFinished {
		set = map[string]struct{}{}
		t.finished[tenant] = set
	}
	set[tx] = struct{}{}
}

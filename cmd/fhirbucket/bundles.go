package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"time"

	"fhirbucket/bundle"
	"fhirbucket/fhirstore"
	"fhirbucket/server"
)

// processOwner names this process in leases: host, pid and 64 random
// bits, so that two processes never share a name.
func processOwner() string {
	host, _ := os.Hostname()
	var r [8]byte
	_, _ = rand.Read(r[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(r[:]))
}

// bundleSetup builds the transaction journal machinery of serve from its
// settings.
func bundleSetup(v *values, be *backend, log *slog.Logger) (*bundle.Transactor, *server.BundleConfig, time.Duration, error) {
	maxEntries, err := v.positiveInt("max-bundle-entries")
	if err != nil {
		return nil, nil, 0, err
	}
	par, err := v.positiveInt("bundle-parallelism")
	if err != nil {
		return nil, nil, 0, err
	}
	ttl, err := v.duration("tx-lease-ttl")
	if err != nil {
		return nil, nil, 0, err
	}
	if ttl < 3*time.Second {
		return nil, nil, 0, fmt.Errorf("%s must be at least 3s, got %s", v.label("tx-lease-ttl"), ttl)
	}
	every, err := v.duration("tx-recovery-interval")
	if err != nil {
		return nil, nil, 0, err
	}
	tr, err := bundle.New(bundle.Config{Store: be.store, Owner: processOwner(), Parallelism: int(par), LeaseTTL: ttl, Logger: log})
	if err != nil {
		return nil, nil, 0, err
	}
	return tr, &server.BundleConfig{Transactions: tr, Validator: be.validator, MaxEntries: int(maxEntries), Parallelism: int(par)}, every, nil
}

// recoverTransactions finishes the transactions of every tenant that a
// stopped process left open (see bundle.Transactor.Recover).
func recoverTransactions(ctx context.Context, st *fhirstore.Store, tr *bundle.Transactor, log *slog.Logger) (bundle.RecoverReport, error) {
	var total bundle.RecoverReport
	tenants, err := st.Tenants(ctx)
	if err != nil {
		return total, err
	}
	for _, t := range tenants {
		rep, err := tr.Recover(ctx, t)
		total.Journals += rep.Journals
		total.Open += rep.Open
		total.Aborted += rep.Aborted
		total.Failed += rep.Failed
		if err != nil {
			return total, fmt.Errorf("tenant %s: %w", t, err)
		}
	}
	if total.Aborted > 0 || total.Failed > 0 {
		log.Info("transaction recovery", "journals", total.Journals, "open", total.Open, "aborted", total.Aborted, "failed", total.Failed)
	}
	return total, nil
}

// runRecovery runs recoverTransactions at start and then every interval
// until ctx ends.
func runRecovery(ctx context.Context, st *fhirstore.Store, tr *bundle.Transactor, every time.Duration, log *slog.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := recoverTransactions(ctx, st, tr, log); err != nil && ctx.Err() == nil {
			log.Warn("transaction recovery failed; trying again later", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

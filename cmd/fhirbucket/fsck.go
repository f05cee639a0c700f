package main

import (
	"fhirbucket/bundle"

	"context"
	"fmt"
	"io"

	"fhirbucket/fhirstore"
	"fhirbucket/index"
)

const fsckSummary = `Verify the stored data of one tenant (--tenant) or of every tenant that has data:
current versions, version sequences, history events, envelopes, identifier index entries.
With --repair, roll forward interrupted writes, re-create missing history events and
delete stale identifier index entries. Exit code 0 when
no problem remains, 1 when problems remain, 2 on errors.`

// fsckSettings are fsck's own flags (no environment variables: they say
// what to do, not how to reach the storage).
var fsckSettings = []setting{
	{flag: "repair", isBool: true, def: "false", usage: "repair what can be repaired"},
	{flag: "tenant", usage: "verify this tenant only (default: every tenant with data)"},
}

func fsck(ctx context.Context, args, environ []string, stdout, stderr io.Writer) (int, error) {
	fs, v := newFlagSet("fsck", fsckSummary, stderr, fsckSettings, storeSettings)
	if err := v.parse(fs, args, environ); err != nil {
		return exitError, err
	}
	log, err := newLogger(v, stderr)
	if err != nil {
		return exitError, err
	}
	repair, err := v.boolean("repair")
	if err != nil {
		return exitError, err
	}
	doRepair := repair != nil && *repair
	be, err := openBackend(ctx, v, log, 0)
	if err != nil {
		return exitError, err
	}
	defer be.Close()
	if doRepair {
		// Transactions a stopped process left open are aborted first, as
		// serve's recovery does, so that nothing waits on them.
		tr, err := bundle.New(bundle.Config{Store: be.store, Owner: processOwner(), Logger: log})
		if err != nil {
			return exitError, err
		}
		rep, err := recoverTransactions(ctx, be.store, tr, log)
		if err != nil {
			return exitError, fmt.Errorf("recovering transactions: %w", err)
		}
		fmt.Fprintf(stdout, "transactions: %d journals, %d abandoned ones aborted, %d still running, %d could not be finished\n",
			rep.Journals, rep.Aborted, rep.Open, rep.Failed)
	}
	ix, err := be.newIndex(log, 0)
	if err != nil {
		return exitError, err
	}
	return runFsck(ctx, indexedVerifier{be.store, ix}, v.str("tenant"), doRepair, stdout)
}

// indexedVerifier verifies a tenant's resources, then its identifier
// index (after the resources' repair, which may roll a version forward).
type indexedVerifier struct {
	*fhirstore.Store
	ix *index.Index
}

func (v indexedVerifier) Verify(ctx context.Context, tenant string, repair bool) (*fhirstore.Report, error) {
	rep, err := v.Store.Verify(ctx, tenant, repair)
	if err != nil {
		return nil, err
	}
	probs, err := v.ix.Check(ctx, tenant, repair)
	if err != nil {
		return nil, fmt.Errorf("identifier index: %w", err)
	}
	rep.Problems = append(rep.Problems, probs...)
	return rep, nil
}

// verifier is the part of the resource store fsck needs.
type verifier interface {
	Tenants(ctx context.Context) ([]string, error)
	Verify(ctx context.Context, tenant string, repair bool) (*fhirstore.Report, error)
}

// runFsck verifies the tenants and prints one line per problem and a
// summary per tenant.
func runFsck(ctx context.Context, st verifier, tenant string, repair bool, stdout io.Writer) (int, error) {
	var tenants []string
	if tenant != "" {
		if err := fhirstore.ValidTenant(tenant); err != nil {
			return exitError, fmt.Errorf("--tenant: %w", err)
		}
		tenants = []string{tenant}
	} else {
		var err error
		if tenants, err = st.Tenants(ctx); err != nil {
			return exitError, fmt.Errorf("listing tenants: %w", err)
		}
	}
	remaining := 0
	for _, t := range tenants {
		rep, err := st.Verify(ctx, t, repair)
		if err != nil {
			return exitError, fmt.Errorf("tenant %s: %w", t, err)
		}
		open, fixed := 0, 0
		for _, p := range rep.Problems {
			state := "PROBLEM"
			if p.Repaired {
				state, fixed = "REPAIRED", fixed+1
			} else {
				open++
			}
			fmt.Fprintf(stdout, "%s\ttenant=%s\t%s\t%s\t%s\n", state, t, p.Kind, p.Key, p.Detail)
		}
		fmt.Fprintf(stdout, "tenant %s: %d resources, %d versions, %d events; %d problems, %d repaired, %d remaining\n",
			t, rep.Resources, rep.Versions, rep.Events, len(rep.Problems), fixed, open)
		remaining += open
	}
	if len(tenants) == 0 {
		fmt.Fprintln(stdout, "no tenant has data")
	}
	if remaining > 0 {
		if !repair {
			fmt.Fprintf(stdout, "%d problems remain; run with --repair to fix what can be fixed\n", remaining)
		} else {
			fmt.Fprintf(stdout, "%d problems remain that repair could not fix\n", remaining)
		}
		return exitProblems, nil
	}
	fmt.Fprintln(stdout, "ok")
	return exitOK, nil
}

package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"fhirbucket/fhirstore"
	"fhirbucket/index"
)

const reindexSummary = `Build the identifier index for resources written before it existed, for one
tenant (--tenant) or every tenant that has data, and mark each tenant's index
complete. Until then identifier search and conditional interactions of a tenant
answer 503. Resumable: an interrupted run continues where it stopped. Replicas
may keep serving while it runs.`

var reindexSettings = []setting{
	{flag: "tenant", usage: "reindex this tenant only (default: every tenant with data)"},
}

func reindexCmd(ctx context.Context, args, environ []string, stdout, stderr io.Writer) (int, error) {
	fs, v := newFlagSet("reindex", reindexSummary, stderr, reindexSettings, storeSettings)
	if err := v.parse(fs, args, environ); err != nil {
		return exitError, err
	}
	log, err := newLogger(v, stderr)
	if err != nil {
		return exitError, err
	}
	be, err := openBackend(ctx, v, log, 0)
	if err != nil {
		return exitError, err
	}
	defer be.Close()
	ix, err := be.newIndex(log, 0)
	if err != nil {
		return exitError, err
	}
	var tenants []string
	if t := v.str("tenant"); t != "" {
		if err := fhirstore.ValidTenant(t); err != nil {
			return exitError, fmt.Errorf("--tenant: %w", err)
		}
		tenants = []string{t}
	} else if tenants, err = be.store.Tenants(ctx); err != nil {
		return exitError, fmt.Errorf("listing tenants: %w", err)
	}
	for _, t := range tenants {
		bar := newProgressBar(stderr, t)
		if err := ix.Reindex(ctx, t, bar.update); err != nil {
			bar.done()
			return exitError, fmt.Errorf("tenant %s: %w (run reindex again to resume)", t, err)
		}
		bar.done()
		fmt.Fprintf(stdout, "tenant %s: identifier index complete (%d resources indexed)\n", t, bar.last.Indexed)
	}
	if len(tenants) == 0 {
		fmt.Fprintln(stdout, "no tenant has data")
	}
	return exitOK, nil
}

// progressBar draws one line on w, at most every 200ms.
type progressBar struct {
	w      io.Writer
	tenant string
	last   index.Progress
	drawn  time.Time
}

func newProgressBar(w io.Writer, tenant string) *progressBar {
	return &progressBar{w: w, tenant: tenant}
}

func (p *progressBar) update(pr index.Progress) {
	p.last = pr
	if time.Since(p.drawn) < 200*time.Millisecond {
		return
	}
	p.drawn = time.Now()
	p.draw()
}

func (p *progressBar) draw() {
	const width = 30
	n := 0
	if p.last.Total > 0 {
		n = width * p.last.Types / p.last.Total
	}
	bar := make([]byte, width)
	for i := range bar {
		bar[i] = '.'
		if i < n {
			bar[i] = '#'
		}
	}
	fmt.Fprintf(p.w, "\rreindex %s [%s] %d/%d types, %d resources (%s)\x1b[K", p.tenant, bar, p.last.Types, p.last.Total, p.last.Indexed, p.last.Type)
}

func (p *progressBar) done() {
	p.draw()
	fmt.Fprintln(p.w)
}

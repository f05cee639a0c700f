package bulk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"fhirbucket/internal/layout"
	"fhirbucket/lease"
	"fhirbucket/storage"
)

// Job is one job a Runner runs: its tenant, id, the tenant's bucket and
// the lease holder of its state document. Work runs under
// Holder.Context(), which ends when the lease is lost or the Runner
// closes.
type Job struct {
	Tenant string
	ID     string
	Bucket storage.Bucket
	Holder *lease.Holder
}

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	// Tenants lists the tenants to look for jobs in (required).
	Tenants func(ctx context.Context) ([]string, error)
	// Bucket returns a tenant's bucket (required).
	Bucket func(tenant string) (storage.Bucket, error)
	// JobsPrefix is where the jobs are, one folder per segment-encoded
	// job id (required), and StateKey the key of a job's state document.
	JobsPrefix string
	StateKey   func(jobID string) string
	// Run does a job's work and returns the final state to release the
	// lease with (required). When the job's context ended first (lease
	// lost, Runner closing) its result is ignored.
	Run func(ctx context.Context, j *Job) (final json.RawMessage, err error)
	// Orphan is called for a job folder without a state document (a
	// cancelled job whose files outlived it); optional.
	Orphan func(ctx context.Context, b storage.Bucket, jobID string)
	// Owner names this process in the leases (required, unique per
	// process).
	Owner string
	// TTL is the lease duration (default lease.DefaultTTL).
	TTL time.Duration
	// Clock of the leases (default the system clock).
	Clock lease.Clock
	// Poll is the time between two scans for jobs to take over (default
	// 5s, with jitter).
	Poll time.Duration
	// MaxRunning bounds the jobs this process runs at once (default 2).
	MaxRunning int
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

// Runner claims jobs by their lease and runs them. Jobs started by this
// process are handed to it with Adopt; every Poll it scans the tenants'
// jobs and takes over those whose lease expired or was released without
// the job being finished, so a job of a replica that died is finished by
// another. Open starts the scans, Close stops them and the jobs.
type Runner struct {
	cfg RunnerConfig
	log *slog.Logger

	mu       sync.Mutex
	managers map[string]*lease.Manager // tenant -> manager
	running  map[string]*Job           // tenant/id -> job
	terminal map[string]bool           // tenant/id of jobs seen finished
	closing  bool
	wg       sync.WaitGroup
	cancel   context.CancelFunc
	loopDone chan struct{}
}

// NewRunner checks cfg. It does no I/O.
func NewRunner(cfg RunnerConfig) (*Runner, error) {
	switch {
	case cfg.Tenants == nil, cfg.Bucket == nil, cfg.Run == nil, cfg.StateKey == nil:
		return nil, errors.New("bulk: RunnerConfig.Tenants, Bucket, StateKey and Run are required")
	case cfg.JobsPrefix == "" || !strings.HasSuffix(cfg.JobsPrefix, "/"):
		return nil, errors.New("bulk: RunnerConfig.JobsPrefix must end in /")
	case cfg.Owner == "":
		return nil, errors.New("bulk: RunnerConfig.Owner is required")
	}
	if cfg.TTL <= 0 {
		cfg.TTL = lease.DefaultTTL
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 5 * time.Second
	}
	if cfg.MaxRunning <= 0 {
		cfg.MaxRunning = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Runner{cfg: cfg, log: cfg.Logger, managers: map[string]*lease.Manager{},
		running: map[string]*Job{}, terminal: map[string]bool{}}, nil
}

// Manager returns the lease manager of a tenant's bucket.
func (r *Runner) Manager(tenant string) (*lease.Manager, storage.Bucket, error) {
	b, err := r.cfg.Bucket(tenant)
	if err != nil {
		return nil, nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if m, ok := r.managers[tenant]; ok {
		return m, b, nil
	}
	m, err := lease.New(lease.Config{Bucket: b, Owner: r.cfg.Owner, TTL: r.cfg.TTL, Clock: r.cfg.Clock})
	if err != nil {
		return nil, nil, err
	}
	r.managers[tenant] = m
	return m, b, nil
}

// Open starts the scan loop; it runs until Close.
func (r *Runner) Open(ctx context.Context) error {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r.cancel, r.loopDone = cancel, make(chan struct{})
	go r.loop(ctx)
	return nil
}

// Close stops the scans and every job of this process, releasing their
// leases with their last state so that another replica resumes them at
// once, and waits for them (bounded by ctx).
func (r *Runner) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closing = true
	jobs := make([]*Job, 0, len(r.running))
	for _, j := range r.running {
		jobs = append(jobs, j)
	}
	r.mu.Unlock()
	if r.cancel != nil {
		r.cancel()
		<-r.loopDone
	}
	var errs []error
	for _, j := range jobs {
		d := j.Holder.Doc()
		j.Holder.Stop()
		if _, err := j.Holder.Release(ctx, d.State); err != nil && !errors.Is(err, lease.ErrLost) {
			errs = append(errs, err)
		}
	}
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}

// Running is the number of jobs running in this process.
func (r *Runner) Running() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.running)
}

// Adopt runs a job whose state document d this process just created
// (holding its lease). When the process already runs MaxRunning jobs it
// releases the lease instead, and a scan (of any replica) picks it up.
func (r *Runner) Adopt(ctx context.Context, tenant, jobID string, d lease.Doc) error {
	m, b, err := r.Manager(tenant)
	if err != nil {
		return err
	}
	r.mu.Lock()
	full := r.closing || len(r.running) >= r.cfg.MaxRunning
	r.mu.Unlock()
	if full {
		_, err := m.Release(ctx, d, d.State)
		return err
	}
	return r.start(m, b, tenant, jobID, d)
}

func (r *Runner) start(m *lease.Manager, b storage.Bucket, tenant, jobID string, d lease.Doc) error {
	h, err := m.Keep(context.Background(), d)
	if err != nil {
		return err
	}
	j := &Job{Tenant: tenant, ID: jobID, Bucket: b, Holder: h}
	name := tenant + "/" + jobID
	r.mu.Lock()
	r.running[name] = j
	r.mu.Unlock()
	r.wg.Go(func() {
		defer func() {
			r.mu.Lock()
			delete(r.running, name)
			r.mu.Unlock()
		}()
		ctx := h.Context()
		final, err := r.cfg.Run(ctx, j)
		if ctx.Err() != nil {
			r.log.Info("bulk job stopped here", "tenant", tenant, "job", jobID, "cause", context.Cause(ctx))
			return
		}
		if err != nil {
			r.log.Warn("bulk job failed", "tenant", tenant, "job", jobID, "error", err)
		}
		if final == nil {
			final = h.Doc().State
		}
		if _, err := h.Release(context.WithoutCancel(ctx), final); err != nil {
			r.log.Warn("bulk job: releasing the lease", "tenant", tenant, "job", jobID, "error", err)
			return
		}
		if Terminal(StatusOf(final)) {
			r.mu.Lock()
			r.terminal[name] = true
			r.mu.Unlock()
		}
	})
	return nil
}

func (r *Runner) loop(ctx context.Context) {
	defer close(r.loopDone)
	for {
		r.Scan(ctx)
		// Jitter keeps replicas from scanning in lock step.
		d := r.cfg.Poll/2 + rand.N(r.cfg.Poll)
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
	}
}

// Scan looks once through every tenant's jobs and takes over those that
// are unfinished and not held, while this process has room. Cost per
// tenant: one LIST per 1,000 jobs plus one GET per job not known to be
// finished.
func (r *Runner) Scan(ctx context.Context) {
	tenants, err := r.cfg.Tenants(ctx)
	if err != nil {
		r.log.Warn("bulk: listing tenants", "error", err)
		return
	}
	for _, t := range tenants {
		if ctx.Err() != nil {
			return
		}
		if err := r.scanTenant(ctx, t); err != nil && ctx.Err() == nil {
			r.log.Warn("bulk: scanning jobs", "tenant", t, "error", err)
		}
	}
}

// JobIDs lists the ids of the jobs under the jobs prefix of b.
func JobIDs(ctx context.Context, b storage.Bucket, prefix string) ([]string, error) {
	var ids []string
	opts := storage.ListOptions{Prefix: prefix, Delimiter: "/"}
	for {
		page, err := b.List(ctx, opts)
		if err != nil {
			return nil, err
		}
		for _, p := range page.Prefixes {
			id, err := layout.DecodeSegment(strings.TrimSuffix(strings.TrimPrefix(p, prefix), "/"))
			if err == nil && id != "" {
				ids = append(ids, id)
			}
		}
		if page.Next == "" {
			return ids, nil
		}
		opts.StartAfter = page.Next
	}
}

func (r *Runner) scanTenant(ctx context.Context, tenant string) error {
	m, b, err := r.Manager(tenant)
	if err != nil {
		return err
	}
	ids, err := JobIDs(ctx, b, r.cfg.JobsPrefix)
	if err != nil {
		return err
	}
	for _, id := range ids {
		name := tenant + "/" + id
		r.mu.Lock()
		skip := r.terminal[name] || r.running[name] != nil
		full := r.closing || len(r.running) >= r.cfg.MaxRunning
		r.mu.Unlock()
		if skip {
			continue
		}
		d, err := m.Read(ctx, r.cfg.StateKey(id))
		switch {
		case errors.Is(err, storage.ErrNotExist):
			if r.cfg.Orphan != nil {
				r.cfg.Orphan(ctx, b, id)
			}
			continue
		case errors.Is(err, lease.ErrCorrupt):
			r.log.Warn("bulk: job state is not a lease document", "tenant", tenant, "job", id)
			r.mu.Lock()
			r.terminal[name] = true
			r.mu.Unlock()
			continue
		case err != nil:
			return err
		}
		if Terminal(StatusOf(d.State)) {
			r.mu.Lock()
			r.terminal[name] = true
			r.mu.Unlock()
			continue
		}
		if full || m.Status(d.Lease) == lease.Held {
			continue
		}
		d, err = m.TakeOver(ctx, d)
		if errors.Is(err, lease.ErrLost) || errors.Is(err, lease.ErrHeld) {
			continue // another replica was quicker
		}
		if err != nil {
			return fmt.Errorf("taking over job %s: %w", id, err)
		}
		r.log.Info("bulk job taken over", "tenant", tenant, "job", id, "token", d.Lease.Token)
		if err := r.start(m, b, tenant, id, d); err != nil {
			return err
		}
	}
	return nil
}

// Package export is the Bulk Data $export operation: kick-off, a snapshot
// of the store at transactionTime read one listing page at a time, the
// Patient compartment, parts streamed into the bucket, checkpoints that
// let any replica resume a job, status, manifests and file downloads. Job
// state lives in the tenant's bucket under bulk/export/jobs/{job_id}/
// (docs/object-layout.md); the jobs run in a bulk.Runner in every server
// process.
package export

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"fhirbucket/bulk"
	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/internal/layout"
	"fhirbucket/lease"
	"fhirbucket/storage"
)

// Store is what an export reads. *fhirstore.Store satisfies it.
type Store interface {
	Read(ctx context.Context, tenant, typ, id string) (*fhirstore.Resource, error)
	AsOf(ctx context.Context, tenant, typ, id string, at time.Time) (*fhirstore.Resource, error)
	IDs(ctx context.Context, tenant, typ, after string, max int) ([]string, bool, error)
	TenantBucket(tenant string) (storage.Bucket, error)
	Tenants(ctx context.Context) ([]string, error)
}

// Hooks report to telemetry (all optional).
type Hooks struct {
	// JobStarted is called when a job starts running in this process;
	// the returned function is called once when it stops: nil when it
	// completed, its error when it failed, an error wrapping
	// ErrHandedOver when it stopped here without finishing.
	JobStarted func() func(err error)
	// Exported reports resources and bytes written to a part.
	Exported func(resources int, bytes int64)
}

// ErrHandedOver is what Hooks.JobStarted's function gets when a job stops
// in this process unfinished (lease lost, server closing).
var ErrHandedOver = errors.New("export: job handed over")

// Config configures a Service.
type Config struct {
	Store Store
	// Owner names this process in job leases (unique per process).
	Owner string
	// TTL of job leases (default lease.DefaultTTL); Poll is the time
	// between scans for jobs to take over (default 5s); MaxRunning the
	// jobs this process runs at once (default 2).
	TTL        time.Duration
	Poll       time.Duration
	MaxRunning int
	Clock      lease.Clock
	// MaxPerTenant bounds the unfinished jobs of a tenant, and with auth
	// of one client (default 4): one more is refused with 429.
	MaxPerTenant int
	// Limits bound each part file.
	Limits bulk.Limits
	// Parallel bounds the GETs in flight per job (default 16).
	Parallel int
	// RetryAfter is the Retry-After of a status answer while a job runs
	// (default 2s); a poll of the same job sooner than MinPoll after the
	// previous one answers 429 (default RetryAfter/4).
	RetryAfter time.Duration
	MinPoll    time.Duration
	// PageFiles is the number of files on one partial manifest page
	// (default 100).
	PageFiles int
	Hooks     Hooks
	Logger    *slog.Logger
	// Now is the clock of transactionTime (default time.Now).
	Now func() time.Time
}

// Service runs exports.
type Service struct {
	cfg    Config
	log    *slog.Logger
	runner *bulk.Runner

	pollMu sync.Mutex
	polled map[string]time.Time // tenant/job -> last poll
}

// New checks cfg. It does no I/O; Open starts the job runner.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil {
		return nil, errors.New("export: Config.Store is required")
	}
	if cfg.Owner == "" {
		cfg.Owner = "fhirbucket-" + newJobID()[:12]
	}
	if cfg.MaxPerTenant <= 0 {
		cfg.MaxPerTenant = 4
	}
	if cfg.Parallel <= 0 {
		cfg.Parallel = 16
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 2 * time.Second
	}
	if cfg.MinPoll <= 0 {
		cfg.MinPoll = cfg.RetryAfter / 4
	}
	if cfg.PageFiles <= 0 {
		cfg.PageFiles = 100
	}
	if cfg.Limits.MaxLines <= 0 {
		cfg.Limits.MaxLines = bulk.DefaultMaxLines
	}
	if cfg.Limits.MaxBytes <= 0 {
		cfg.Limits.MaxBytes = bulk.DefaultMaxBytes
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{cfg: cfg, log: cfg.Logger, polled: map[string]time.Time{}}
	r, err := bulk.NewRunner(bulk.RunnerConfig{
		Tenants: cfg.Store.Tenants, Bucket: cfg.Store.TenantBucket,
		JobsPrefix: layout.ExportJobsPrefix, StateKey: layout.ExportStateKey,
		Run: s.run, Orphan: s.orphan,
		Owner: cfg.Owner, TTL: cfg.TTL, Clock: cfg.Clock, Poll: cfg.Poll, MaxRunning: cfg.MaxRunning, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, err
	}
	s.runner = r
	return s, nil
}

// Open starts looking for jobs to run (also those of replicas that died).
func (s *Service) Open(ctx context.Context) error { return s.runner.Open(ctx) }

// Close stops the jobs of this process, releasing them to other replicas.
func (s *Service) Close(ctx context.Context) error { return s.runner.Close(ctx) }

// Scan runs one scan for jobs to take over at once (tests; Open scans
// every Poll).
func (s *Service) Scan(ctx context.Context) { s.runner.Scan(ctx) }

// RetryAfter is the Retry-After of status answers.
func (s *Service) RetryAfter() time.Duration { return s.cfg.RetryAfter }

func newJobID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// state is a job's state document (the lease's state in state.json).
type state struct {
	Kind            string   `json:"kind"`
	Status          string   `json:"status"`
	Level           string   `json:"level"`
	Group           string   `json:"group,omitempty"`
	Request         string   `json:"request"`
	Base            string   `json:"base"`
	Client          string   `json:"client,omitempty"`
	TransactionTime string   `json:"transactionTime"`
	Since           string   `json:"since,omitempty"`
	Until           string   `json:"until,omitempty"`
	Types           []string `json:"types,omitempty"` // asked for; resolved ones in Resolved
	Resolved        []string `json:"resolved,omitempty"`
	Elements        []string `json:"elements,omitempty"`
	Patients        []string `json:"patients,omitempty"` // patient ids, nil: every patient
	AllowPartial    bool     `json:"allowPartialManifests,omitempty"`
	Notes           []string `json:"notes,omitempty"`
	Files           []file   `json:"files,omitempty"` // committed files in manifest order
	Current         string   `json:"current,omitempty"`
	Exported        int      `json:"exported,omitempty"`
	Error           string   `json:"error,omitempty"`
	// PartLines and PartBytes bound the job's parts, fixed at kick-off
	// so that every replica resuming it cuts its parts at the same
	// places (0: the Service's Limits, for jobs of older versions).
	PartLines    int       `json:"partLines,omitempty"`
	PartBytes    int64     `json:"partBytes,omitempty"`
	Created      string    `json:"created"`
	Finished     string    `json:"finished,omitempty"`
	since, until time.Time // parsed
	txTime       time.Time
}

// file is one committed file: an output or deleted part of a type, or
// the error file (kind "error", type OperationOutcome).
type file struct {
	Kind  string `json:"kind"` // output, deleted, error
	Type  string `json:"type"`
	N     int    `json:"n"`
	Count int    `json:"count"`
}

func (st *state) parse() error {
	var err error
	if st.txTime, err = time.Parse(time.RFC3339Nano, st.TransactionTime); err != nil {
		return fmt.Errorf("export: job state: transactionTime: %w", err)
	}
	if st.Since != "" {
		if st.since, err = time.Parse(time.RFC3339Nano, st.Since); err != nil {
			return fmt.Errorf("export: job state: since: %w", err)
		}
	}
	if st.Until != "" {
		if st.until, err = time.Parse(time.RFC3339Nano, st.Until); err != nil {
			return fmt.Errorf("export: job state: until: %w", err)
		}
	}
	return nil
}

func decodeState(raw json.RawMessage) (*state, error) {
	var st state
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, fmt.Errorf("export: job state: %w", err)
	}
	return &st, st.parse()
}

func (st *state) encode() json.RawMessage {
	b, _ := json.Marshal(st)
	return b
}

// limits are the part bounds of the job: those fixed at kick-off, else
// the Service's.
func (s *Service) limits(st *state) bulk.Limits {
	l := s.cfg.Limits
	if st.PartLines > 0 {
		l.MaxLines = st.PartLines
	}
	if st.PartBytes > 0 {
		l.MaxBytes = st.PartBytes
	}
	return l
}

func instant(t time.Time) string { return fhir.FormatInstant(t.UTC().Truncate(time.Millisecond)) }

// Kickoff checks the request against the store (the Group, the patients)
// and the tenant's limit, then writes the job's state document, holding
// its lease, and starts it in this process. A refused kick-off writes
// nothing. It returns the job id.
func (s *Service) Kickoff(ctx context.Context, tenant string, req Request) (string, error) {
	m, b, err := s.runner.Manager(tenant)
	if err != nil {
		return "", err
	}
	st := &state{
		Kind: "export", Status: bulk.StatusInProgress, Level: req.Level, Group: req.GroupID,
		Request: req.URL, Base: req.Base, Client: req.Client, Types: req.Types, Elements: req.Elements,
		AllowPartial: req.AllowPartial, Notes: req.Notes, Patients: req.Patients,
		PartLines: s.cfg.Limits.MaxLines, PartBytes: s.cfg.Limits.MaxBytes,
	}
	if !req.Since.IsZero() {
		st.Since = instant(req.Since)
	}
	if !req.Until.IsZero() {
		st.Until = instant(req.Until)
	}
	for _, id := range req.Patients {
		if _, err := s.cfg.Store.Read(ctx, tenant, "Patient", id); err != nil {
			if errors.Is(err, fhirstore.ErrNotFound) || errors.Is(err, fhirstore.ErrGone) {
				return "", fmt.Errorf("%w: patient Patient/%s does not exist", bulk.ErrInvalid, id)
			}
			return "", err
		}
	}
	if req.Level == LevelGroup {
		members, err := s.groupMembers(ctx, tenant, req.GroupID)
		if err != nil {
			return "", err
		}
		if len(req.Patients) > 0 {
			var both []string
			for _, p := range req.Patients {
				if members[p] {
					both = append(both, p)
				}
			}
			members = map[string]bool{}
			for _, p := range both {
				members[p] = true
			}
		}
		st.Patients = make([]string, 0, len(members))
		for p := range members {
			st.Patients = append(st.Patients, p)
		}
		sortStrings(st.Patients)
	}
	if err := s.checkLimit(ctx, m, b, req.Client); err != nil {
		return "", err
	}
	now := s.cfg.Now()
	st.TransactionTime, st.Created = instant(now), instant(now)
	id := newJobID()
	d, err := m.Create(ctx, layout.ExportStateKey(id), st.encode())
	if err != nil {
		return "", err
	}
	if err := s.runner.Adopt(ctx, tenant, id, d); err != nil {
		s.log.Warn("export: starting the job here failed; another scan will", "job", id, "error", err)
	}
	return id, nil
}

// groupMembers returns the Patient ids of Group.member.entity.
func (s *Service) groupMembers(ctx context.Context, tenant, id string) (map[string]bool, error) {
	g, err := s.cfg.Store.Read(ctx, tenant, "Group", id)
	if err != nil {
		if errors.Is(err, fhirstore.ErrNotFound) || errors.Is(err, fhirstore.ErrGone) {
			return nil, fmt.Errorf("%w: Group/%s does not exist", fhirstore.ErrNotFound, id)
		}
		return nil, err
	}
	out := map[string]bool{}
	for _, p := range patientRefs("Group", g.Content) {
		out[p] = true
	}
	return out, nil
}

// checkLimit counts the tenant's unfinished jobs (and the client's).
func (s *Service) checkLimit(ctx context.Context, m *lease.Manager, b storage.Bucket, client string) error {
	ids, err := bulk.JobIDs(ctx, b, layout.ExportJobsPrefix)
	if err != nil {
		return err
	}
	running := 0
	for _, id := range ids {
		d, err := m.Read(ctx, layout.ExportStateKey(id))
		if err != nil {
			continue
		}
		st, err := decodeState(d.State)
		if err != nil || bulk.Terminal(st.Status) {
			continue
		}
		if client == "" || st.Client == client {
			running++
		}
	}
	if running >= s.cfg.MaxPerTenant {
		return fmt.Errorf("%w: %d exports are running (the limit is %d); retry when one has finished", bulk.ErrTooManyJobs, running, s.cfg.MaxPerTenant)
	}
	return nil
}

package export

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"fhirbucket/bulk"
	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/internal/layout"
	"fhirbucket/storage"
)

func sortStrings(s []string) { slices.Sort(s) }

// progress is progress/{type}.json, the resume point of one type: every
// id up to After is accounted for in Files, which are committed.
type progress struct {
	Type     string   `json:"type"`
	After    string   `json:"after,omitempty"`
	Done     bool     `json:"done,omitempty"`
	Files    []file   `json:"files,omitempty"`
	Exported int      `json:"exported"`
	Deleted  int      `json:"deleted"`
	Errors   []string `json:"errors,omitempty"`
	Token    int64    `json:"token"` // fencing token of the writer
	etag     string   // of the object as last read or written here
}

// run is the Runner's job function.
func (s *Service) run(ctx context.Context, j *bulk.Job) (json.RawMessage, error) {
	stopped := func(error) {}
	if s.cfg.Hooks.JobStarted != nil {
		stopped = s.cfg.Hooks.JobStarted()
	}
	st, err := decodeState(j.Holder.Doc().State)
	if err == nil {
		err = s.export(ctx, j, st)
	}
	switch {
	case ctx.Err() != nil:
		stopped(fmt.Errorf("%w: %w", ErrHandedOver, context.Cause(ctx)))
		if errors.Is(context.Cause(ctx), storage.ErrNotExist) {
			// Cancelled: the state document is gone; remove what this
			// holder wrote after the canceller's sweep.
			s.orphan(context.WithoutCancel(ctx), j.Bucket, j.ID)
		}
		return nil, ctx.Err()
	case err != nil:
		stopped(err)
		if st == nil {
			return nil, err
		}
		st.Status, st.Error, st.Finished = bulk.StatusFailed, err.Error(), instant(s.cfg.Now())
		return st.encode(), err
	}
	stopped(nil)
	return st.encode(), nil
}

// update writes st as the job's state (a lease update, which also renews).
func update(ctx context.Context, j *bulk.Job, st *state) error {
	_, err := j.Holder.Update(ctx, st.encode())
	return err
}

func (s *Service) export(ctx context.Context, j *bulk.Job, st *state) error {
	types := st.Resolved
	if types == nil {
		var err error
		if types, err = s.resolveTypes(ctx, j, st); err != nil {
			return err
		}
		st.Resolved = types
		if err := update(ctx, j, st); err != nil {
			return err
		}
	}
	// Rebuild the file list from the resume points (the state's copy may
	// be behind them after a crash).
	st.Files, st.Exported = nil, 0
	var notes []string
	for _, typ := range types {
		p, err := s.claimProgress(ctx, j, typ)
		if err != nil {
			return err
		}
		if !p.Done {
			st.Current = typ
			if err := s.exportType(ctx, j, st, p); err != nil {
				return err
			}
		}
		st.Files = append(st.Files, p.Files...)
		st.Exported += p.Exported
		notes = append(notes, p.Errors...)
	}
	// The error file: informational notes of the kick-off, then the
	// resources that could not be read.
	if len(st.Notes) > 0 || len(notes) > 0 {
		w := bulk.NewPartWriter(j.Bucket, func(n int) string { return layout.ExportPartKey(j.ID, "OperationOutcome", n) }, 1, s.limits(st))
		add := func(sev, code, msg string) error {
			line, _ := fhir.Marshal(fhir.NewOutcome(sev, code, msg))
			line = []byte(strings.TrimSpace(string(line)))
			if !w.Fits(len(line)) {
				if err := s.commitError(ctx, w, st); err != nil {
					return err
				}
			}
			return w.Add(ctx, line, "")
		}
		for _, n := range st.Notes {
			if err := add(fhir.SeverityInformation, "informational", n); err != nil {
				return err
			}
		}
		for _, n := range notes {
			if err := add(fhir.SeverityError, "exception", n); err != nil {
				return err
			}
		}
		if err := s.commitError(ctx, w, st); err != nil {
			return err
		}
	}
	st.Status, st.Current, st.Finished = bulk.StatusCompleted, "", instant(s.cfg.Now())
	man, _ := json.Marshal(s.manifest(st, j.ID, 0, true))
	if _, err := j.Bucket.Put(ctx, layout.ExportManifestKey(j.ID), strings.NewReader(string(man)),
		storage.PutOptions{ContentType: "application/json", Size: int64(len(man))}); err != nil {
		return err
	}
	return nil
}

func (s *Service) commitError(ctx context.Context, w *bulk.PartWriter, st *state) error {
	p, err := w.Commit(ctx)
	if p != nil {
		st.Files = append(st.Files, file{Kind: "error", Type: "OperationOutcome", N: p.N, Count: p.Count})
	}
	return err
}

// resolveTypes is the job's type list: _type, or every type with stored
// resources (system level) or of the Patient compartment (Patient and
// Group level), in name order.
func (s *Service) resolveTypes(ctx context.Context, j *bulk.Job, st *state) ([]string, error) {
	var all []string
	if st.Level == LevelSystem {
		lp, err := storage.ListPrefixes(ctx, j.Bucket, layout.ResourcesPrefix)
		if err != nil {
			return nil, err
		}
		for _, p := range lp {
			t := strings.TrimSuffix(strings.TrimPrefix(p, layout.ResourcesPrefix), "/")
			if fhir.IsResourceType(t) && t != "OperationOutcome" {
				all = append(all, t)
			}
		}
	} else {
		all = compartmentTypes()
	}
	if len(st.Types) == 0 {
		return all, nil
	}
	var out []string
	for _, t := range st.Types {
		if t != "OperationOutcome" {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out, nil
}

func (s *Service) readProgress(ctx context.Context, j *bulk.Job, typ string) (*progress, error) {
	data, a, err := storage.ReadAll(ctx, j.Bucket, layout.ExportProgressKey(j.ID, typ))
	if errors.Is(err, storage.ErrNotExist) {
		return &progress{Type: typ}, nil
	}
	if err != nil {
		return nil, err
	}
	var p progress
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("export: %s: %w", layout.ExportProgressKey(j.ID, typ), err)
	}
	p.etag = a.ETag
	return &p, nil
}

// errFenced: a progress file was written by a holder with a newer token.
var errFenced = errors.New("export: progress written by a newer lease holder")

// claimProgress reads the resume point of typ and, unless the type is
// done, writes it back with this holder's token, so that from then on a
// stale holder (one whose lease was taken over while it was paused) can
// no longer move it: every progress write is conditional on the ETag the
// writer last saw. A stale holder's write that lands between the read
// and the claim is itself a checkpoint of the job (parts are cut at the
// same places by every holder: the limits are the job's), so the claim
// adopts it.
func (s *Service) claimProgress(ctx context.Context, j *bulk.Job, typ string) (*progress, error) {
	for range 5 {
		p, err := s.readProgress(ctx, j, typ)
		if err != nil || p.Done {
			return p, err
		}
		if p.Token > j.Holder.Doc().Lease.Token {
			return nil, s.fenced(ctx, j, p)
		}
		err = s.putProgress(ctx, j, p)
		if !errors.Is(err, storage.ErrPreconditionFailed) && !errors.Is(err, storage.ErrNotExist) {
			return p, err
		}
	}
	return nil, fmt.Errorf("export: %s: progress of %s keeps changing", j.ID, typ)
}

// writeProgress checkpoints p, conditional on its ETag. When the object
// changed it reads it: written with this holder's token, it was an
// earlier write of ours whose answer was lost, and the write is redone;
// with a newer token the job was taken over and this holder stops.
func (s *Service) writeProgress(ctx context.Context, j *bulk.Job, p *progress) error {
	err := s.putProgress(ctx, j, p)
	if !errors.Is(err, storage.ErrPreconditionFailed) && !errors.Is(err, storage.ErrNotExist) {
		return err
	}
	cur, rerr := s.readProgress(ctx, j, p.Type)
	if rerr != nil {
		return fmt.Errorf("%w (reading it back: %w)", err, rerr)
	}
	if cur.Token != j.Holder.Doc().Lease.Token {
		return s.fenced(ctx, j, cur)
	}
	p.etag = cur.etag
	return s.putProgress(ctx, j, p)
}

// fenced makes the holder look at its lease (which cancels its context
// when it is lost) and returns errFenced.
func (s *Service) fenced(ctx context.Context, j *bulk.Job, cur *progress) error {
	_, _ = j.Holder.Refresh(ctx)
	return fmt.Errorf("%w: %s has token %d, this holder %d", errFenced, layout.ExportProgressKey(j.ID, cur.Type),
		cur.Token, j.Holder.Doc().Lease.Token)
}

func (s *Service) putProgress(ctx context.Context, j *bulk.Job, p *progress) error {
	p.Token = j.Holder.Doc().Lease.Token
	data, _ := json.Marshal(p)
	opts := storage.PutOptions{ContentType: "application/json", Size: int64(len(data)), IfMatch: p.etag}
	if p.etag == "" {
		opts.IfNoneMatch = "*"
	}
	a, err := j.Bucket.Put(ctx, layout.ExportProgressKey(j.ID, p.Type), strings.NewReader(string(data)), opts)
	if err != nil {
		return err
	}
	p.etag = a.ETag
	return nil
}

// maxErrors bounds the per-type error notes kept in a progress file.
const maxErrors = 1000

// exportType exports one type from its resume point p: listing pages of
// 1,000 ids, reading each id's version at transactionTime in parallel,
// writing the lines in id order, and checkpointing whenever a part is
// full (the parts committed, then p, then the job state).
func (s *Service) exportType(ctx context.Context, j *bulk.Job, st *state, p *progress) error {
	typ := p.Type
	first := func(kind string) int {
		n := 1
		for _, f := range p.Files {
			if f.Kind == kind {
				n = f.N + 1
			}
		}
		return n
	}
	out := bulk.NewPartWriter(j.Bucket, func(n int) string { return layout.ExportPartKey(j.ID, typ, n) }, first("output"), s.limits(st))
	del := bulk.NewPartWriter(j.Bucket, func(n int) string { return layout.ExportDeletedPartKey(j.ID, typ, n) }, first("deleted"), s.limits(st))
	defer out.Abort(ctx)
	defer del.Abort(ctx)
	keep := elementsFor(st.Elements, typ)
	var patients map[string]bool
	if st.Patients != nil || st.Level == LevelGroup {
		patients = map[string]bool{}
		for _, id := range st.Patients {
			patients[id] = true
		}
	}
	// processed is the last id fully handled (in a writer or skipped).
	processed := p.After
	checkpoint := func() error {
		for _, w := range []struct {
			w    *bulk.PartWriter
			kind string
		}{{out, "output"}, {del, "deleted"}} {
			part, err := w.w.Commit(ctx)
			if err != nil {
				return err
			}
			if part != nil {
				f := file{Kind: w.kind, Type: typ, N: part.N, Count: part.Count}
				p.Files = append(p.Files, f)
				st.Files = append(st.Files, f)
				if s.cfg.Hooks.Exported != nil && w.kind == "output" {
					s.cfg.Hooks.Exported(part.Count, part.Bytes)
				}
			}
		}
		p.After = processed
		if err := s.writeProgress(ctx, j, p); err != nil {
			return err
		}
		return update(ctx, j, st)
	}
	// st.Files holds the files of the types before this one; add this
	// type's committed ones so partial pages see them in order.
	st.Files = append(st.Files, p.Files...)
	defer func() { st.Files = st.Files[:len(st.Files)-len(p.Files)] }()
	st.Exported += p.Exported
	defer func() { st.Exported -= p.Exported }()

	cursor := p.After
	for {
		ids, more, err := s.cfg.Store.IDs(ctx, j.Tenant, typ, cursor, storage.MaxListKeys)
		if err != nil {
			return err
		}
		res := make([]*fhirstore.Resource, len(ids))
		errs := make([]error, len(ids))
		if err := s.forEach(ctx, len(ids), func(ctx context.Context, i int) {
			res[i], errs[i] = s.cfg.Store.AsOf(ctx, j.Tenant, typ, ids[i], st.txTime)
		}); err != nil {
			return err
		}
		for i, id := range ids {
			if errs[i] != nil {
				if ctx.Err() != nil || errors.Is(errs[i], storage.ErrUnavailable) {
					return errs[i]
				}
				if len(p.Errors) < maxErrors {
					p.Errors = append(p.Errors, fmt.Sprintf("%s/%s could not be exported: %v", typ, id, errs[i]))
				}
				processed = id
				continue
			}
			line, w, err := s.lineFor(st, typ, res[i], keep, patients, out, del)
			if err != nil {
				if len(p.Errors) < maxErrors {
					p.Errors = append(p.Errors, fmt.Sprintf("%s/%s could not be exported: %v", typ, id, err))
				}
				processed = id
				continue
			}
			if w != nil {
				if !w.Fits(len(line)) {
					if err := checkpoint(); err != nil {
						return err
					}
				}
				if err := w.Add(ctx, line, id); err != nil {
					return err
				}
				if w == out {
					p.Exported++
					st.Exported++
				} else {
					p.Deleted++
				}
			}
			processed = id
		}
		if len(ids) > 0 {
			cursor = ids[len(ids)-1]
		}
		if !more {
			break
		}
	}
	processed = cursor
	p.Done = true
	return checkpoint()
}

// lineFor decides what res (the version at transactionTime, nil when
// none) contributes: an output line, a deleted[] line, or nothing (nil
// writer).
func (s *Service) lineFor(st *state, typ string, res *fhirstore.Resource, keep, patients map[string]bool,
	out, del *bulk.PartWriter) ([]byte, *bulk.PartWriter, error) {
	if res == nil {
		return nil, nil, nil
	}
	until := st.txTime
	if !st.until.IsZero() && st.until.Before(until) {
		until = st.until
	}
	if res.Deleted() {
		// Deletions are listed only with _since, when they fall between
		// _since and the end of the window.
		if st.since.IsZero() || !res.DeletedAt.After(st.since) || res.DeletedAt.After(until) {
			return nil, nil, nil
		}
		if st.Level != LevelSystem && !s.member(typ, res, patients) {
			return nil, nil, nil
		}
		b, _ := json.Marshal(map[string]any{"resourceType": "Bundle", "type": "transaction",
			"entry": []any{map[string]any{"request": map[string]string{"method": "DELETE", "url": typ + "/" + res.ID}}}})
		return b, del, nil
	}
	if (!st.since.IsZero() && !res.LastModified.After(st.since)) || res.LastModified.After(until) {
		return nil, nil, nil
	}
	if st.Level != LevelSystem && !s.member(typ, res, patients) {
		return nil, nil, nil
	}
	line := []byte(res.Content)
	if keep != nil {
		var err error
		if line, err = subset(line, keep); err != nil {
			return nil, nil, err
		}
	}
	return compact(line), out, nil
}

// member reports whether res is in the compartment of one of patients
// (nil: of any patient).
func (s *Service) member(typ string, res *fhirstore.Resource, patients map[string]bool) bool {
	if typ == "Patient" {
		return patients == nil || patients[res.ID]
	}
	refs := patientRefs(typ, res.Content)
	if patients == nil {
		return len(refs) > 0
	}
	for _, r := range refs {
		if patients[r] {
			return true
		}
	}
	return false
}

// compact removes insignificant whitespace: one resource per line.
func compact(b []byte) []byte {
	if !bytes.ContainsAny(b, "\n\r") {
		return b
	}
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return b
	}
	return buf.Bytes()
}

// forEach runs f(i) for i in [0, n), Parallel at a time.
func (s *Service) forEach(ctx context.Context, n int, f func(ctx context.Context, i int)) error {
	sem := make(chan struct{}, s.cfg.Parallel)
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			f(ctx, i)
		})
	}
	wg.Wait()
	return ctx.Err()
}

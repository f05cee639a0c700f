package export

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"fhirbucket/bulk"
	"fhirbucket/fhir"
	"fhirbucket/internal/layout"
	"fhirbucket/storage"
)

// Status is what a status poll answers.
type Status struct {
	// Done: the job completed (Manifest is the manifest or the page
	// asked for). Failed: JobErr says why. Else it runs: Progress is the
	// X-Progress text, and Manifest a full partial page when one is ready.
	Done, Failed bool
	JobErr       string
	Progress     string
	Manifest     *bulk.Manifest
}

// Status reads the job (1 GET) and answers a poll. page >= 1 asks for a
// page of PageFiles files (allowPartialManifests); 0 for the whole
// manifest once complete. A poll sooner than MinPoll after the last one
// of the job in this process fails with bulk.ErrPollTooFast.
func (s *Service) Status(ctx context.Context, tenant, jobID string, page int) (*Status, error) {
	st, err := s.readJob(ctx, tenant, jobID)
	if err != nil {
		return nil, err
	}
	if !bulk.Terminal(st.Status) {
		key := tenant + "/" + jobID
		now := time.Now()
		s.pollMu.Lock()
		last, seen := s.polled[key]
		if !seen || now.Sub(last) >= s.cfg.MinPoll {
			s.polled[key] = now
		}
		s.pollMu.Unlock()
		if seen && now.Sub(last) < s.cfg.MinPoll {
			return nil, fmt.Errorf("%w: poll at most every %v", bulk.ErrPollTooFast, s.cfg.RetryAfter)
		}
	}
	out := &Status{}
	switch st.Status {
	case bulk.StatusFailed:
		out.Failed, out.JobErr = true, st.Error
		return out, nil
	case bulk.StatusCompleted:
		out.Done = true
		out.Manifest = s.manifest(st, jobID, page, true)
		return out, nil
	}
	out.Progress = progressText(st)
	if st.AllowPartial {
		if page < 1 {
			page = 1
		}
		if len(st.Files) >= page*s.cfg.PageFiles {
			out.Manifest = s.manifest(st, jobID, page, false)
		}
	}
	return out, nil
}

func progressText(st *state) string {
	if st.Current == "" {
		return "starting"
	}
	done := 0
	for i, t := range st.Resolved {
		if t == st.Current {
			done = i
		}
	}
	txt := fmt.Sprintf("%s: %d resources exported; type %d of %d", st.Current, st.Exported, done+1, len(st.Resolved))
	if len(txt) > 99 {
		txt = txt[:99]
	}
	return txt
}

// FileName is the download name of a file: {job}.{kind}.{type}.{n}.ndjson.
func FileName(jobID, kind, typ string, n int) string {
	return jobID + "." + kind + "." + typ + "." + strconv.Itoa(n) + ".ndjson"
}

func parseFileName(name string) (jobID, kind, typ string, n int, ok bool) {
	rest, ok := strings.CutSuffix(name, ".ndjson")
	parts := strings.Split(rest, ".")
	if !ok || len(parts) != 4 || !fhir.IsResourceType(parts[2]) {
		return "", "", "", 0, false
	}
	n, err := strconv.Atoi(parts[3])
	if err != nil || n < 1 || strconv.Itoa(n) != parts[3] {
		return "", "", "", 0, false
	}
	switch parts[1] {
	case "output", "deleted", "error":
	default:
		return "", "", "", 0, false
	}
	return parts[0], parts[1], parts[2], n, parts[0] != ""
}

// manifest builds the manifest of st: every file (page 0 of a completed
// job) or one page of PageFiles files, with a next link when more
// follow or may follow.
func (s *Service) manifest(st *state, jobID string, page int, complete bool) *bulk.Manifest {
	m := &bulk.Manifest{
		TransactionTime: st.TransactionTime, Request: st.Request, RequiresAccessToken: true,
		Output: []bulk.OutputFile{}, Error: []bulk.OutputFile{},
	}
	files := st.Files
	if page >= 1 {
		lo := min((page-1)*s.cfg.PageFiles, len(files))
		hi := min(page*s.cfg.PageFiles, len(files))
		files = files[lo:hi]
		if hi < len(st.Files) || (!complete && hi == page*s.cfg.PageFiles) {
			m.Link = []bulk.ManifestLink{{Relation: "next", URL: s.StatusURL(st.Base, jobID) + "&page=" + strconv.Itoa(page+1)}}
		}
	}
	for _, f := range files {
		of := bulk.OutputFile{Type: f.Type, URL: st.Base + "/$export-file?name=" + FileName(jobID, f.Kind, f.Type, f.N), Count: f.Count}
		switch f.Kind {
		case "output":
			m.Output = append(m.Output, of)
		case "deleted":
			of.Type = "Bundle"
			m.Deleted = append(m.Deleted, of)
		case "error":
			m.Error = append(m.Error, of)
		}
	}
	return m
}

// StatusURL is the polling URL of a job below a tenant's FHIR base.
func (s *Service) StatusURL(base, jobID string) string {
	return base + "/$export-poll-status?_jobId=" + jobID
}

func (s *Service) readJob(ctx context.Context, tenant, jobID string) (*state, error) {
	if !validJobID(jobID) {
		return nil, fmt.Errorf("%w: %q", bulk.ErrJobNotFound, jobID)
	}
	m, _, err := s.runner.Manager(tenant)
	if err != nil {
		return nil, err
	}
	d, err := m.Read(ctx, layout.ExportStateKey(jobID))
	if errors.Is(err, storage.ErrNotExist) {
		return nil, fmt.Errorf("%w: export %s", bulk.ErrJobNotFound, jobID)
	}
	if err != nil {
		return nil, err
	}
	return decodeState(d.State)
}

func validJobID(id string) bool {
	if len(id) != 32 {
		return false
	}
	_, err := hex.DecodeString(id)
	return err == nil
}

// Cancel removes a job and its files (the holder, on any replica, sees
// its lease object gone and stops); the status URL answers 404 afterwards.
func (s *Service) Cancel(ctx context.Context, tenant, jobID string) error {
	if _, err := s.readJob(ctx, tenant, jobID); err != nil {
		return err
	}
	b, err := s.cfg.Store.TenantBucket(tenant)
	if err != nil {
		return err
	}
	if err := b.Delete(ctx, layout.ExportStateKey(jobID)); err != nil {
		return err
	}
	return storage.DeleteAll(ctx, b, layout.ExportJobPrefix(jobID), 8)
}

// orphan removes the files of a job whose state document is gone.
func (s *Service) orphan(ctx context.Context, b storage.Bucket, jobID string) {
	if err := storage.DeleteAll(ctx, b, layout.ExportJobPrefix(jobID), 8); err != nil {
		s.log.Warn("export: removing the files of a cancelled job", "job", jobID, "error", err)
	}
}

// Open opens a file of a job of the tenant by its download name; the
// caller closes it.
func (s *Service) OpenFile(ctx context.Context, tenant, name string) (io.ReadCloser, storage.Attrs, error) {
	jobID, kind, typ, n, ok := parseFileName(name)
	if !ok || !validJobID(jobID) {
		return nil, storage.Attrs{}, fmt.Errorf("%w: no export file %q", bulk.ErrJobNotFound, name)
	}
	st, err := s.readJob(ctx, tenant, jobID)
	if err != nil {
		return nil, storage.Attrs{}, err
	}
	listed := false
	for _, f := range st.Files {
		listed = listed || (f.Kind == kind && f.Type == typ && f.N == n)
	}
	if !listed {
		return nil, storage.Attrs{}, fmt.Errorf("%w: no export file %q", bulk.ErrJobNotFound, name)
	}
	b, err := s.cfg.Store.TenantBucket(tenant)
	if err != nil {
		return nil, storage.Attrs{}, err
	}
	rc, a, err := b.Get(ctx, fileKey(jobID, kind, typ, n))
	if errors.Is(err, storage.ErrNotExist) {
		return nil, storage.Attrs{}, fmt.Errorf("%w: export file %q is gone", bulk.ErrJobNotFound, name)
	}
	return rc, a, err
}

func fileKey(jobID, kind, typ string, n int) string {
	if kind == "deleted" {
		return layout.ExportDeletedPartKey(jobID, typ, n)
	}
	return layout.ExportPartKey(jobID, typ, n)
}

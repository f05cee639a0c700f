package server

// Bulk Data $export: kick-off at system, Patient and Group level, status
// polling, cancel, and file download (bulk/export does the work). With
// no export service configured the routes answer 501 and the
// CapabilityStatement does not claim them.

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"fhirbucket/bulk"
	"fhirbucket/bulk/export"
	"fhirbucket/fhir"
	"fhirbucket/outcome"
	"fhirbucket/storage"
)

// Exporter is the export service the server calls. *export.Service
// satisfies it.
type Exporter interface {
	Kickoff(ctx context.Context, tenant string, req export.Request) (string, error)
	Status(ctx context.Context, tenant, jobID string, page int) (*export.Status, error)
	Cancel(ctx context.Context, tenant, jobID string) error
	OpenFile(ctx context.Context, tenant, name string) (io.ReadCloser, storage.Attrs, error)
	StatusURL(base, jobID string) string
	RetryAfter() time.Duration
}

var errNoExport = outcome.Errorf(http.StatusNotImplemented, "not-supported", "bulk export is not enabled on this server")

func (s *Server) exportSystem(w http.ResponseWriter, r *http.Request) {
	s.kickoff(w, r, export.LevelSystem, "")
}

func (s *Server) exportPatient(w http.ResponseWriter, r *http.Request) {
	s.kickoff(w, r, export.LevelPatient, "")
}

func (s *Server) exportGroup(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if !fhir.ValidID(id) {
		s.writeError(w, r, outcome.Errorf(http.StatusBadRequest, "invalid", "%q is not a valid Group id", id))
		return
	}
	s.kickoff(w, r, export.LevelGroup, id)
}

func (s *Server) kickoff(w http.ResponseWriter, r *http.Request, level, group string) {
	if s.export == nil {
		s.writeError(w, r, errNoExport)
		return
	}
	ri := info(r)
	prefer := parsePrefer(r)
	params := map[string][]string(r.URL.Query())
	post := r.Method == http.MethodPost
	if post && (r.ContentLength > 0 || r.Header.Get("Content-Type") != "") {
		body, err := s.readBody(w, r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if len(strings.TrimSpace(string(body))) > 0 {
			p, err := fhir.ParseParameters(body)
			if err != nil {
				s.writeError(w, r, fmt.Errorf("%w: the $export body must be a Parameters resource: %w", bulk.ErrInvalid, err))
				return
			}
			bp, err := export.FromParameters(p)
			if err != nil {
				s.writeError(w, r, err)
				return
			}
			for k, v := range bp {
				params[k] = append(params[k], v...)
			}
		}
	}
	req := export.Request{Level: level, GroupID: group, Base: ri.base}
	req.URL = ri.base + r.URL.Path
	if r.URL.RawQuery != "" {
		req.URL += "?" + r.URL.RawQuery
	}
	if ri.principal != nil {
		req.Client = ri.principal.Name
	}
	if err := export.ParseParams(&req, params, post, prefer.lenient); err != nil {
		s.writeError(w, r, err)
		return
	}
	id, err := s.export.Kickoff(r.Context(), ri.tenant, req)
	if err != nil {
		s.retryAfter(w, err)
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Location", s.export.StatusURL(ri.base, id))
	if preferSeparateStatus(r) {
		w.Header().Set("Preference-Applied", "respond-async,separate-export-status")
	}
	s.writeJSON(w, http.StatusAccepted, fhir.NewOutcome(fhir.SeverityInformation, "informational",
		"the export was accepted; poll the Content-Location URL for its status"))
}

// retryAfter sets Retry-After on a 429 answer.
func (s *Server) retryAfter(w http.ResponseWriter, err error) {
	if outcome.Classify(err).Status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", seconds(s.export.RetryAfter()))
	}
}

func seconds(d time.Duration) string { return strconv.Itoa(max(1, int((d+time.Second-1)/time.Second))) }

// preferSeparateStatus reports Prefer: separate-export-status (Bulk Data
// 3.0.0): the status then answers 200 with X-Export-Status.
func preferSeparateStatus(r *http.Request) bool {
	for _, h := range r.Header.Values("Prefer") {
		for p := range strings.SplitSeq(h, ",") {
			if strings.EqualFold(strings.TrimSpace(p), "separate-export-status") {
				return true
			}
		}
	}
	return false
}

func (s *Server) exportStatus(w http.ResponseWriter, r *http.Request) {
	if s.export == nil {
		s.writeError(w, r, errNoExport)
		return
	}
	ri := info(r)
	page := 0
	if v := r.URL.Query().Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			s.writeError(w, r, fmt.Errorf("%w: page %q is not a positive number", bulk.ErrInvalid, v))
			return
		}
		page = n
	}
	st, err := s.export.Status(r.Context(), ri.tenant, r.URL.Query().Get("_jobId"), page)
	if err != nil {
		s.retryAfter(w, err)
		s.writeError(w, r, err)
		return
	}
	separate := preferSeparateStatus(r)
	switch {
	case st.Failed:
		if separate {
			w.Header().Set("X-Export-Status", "500")
		}
		status, oo := http.StatusInternalServerError, fhir.NewOutcome(fhir.SeverityError, "exception", "the export failed: "+st.JobErr)
		if separate {
			status = http.StatusOK
		}
		s.writeJSON(w, status, oo)
	case st.Done:
		w.Header().Set("Expires", s.now().Add(24*time.Hour).UTC().Format(http.TimeFormat))
		s.writeManifest(w, http.StatusOK, st.Manifest)
	default:
		w.Header().Set("X-Progress", st.Progress)
		w.Header().Set("Retry-After", seconds(s.export.RetryAfter()))
		status := http.StatusAccepted
		if separate {
			w.Header().Set("X-Export-Status", "202")
			status = http.StatusOK
		}
		if st.Manifest != nil {
			s.writeManifest(w, status, st.Manifest)
			return
		}
		if separate {
			s.writeJSON(w, status, fhir.NewOutcome(fhir.SeverityInformation, "informational", "in progress: "+st.Progress))
			return
		}
		w.WriteHeader(status)
	}
}

func (s *Server) writeManifest(w http.ResponseWriter, status int, m *bulk.Manifest) {
	data, _ := json.Marshal(m)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

func (s *Server) exportCancel(w http.ResponseWriter, r *http.Request) {
	if s.export == nil {
		s.writeError(w, r, errNoExport)
		return
	}
	if err := s.export.Cancel(r.Context(), info(r).tenant, r.URL.Query().Get("_jobId")); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, http.StatusAccepted, fhir.NewOutcome(fhir.SeverityInformation, "informational", "the export was cancelled and its files removed"))
}

func (s *Server) exportFile(w http.ResponseWriter, r *http.Request) {
	if s.export == nil {
		s.writeError(w, r, errNoExport)
		return
	}
	rc, a, err := s.export.OpenFile(r.Context(), info(r).tenant, r.URL.Query().Get("name"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer rc.Close()
	h := w.Header()
	h.Set("Content-Type", "application/fhir+ndjson")
	h.Set("Vary", "Accept-Encoding")
	if acceptsGzip(r) {
		h.Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		_, err = io.Copy(zw, rc)
		if err == nil {
			err = zw.Close()
		}
	} else {
		h.Set("Content-Length", strconv.FormatInt(a.Size, 10))
		_, err = io.Copy(w, rc)
	}
	if err != nil {
		info(r).err = err // the status is sent; only the log can tell
	}
}

// acceptsGzip reports whether Accept-Encoding allows gzip (q > 0).
func acceptsGzip(r *http.Request) bool {
	for _, h := range r.Header.Values("Accept-Encoding") {
		for p := range strings.SplitSeq(h, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(p), ";")
			if !strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.TrimSpace(name) != "*" {
				continue
			}
			if q, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
				if v, err := strconv.ParseFloat(q, 64); err == nil && v <= 0 {
					continue
				}
			}
			return true
		}
	}
	return false
}

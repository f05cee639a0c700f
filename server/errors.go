package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"fhirbucket/auth"
	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/storage"
)

// httpError is an error the server itself decides on (routing, content
// negotiation, parameters): it carries its status and issue code.
type httpError struct {
	status int
	code   string // FHIR issue-type code
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func httpErrorf(status int, code, format string, args ...any) error {
	return &httpError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// errMapping is one row of the error table.
type errMapping struct {
	target   error  // matched with errors.Is
	status   int    // HTTP status
	code     string // OperationOutcome issue.code
	severity string
	// generic, when set, replaces the error text in diagnostics: for
	// server-side failures whose detail (keys, endpoints) is for the log.
	generic string
}

// errorTable maps the sentinels of the packages below to HTTP. The first
// row whose target matches wins, so the more specific errors come first
// (fhirstore.ErrInvalidTenant before fhirstore.ErrInvalid). Errors no row
// matches are internal: 500, generic diagnostics, detail logged.
var errorTable = []errMapping{
	{auth.ErrUnauthenticated, http.StatusUnauthorized, "login", "error", ""},
	{auth.ErrForbidden, http.StatusForbidden, "forbidden", "error", ""},
	{fhir.ErrTooLarge, http.StatusRequestEntityTooLarge, "too-costly", "error", ""},
	{fhirstore.ErrInvalidTenant, http.StatusBadRequest, "invalid", "error", ""},
	{fhirstore.ErrInvalid, http.StatusBadRequest, "invalid", "error", ""},
	{fhir.ErrInvalid, http.StatusBadRequest, "invalid", "error", ""},
	{fhirstore.ErrNotFound, http.StatusNotFound, "not-found", "error", ""},
	{fhirstore.ErrGone, http.StatusGone, "deleted", "error", ""},
	{fhirstore.ErrVersionConflict, http.StatusConflict, "conflict", "error", ""},
	{fhirstore.ErrPreconditionFailed, http.StatusPreconditionFailed, "conflict", "error", ""},
	{fhirstore.ErrNotSupported, http.StatusNotImplemented, "not-supported", "error", ""},
	{storage.ErrConflict, http.StatusConflict, "conflict", "error", "a concurrent write to the same resource got in the way; retry the request"},
	{storage.ErrBucketNotFound, http.StatusServiceUnavailable, "transient", "error", "the storage bucket is missing; retry later"},
	{storage.ErrAccessDenied, http.StatusServiceUnavailable, "transient", "error", "the server may not access its storage; retry later"},
	{storage.ErrUnavailable, http.StatusServiceUnavailable, "transient", "error", "the storage is unavailable; retry later"},
	{context.DeadlineExceeded, http.StatusServiceUnavailable, "timeout", "error", "the storage did not answer in time; retry later"},
	// A key rejected by the storage layer comes from input the layers
	// above should have refused first; it is still the client's input.
	{storage.ErrInvalidKey, http.StatusBadRequest, "invalid", "error", ""},
}

// retryAfterSeconds is the Retry-After sent with 503.
const retryAfterSeconds = "5"

// statusClientClosed is logged when the client went away, and sent
// without a body in case it still reads (see writeError).
const statusClientClosed = 499

// classify returns the status, issue code and diagnostics for err.
func classify(err error) (status int, code, diagnostics string, internal bool) {
	var he *httpError
	if errors.As(err, &he) {
		return he.status, he.code, he.msg, false
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, "too-costly",
			fmt.Sprintf("the request body is larger than the limit of %d bytes", mbe.Limit), false
	}
	for _, m := range errorTable {
		if errors.Is(err, m.target) {
			d := err.Error()
			if m.generic != "" {
				d = m.generic
			}
			return m.status, m.code, d, m.status >= 500 && m.status != http.StatusNotImplemented
		}
	}
	return http.StatusInternalServerError, "exception", "internal server error", true
}

// writeError answers err as an OperationOutcome with the status from the
// table. It is the only place that turns errors into responses.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	ri := info(r)
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		// The client is gone: nobody reads a response. But a client that
		// only half-closed its connection would otherwise read net/http's
		// implicit "200 OK" for a request that failed, so send the status.
		ri.status, ri.err = statusClientClosed, err
		w.WriteHeader(statusClientClosed)
		return
	}
	status, code, diag, internal := classify(err)
	ri.status, ri.err = status, err
	if internal {
		diag = fmt.Sprintf("%s (request id %s)", diag, ri.id)
	}
	oo := fhir.OperationOutcome{ResourceType: "OperationOutcome"}
	var ve *fhir.ValidationError
	if !internal && errors.As(err, &ve) && len(ve.Issues) > 0 {
		oo.Issue = append(oo.Issue, fhir.OutcomeIssue{Severity: "error", Code: code, Diagnostics: diag})
		for _, vi := range ve.Issues {
			is := fhir.OutcomeIssue{Severity: "error", Code: vi.Code, Diagnostics: vi.Message}
			if is.Code == "" {
				is.Code = "invalid"
			}
			if vi.Path != "" {
				is.Expression = []string{vi.Path}
			}
			oo.Issue = append(oo.Issue, is)
		}
	} else {
		oo.Issue = []fhir.OutcomeIssue{{Severity: "error", Code: code, Diagnostics: diag}}
	}
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfterSeconds)
	}
	// Cached validators must not survive on an error answer.
	if status != http.StatusGone {
		w.Header().Del("ETag")
		w.Header().Del("Last-Modified")
	}
	w.Header().Del("Location")
	s.writeJSON(w, status, oo)
}

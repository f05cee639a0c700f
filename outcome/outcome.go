// Package outcome is the one table that says what an error means to a
// client: an HTTP status and an OperationOutcome (issue code, severity,
// diagnostics). The server answers requests with it, and Bundle entry
// responses and bulk per-line results use the same mapping, so an error
// reads the same wherever a client meets it. Nothing here writes to an
// http.ResponseWriter: headers and bodies are the caller's.
package outcome

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"fhirbucket/auth"
	"fhirbucket/bulk"
	"fhirbucket/bundle"
	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/index"
	"fhirbucket/storage"
)

// Error is a decision the server itself takes about a request (routing,
// content negotiation, parameters): it carries its status and issue code.
type Error struct {
	Status int    // HTTP status
	Code   string // FHIR issue-type code
	Msg    string // diagnostics
}

func (e *Error) Error() string { return e.Msg }

// Errorf returns an *Error with the formatted message as diagnostics.
func Errorf(status int, code, format string, args ...any) error {
	return &Error{Status: status, Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Rule is one row of the table.
type Rule struct {
	Target   error  // matched with errors.Is
	Status   int    // HTTP status
	Code     string // OperationOutcome issue.code
	Severity string
	// Generic, when set, replaces the error text in diagnostics: for
	// server-side failures whose detail (keys, endpoints) is for the log.
	Generic string
}

// table maps the sentinels of the packages below to statuses. The first
// row whose target matches wins, so the more specific errors come first
// (fhirstore.ErrInvalidTenant before fhirstore.ErrInvalid). Errors no row
// matches are internal: 500, generic diagnostics.
var table = []Rule{
	{auth.ErrUnauthenticated, http.StatusUnauthorized, "login", fhir.SeverityError, ""},
	{auth.ErrForbidden, http.StatusForbidden, "forbidden", fhir.SeverityError, ""},
	{fhir.ErrTooLarge, http.StatusRequestEntityTooLarge, "too-costly", fhir.SeverityError, ""},
	{fhirstore.ErrInvalidTenant, http.StatusBadRequest, "invalid", fhir.SeverityError, ""},
	{fhirstore.ErrInvalid, http.StatusBadRequest, "invalid", fhir.SeverityError, ""},
	{fhir.ErrInvalid, http.StatusBadRequest, "invalid", fhir.SeverityError, ""},
	{fhirstore.ErrNotFound, http.StatusNotFound, "not-found", fhir.SeverityError, ""},
	{fhirstore.ErrGone, http.StatusGone, "deleted", fhir.SeverityError, ""},
	{bundle.ErrTooMany, http.StatusRequestEntityTooLarge, "too-costly", fhir.SeverityError, ""},
	{bundle.ErrInvalid, http.StatusBadRequest, "invalid", fhir.SeverityError, ""},
	{bundle.ErrNotSupported, http.StatusNotImplemented, "not-supported", fhir.SeverityError, ""},
	{bundle.ErrClosed, http.StatusServiceUnavailable, "transient", fhir.SeverityError, "the server is shutting down; retry the transaction"},
	{index.ErrIncomplete, http.StatusServiceUnavailable, "incomplete", fhir.SeverityError,
		"the identifier index of this tenant is not known to be complete (it holds data written before the index existed): an operator must run `fhirbucket reindex` for it; nothing was written"},
	{index.ErrBusy, http.StatusConflict, "conflict", fhir.SeverityError, ""},
	{fhirstore.ErrTxInProgress, http.StatusConflict, "conflict", fhir.SeverityError, ""},
	{fhirstore.ErrVersionConflict, http.StatusConflict, "conflict", fhir.SeverityError, ""},
	{fhirstore.ErrPreconditionFailed, http.StatusPreconditionFailed, "conflict", fhir.SeverityError, ""},
	{fhirstore.ErrNotSupported, http.StatusNotImplemented, "not-supported", fhir.SeverityError, ""},
	{bulk.ErrJobNotFound, http.StatusNotFound, "not-found", fhir.SeverityError, ""},
	{bulk.ErrTooManyJobs, http.StatusTooManyRequests, "throttled", fhir.SeverityError, ""},
	{bulk.ErrPollTooFast, http.StatusTooManyRequests, "throttled", fhir.SeverityError, ""},
	{bulk.ErrInvalid, http.StatusBadRequest, "invalid", fhir.SeverityError, ""},
	{bulk.ErrNotSupported, http.StatusNotImplemented, "not-supported", fhir.SeverityError, ""},
	{storage.ErrConflict, http.StatusConflict, "conflict", fhir.SeverityError, "a concurrent write to the same resource got in the way; retry the request"},
	{storage.ErrBucketNotFound, http.StatusServiceUnavailable, "transient", fhir.SeverityError, "the storage bucket is missing; retry later"},
	{storage.ErrAccessDenied, http.StatusServiceUnavailable, "transient", fhir.SeverityError, "the server may not access its storage; retry later"},
	{storage.ErrUnavailable, http.StatusServiceUnavailable, "transient", fhir.SeverityError, "the storage is unavailable; retry later"},
	{context.DeadlineExceeded, http.StatusServiceUnavailable, "timeout", fhir.SeverityError, "the storage did not answer in time; retry later"},
	// A key rejected by the storage layer comes from input the layers
	// above should have refused first; it is still the client's input.
	{storage.ErrInvalidKey, http.StatusBadRequest, "invalid", fhir.SeverityError, ""},
}

// Result is what an error means to a client.
type Result struct {
	Status      int    // HTTP status
	Code        string // issue.code of the first issue
	Severity    string // issue.severity of the first issue
	Diagnostics string // issue.diagnostics of the first issue
	// Internal marks a failure of the server or its storage (a 5xx other
	// than 501): Diagnostics is then generic, and the error's detail
	// belongs in the log.
	Internal bool
	// Details are the issues after the first: one per finding of a
	// fhir.ValidationError the error carries.
	Details []fhir.OutcomeIssue
}

// Classify maps err: an *Error as it says, a request body over its limit
// as 413, then the first row of the table that err matches, else 500.
func Classify(err error) Result {
	var e *Error
	if errors.As(err, &e) {
		return Result{Status: e.Status, Code: e.Code, Severity: fhir.SeverityError, Diagnostics: e.Msg}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return Result{Status: http.StatusRequestEntityTooLarge, Code: "too-costly", Severity: fhir.SeverityError,
			Diagnostics: fmt.Sprintf("the request body is larger than the limit of %d bytes", mbe.Limit)}
	}
	for _, m := range table {
		if !errors.Is(err, m.Target) {
			continue
		}
		r := Result{Status: m.Status, Code: m.Code, Severity: m.Severity, Diagnostics: err.Error(),
			Internal: m.Status >= 500 && m.Status != http.StatusNotImplemented}
		if m.Generic != "" {
			r.Diagnostics = m.Generic
		}
		if ee := (*bundle.EntryError)(nil); (r.Internal || m.Generic != "") && errors.As(err, &ee) {
			// The detail is for the log, but which entry failed is the
			// client's to know.
			r.Diagnostics = ee.Where() + ": " + r.Diagnostics
		}
		var ve *fhir.ValidationError
		if !r.Internal && errors.As(err, &ve) && len(ve.Issues) > 0 {
			r.Details = fhir.NewValidationOutcome(ve).Issue
		}
		return r
	}
	return Result{Status: http.StatusInternalServerError, Code: "exception", Severity: fhir.SeverityError,
		Diagnostics: "internal server error", Internal: true}
}

// Outcome is r as an OperationOutcome: the first issue, then the details.
func (r Result) Outcome() *fhir.OperationOutcome {
	oo := fhir.NewOutcome(r.Severity, r.Code, r.Diagnostics)
	oo.Issue = append(oo.Issue, r.Details...)
	return oo
}

// Of is the status and OperationOutcome of err.
func Of(err error) (status int, oo *fhir.OperationOutcome) {
	r := Classify(err)
	return r.Status, r.Outcome()
}

package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"fhirbucket/fhirstore"
	"fhirbucket/outcome"
)

// retryAfterSeconds is the Retry-After sent with 503.
const retryAfterSeconds = "5"

// statusClientClosed is logged when the client went away, and sent
// without a body in case it still reads (see writeError).
const statusClientClosed = 499

// writeError answers err as an OperationOutcome with the status of the
// outcome table. It is the only place that turns errors into responses;
// what is HTTP about an error answer (Retry-After, dropped validators,
// the request id of an internal error) is decided here.
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
	res := outcome.Classify(err)
	ri.status, ri.err = res.Status, err
	if res.Internal {
		res.Diagnostics = fmt.Sprintf("%s (request id %s)", res.Diagnostics, ri.id)
	}
	switch {
	case res.Status == http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", retryAfterSeconds)
	case errors.Is(err, fhirstore.ErrTxInProgress):
		// The transaction holding the resource finishes within seconds,
		// or its lease runs out and any replica finishes it.
		w.Header().Set("Retry-After", "1")
	}
	// Cached validators must not survive on an error answer.
	if res.Status != http.StatusGone {
		w.Header().Del("ETag")
		w.Header().Del("Last-Modified")
	}
	w.Header().Del("Location")
	s.writeJSON(w, res.Status, res.Outcome())
}

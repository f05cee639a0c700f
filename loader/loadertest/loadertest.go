// Package loadertest is a fake FHIR batch/transaction endpoint over real
// HTTP for the tests of the loader and of the load command: it answers
// POST / with batch-response and transaction-response Bundles, records
// every request, measures how many were in flight at once, and lets a
// test script answers (429, 503, …) per request.
package loadertest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"fhirbucket/fhir"
)

// FailPrefix marks a resource the fake refuses: an entry whose resource
// id starts with it answers 422 in a batch, and fails a whole
// transaction with 400.
const FailPrefix = "bad"

// Request is one request the fake received.
type Request struct {
	Header  http.Header
	Type    string  // Bundle.type
	Entries []Entry // in order
	// Attempt counts requests with the same first entry (1 for the
	// first), so that a script can fail first attempts only.
	Attempt int
}

// Key is the request of the first entry ("PUT Patient/1"), or "" for an
// empty Bundle.
func (r Request) Key() string {
	if len(r.Entries) == 0 {
		return ""
	}
	return r.Entries[0].Method + " " + r.Entries[0].URL
}

// Entry is one entry of a request Bundle.
type Entry struct {
	Method, URL      string
	ResourceType, ID string
}

// Server is the fake. Set Script and Delay before the first request.
type Server struct {
	*httptest.Server
	// Script, when set, answers a request instead of the fake when it
	// returns a status other than 0 (with the given headers and an
	// OperationOutcome body).
	Script func(r Request) (status int, header http.Header)
	// Delay is how long each request is held before it is answered.
	Delay time.Duration

	mu          sync.Mutex
	reqs        []Request
	attempts    map[string]int
	inFlight    int
	maxInFlight int
}

// New starts a fake; it is closed by Close.
func New() *Server { return NewWith(nil) }

// NewWith starts a fake whose handler is wrapped by wrap (nil: none),
// for faults below HTTP such as dropped connections.
func NewWith(wrap func(http.Handler) http.Handler) *Server {
	s := &Server{attempts: map[string]int{}}
	var h http.Handler = http.HandlerFunc(s.serve)
	if wrap != nil {
		h = wrap(h)
	}
	s.Server = httptest.NewServer(h)
	return s
}

// Requests returns the requests received so far, in arrival order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// MaxInFlight is the most requests that were being handled at once.
func (s *Server) MaxInFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxInFlight
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/" {
		writeOutcome(w, http.StatusNotFound, nil, "only POST / is served here")
		return
	}
	s.mu.Lock()
	s.inFlight++
	s.maxInFlight = max(s.maxInFlight, s.inFlight)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	b, err := fhir.ParseBundle(body)
	if err != nil {
		writeOutcome(w, http.StatusBadRequest, nil, err.Error())
		return
	}
	req := Request{Header: r.Header.Clone(), Type: b.Type}
	for _, e := range b.Entry {
		var head struct{ ResourceType, ID string }
		_ = json.Unmarshal(e.Resource, &head)
		en := Entry{ResourceType: head.ResourceType, ID: head.ID}
		if e.Request != nil {
			en.Method, en.URL = e.Request.Method, e.Request.URL
		}
		req.Entries = append(req.Entries, en)
	}
	s.mu.Lock()
	s.attempts[req.Key()]++
	req.Attempt = s.attempts[req.Key()]
	s.reqs = append(s.reqs, req)
	s.mu.Unlock()

	if s.Delay > 0 {
		time.Sleep(s.Delay)
	}
	if s.Script != nil {
		if status, h := s.Script(req); status != 0 {
			writeOutcome(w, status, h, fmt.Sprintf("scripted %d", status))
			return
		}
	}
	if b.Type != fhir.BundleBatch && b.Type != fhir.BundleTransaction {
		writeOutcome(w, http.StatusBadRequest, nil, "Bundle.type must be batch or transaction")
		return
	}
	out := fhir.Bundle{ResourceType: "Bundle", Type: b.Type + "-response"}
	for i, e := range req.Entries {
		resp := &fhir.BundleEntryResponse{Status: "201 Created"}
		if e.Method == http.MethodPut {
			resp.Status = "200 OK"
		}
		if strings.HasPrefix(e.ID, FailPrefix) {
			msg := fmt.Sprintf("entry %d: %s/%s is refused", i, e.ResourceType, e.ID)
			if b.Type == fhir.BundleTransaction {
				writeOutcome(w, http.StatusBadRequest, nil, "transaction failed: "+msg)
				return
			}
			oo, _ := fhir.Marshal(fhir.NewOutcome(fhir.SeverityError, "processing", msg))
			resp = &fhir.BundleEntryResponse{Status: "422 Unprocessable Entity", Outcome: oo}
		}
		out.Entry = append(out.Entry, fhir.BundleEntry{Response: resp})
	}
	w.Header().Set("Content-Type", "application/fhir+json")
	_ = fhir.Encode(w, out)
}

func writeOutcome(w http.ResponseWriter, status int, h http.Header, diagnostics string) {
	for k, v := range h {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/fhir+json")
	w.WriteHeader(status)
	_ = fhir.Encode(w, fhir.NewOutcome(fhir.SeverityError, "processing", diagnostics))
}

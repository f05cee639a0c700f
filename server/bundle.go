package server

// Batch and transaction Bundles (POST to the base).
//
// Every entry is processed as the single interaction it names: a batch
// entry, and a transaction's GET and HEAD entries, are dispatched through
// the same route table, handlers and access checks as a request of their
// own (in-process, without a network round trip), so an entry answers
// exactly what the interaction would. A transaction's writes go through
// the journal of package bundle instead, all or nothing.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"fhirbucket/auth"
	"fhirbucket/bundle"
	"fhirbucket/fhir"
	"fhirbucket/outcome"
)

// Transactions commits transaction plans; *bundle.Transactor satisfies it.
type Transactions interface {
	Commit(ctx context.Context, tenant string, p *bundle.Plan) ([]bundle.Written, error)
}

// BundleConfig enables batch and transaction Bundles.
type BundleConfig struct {
	// Transactions commits transactions (required).
	Transactions Transactions
	// Validator checks every POST and PUT resource of a Bundle before
	// anything is written (required).
	Validator *fhir.Validator
	// MaxEntries bounds the entries of one Bundle (413 above). Default
	// bundle.DefaultMaxEntries.
	MaxEntries int
	// Parallelism bounds the batch entries processed at a time. Default
	// DefaultBatchParallelism.
	Parallelism int
}

// DefaultBatchParallelism is the default of BundleConfig.Parallelism.
const DefaultBatchParallelism = 16

// batch answers POST to the base: a batch, transaction or history Bundle.
func (s *Server) batch(w http.ResponseWriter, r *http.Request) {
	if s.bundles == nil {
		s.writeError(w, r, outcome.Errorf(http.StatusNotImplemented, "not-supported", "batch and transaction Bundles are not supported by this server; nothing was written"))
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ri := info(r)
	plan, err := bundle.NewPlan(body, bundle.Options{Base: ri.base, Validator: s.bundles.Validator, MaxEntries: s.bundles.MaxEntries})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	prefer := r.Header.Values("Prefer")
	if plan.Transaction {
		s.transaction(w, r, plan, prefer)
		return
	}
	out := &fhir.Bundle{ResourceType: "Bundle", Type: plan.ResponseType(), Entry: make([]fhir.BundleEntry, len(plan.Entries))}
	sem := make(chan struct{}, s.bundles.Parallelism)
	var wg sync.WaitGroup
	// The processing order of a transaction, though a batch's entries may
	// not depend on each other: a batch that deletes and reads the same
	// resource reads after the delete.
	for _, phase := range phasesWithErrors(plan) {
		for _, e := range phase {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				out.Entry[e.Index] = s.entryResult(r, e, prefer)
			}()
		}
		wg.Wait()
	}
	s.writeJSON(w, http.StatusOK, out)
}

// phasesWithErrors is plan.Phases with the entries that failed planning
// first (they need no I/O).
func phasesWithErrors(plan *bundle.Plan) [][]*bundle.Entry {
	var failed []*bundle.Entry
	for _, e := range plan.Entries {
		if e.Err != nil {
			failed = append(failed, e)
		}
	}
	return append([][]*bundle.Entry{failed}, plan.Phases()...)
}

// transaction answers a transaction Bundle: every write entry is
// authorized before anything is written, the writes are committed all or
// nothing, then the GET and HEAD entries are answered (they see the
// transaction's writes).
func (s *Server) transaction(w http.ResponseWriter, r *http.Request, plan *bundle.Plan, prefer []string) {
	phases := plan.Phases()
	for _, ph := range []bundle.Phase{bundle.PhaseDelete, bundle.PhaseCreate, bundle.PhaseUpdate, bundle.PhaseRead} {
		for _, e := range phases[ph] {
			if err := s.authorizeEntry(r, e); err != nil {
				s.writeError(w, r, &bundle.EntryError{Index: e.Index, FullURL: e.FullURL, Err: err})
				return
			}
		}
	}
	claims, err := s.resolveTransaction(r.Context(), info(r).tenant, plan)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	written, err := s.bundles.Transactions.Commit(r.Context(), info(r).tenant, plan)
	if err != nil {
		// The transaction's creates may still land (an outcome not
		// known): the claims expire rather than name new ids.
		claims.Abandon()
		s.writeError(w, r, err)
		return
	}
	claims.Release(r.Context())
	out := &fhir.Bundle{ResourceType: "Bundle", Type: plan.ResponseType(), Entry: make([]fhir.BundleEntry, len(plan.Entries))}
	representation := preferRepresentation(prefer)
	base := info(r).base
	for _, wr := range written {
		out.Entry[wr.Entry.Index] = writtenEntry(base, wr, representation)
	}
	for _, e := range phases[bundle.PhaseRead] {
		out.Entry[e.Index] = s.entryResult(r, e, prefer)
	}
	s.writeJSON(w, http.StatusOK, out)
}

// writtenEntry is the response entry of a committed write.
func writtenEntry(base string, wr bundle.Written, representation bool) fhir.BundleEntry {
	res := wr.Resource
	if res == nil { // a DELETE of nothing
		return fhir.BundleEntry{Response: &fhir.BundleEntryResponse{Status: "204 No Content"}}
	}
	status := "200 OK"
	switch {
	case res.Deleted():
		status = "204 No Content"
	case wr.Created:
		status = "201 Created"
	}
	be := fhir.BundleEntry{Response: &fhir.BundleEntryResponse{
		Status: status, Location: res.Type + "/" + res.ID + "/_history/" + res.VersionID(),
		Etag: res.ETag(), LastModified: fhir.FormatInstant(res.LastModified),
	}}
	if !res.Deleted() {
		be.FullURL = base + "/" + res.Type + "/" + res.ID
		if representation {
			be.Resource = res.Content
		}
	}
	return be
}

// preferRepresentation: Bundle write entries carry their resource only
// with Prefer: return=representation (a transaction of 900 entries would
// otherwise send every resource back).
func preferRepresentation(prefer []string) bool {
	r := &http.Request{Header: http.Header{"Prefer": prefer}}
	return parsePrefer(r).ret == "representation"
}

// entryRequest builds the single request an entry stands for, relative to
// the tenant's base as the mux sees it.
func entryRequest(parent *http.Request, e *bundle.Entry, prefer []string) *http.Request {
	var path string
	switch e.Interaction {
	case bundle.Read, bundle.Update, bundle.Delete:
		path = "/" + url.PathEscape(e.Type) + "/" + url.PathEscape(e.ID)
	case bundle.VRead:
		path = "/" + url.PathEscape(e.Type) + "/" + url.PathEscape(e.ID) + "/_history/" + url.PathEscape(e.VersionID)
	case bundle.HistoryInstance:
		path = "/" + url.PathEscape(e.Type) + "/" + url.PathEscape(e.ID) + "/_history"
	case bundle.HistoryType:
		path = "/" + url.PathEscape(e.Type) + "/_history"
	case bundle.HistorySystem:
		path = "/_history"
	case bundle.SearchType, bundle.Create, bundle.ConditionalUpdate, bundle.ConditionalDelete:
		path = "/" + url.PathEscape(e.Type)
	case bundle.Capabilities:
		path = "/metadata"
	default:
		path = "/"
	}
	u := &url.URL{Path: path, RawQuery: e.Query.Encode()}
	if up, err := url.PathUnescape(path); err == nil {
		u.Path, u.RawPath = up, path
	}
	method := e.Method
	sub := (&http.Request{Method: method, URL: u, Header: http.Header{}, Host: parent.Host, TLS: parent.TLS,
		RemoteAddr: parent.RemoteAddr, Proto: parent.Proto, ProtoMajor: parent.ProtoMajor, ProtoMinor: parent.ProtoMinor}).WithContext(parent.Context())
	sub.RequestURI = u.RequestURI()
	sub.Header.Set("Accept", fhirJSON)
	if len(prefer) > 0 {
		sub.Header["Prefer"] = prefer
	} else if e.Interaction == bundle.ConditionalUpdate {
		// The entry names the resource the criteria matched: only the
		// body says which (entryResult drops it again).
		sub.Header.Set("Prefer", "return=representation")
	} else if method == http.MethodPost || method == http.MethodPut {
		sub.Header.Set("Prefer", "return=minimal")
	}
	if e.IfMatch != "" {
		sub.Header.Set("If-Match", e.IfMatch)
	}
	if e.IfNoneExist != "" {
		sub.Header.Set("If-None-Exist", e.IfNoneExist)
	}
	if e.IfNoneMatch != "" {
		sub.Header.Set("If-None-Match", e.IfNoneMatch)
	}
	if !e.IfModifiedSince.IsZero() {
		sub.Header.Set("If-Modified-Since", e.IfModifiedSince.UTC().Format(http.TimeFormat))
	}
	if e.Resource != nil {
		sub.Header.Set("Content-Type", fhirJSON)
		sub.ContentLength = int64(len(e.Resource))
		sub.Body = bodyOf(e.Resource)
	}
	return sub
}

// authorizeEntry checks that the caller may run the entry's interaction
// (the row its request matches).
func (s *Server) authorizeEntry(parent *http.Request, e *bundle.Entry) error {
	if s.auth == nil {
		return nil
	}
	sub := entryRequest(parent, e, nil)
	_, pattern := s.mux.Handler(sub)
	rt := s.routed[pattern]
	if rt == nil {
		return outcome.Errorf(http.StatusBadRequest, "invalid", "%s %s names no FHIR interaction", e.Method, sub.URL.Path)
	}
	if rt.interaction.Need().Public {
		return nil
	}
	ri := info(parent)
	if ri.principal == nil {
		return fmt.Errorf("%w: %s", auth.ErrUnauthenticated, errNoPrincipal)
	}
	return ri.principal.Authorize(ri.tenant, rt.interaction, e.Type)
}

// entryResult processes one entry as its single interaction and turns the
// answer into a response entry.
func (s *Server) entryResult(parent *http.Request, e *bundle.Entry, prefer []string) fhir.BundleEntry {
	if e.Err != nil {
		return errorEntry(e.Err)
	}
	if err := s.resolveBatchEntry(parent.Context(), info(parent).tenant, e); err != nil {
		return errorEntry(err)
	}
	sub := entryRequest(parent, e, prefer)
	ri := *info(parent) // each entry records its own status
	ri.status, ri.err = 0, nil
	sub = sub.WithContext(context.WithValue(sub.Context(), ctxKey{}, &ri))
	rec := newEntryRecorder()
	if _, pattern := s.mux.Handler(sub); s.routed[pattern] == nil {
		return errorEntry(outcome.Errorf(http.StatusNotFound, "not-found", "no FHIR interaction at %s %s", e.Method, sub.URL.Path))
	}
	s.mux.ServeHTTP(rec, sub)
	be := rec.entry(info(parent).base)
	if be.Response.Location == "" && rec.code < 300 && (e.Interaction == bundle.Update || e.Interaction == bundle.Delete) {
		// A write's entry names the version it wrote, also when the
		// single interaction sends no Location (an update, a delete).
		if v, ok := strings.CutPrefix(be.Response.Etag, `W/"`); ok && strings.HasSuffix(v, `"`) {
			be.Response.Location = e.Type + "/" + e.ID + "/_history/" + strings.TrimSuffix(v, `"`)
		}
	}
	if e.Interaction == bundle.ConditionalUpdate && rec.code < 300 {
		if v, ok := strings.CutPrefix(be.Response.Etag, `W/"`); ok && be.Response.Location == "" && be.Resource != nil {
			if _, id, err := fhir.Peek(be.Resource); err == nil && id != "" {
				be.Response.Location = e.Type + "/" + id + "/_history/" + strings.TrimSuffix(v, `"`)
			}
		}
		if len(prefer) == 0 {
			be.Resource = nil // asked for by entryRequest, not by the client
		}
	}
	return be
}

// errorEntry is the response entry of an entry that failed.
func errorEntry(err error) fhir.BundleEntry {
	status, oo := outcome.Of(err)
	data, _ := fhir.Marshal(oo)
	return fhir.BundleEntry{Response: &fhir.BundleEntryResponse{Status: statusLine(status), Outcome: data}}
}

func statusLine(code int) string { return strconv.Itoa(code) + " " + http.StatusText(code) }

// entryRecorder captures a handler's answer to an entry's request.
type entryRecorder struct {
	h    http.Header
	code int
	body strings.Builder
}

func newEntryRecorder() *entryRecorder { return &entryRecorder{h: http.Header{}} }

func (rec *entryRecorder) Header() http.Header { return rec.h }
func (rec *entryRecorder) WriteHeader(code int) {
	if rec.code == 0 {
		rec.code = code
	}
}
func (rec *entryRecorder) Write(p []byte) (int, error) {
	if rec.code == 0 {
		rec.code = http.StatusOK
	}
	return rec.body.Write(p)
}

// entry turns the recorded answer into a response entry: the status line,
// Location (relative, Type/id/_history/vid), ETag and Last-Modified as
// the Bundle wants them, and the body as the resource, or as the outcome
// of a failure.
func (rec *entryRecorder) entry(base string) fhir.BundleEntry {
	code := rec.code
	if code == 0 {
		code = http.StatusOK
	}
	resp := &fhir.BundleEntryResponse{Status: statusLine(code), Etag: rec.h.Get("ETag")}
	if loc := rec.h.Get("Location"); loc != "" {
		resp.Location = strings.TrimPrefix(loc, base+"/")
	}
	if lm := rec.h.Get("Last-Modified"); lm != "" {
		if t, err := http.ParseTime(lm); err == nil {
			resp.LastModified = fhir.FormatInstant(t)
		}
	}
	be := fhir.BundleEntry{Response: resp}
	body := []byte(strings.TrimSpace(rec.body.String()))
	if len(body) == 0 {
		return be
	}
	if code >= 400 {
		resp.Outcome = body
		return be
	}
	be.Resource = body
	if typ, id, err := fhir.Peek(body); err == nil && id != "" && typ != "OperationOutcome" && typ != "Bundle" {
		be.FullURL = base + "/" + typ + "/" + id
	}
	return be
}

func bodyOf(data []byte) io.ReadCloser { return io.NopCloser(bytes.NewReader(data)) }

package server

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/index"
	"fhirbucket/outcome"
)

// checkType validates the {type} path segment: an operation ("$name")
// answers 501, an unknown type 404 (as FHIR http.html lists for create).
func checkType(typ string) error {
	if strings.HasPrefix(typ, "$") {
		return outcome.Errorf(http.StatusNotImplemented, "not-supported", "operation %s is not supported by this server", typ)
	}
	if !fhir.IsResourceType(typ) {
		return outcome.Errorf(http.StatusNotFound, "not-supported", "%q is not a FHIR R4 resource type (names are case-sensitive, e.g. Patient)", typ)
	}
	return nil
}

// checkID validates an {id} segment: an operation answers 501, an id that
// breaks the FHIR id rules 400.
func checkID(typ, id string) error {
	if strings.HasPrefix(id, "$") {
		return outcome.Errorf(http.StatusNotImplemented, "not-supported", "operation %s on %s is not supported by this server", id, typ)
	}
	if !fhir.ValidID(id) {
		return outcome.Errorf(http.StatusBadRequest, "invalid", "%q is not a valid FHIR id: use 1 to 64 characters from A-Z a-z 0-9 - .", id)
	}
	return nil
}

// typeAndID reads and checks {type} and {id}.
func typeAndID(r *http.Request) (typ, id string, err error) {
	typ, id = r.PathValue("type"), r.PathValue("id")
	if err := checkType(typ); err != nil {
		return "", "", err
	}
	if err := checkID(typ, id); err != nil {
		return "", "", err
	}
	return typ, id, nil
}

// readBody checks the Content-Type and reads the body, up to the limit.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if err := checkContentType(r); err != nil {
		return nil, err
	}
	if r.ContentLength > s.maxBody {
		return nil, outcome.Errorf(http.StatusRequestEntityTooLarge, "too-costly", "the request body is %d bytes, larger than the limit of %d bytes", r.ContentLength, s.maxBody)
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, err
		}
		if ctxErr := r.Context().Err(); ctxErr != nil {
			return nil, ctxErr
		}
		return nil, outcome.Errorf(http.StatusBadRequest, "structure", "reading the request body: %v", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, outcome.Errorf(http.StatusBadRequest, "required", "the request body is empty; send a FHIR resource in JSON")
	}
	return data, nil
}

// writeOptions parses If-Match.
func writeOptions(r *http.Request) (fhirstore.WriteOptions, error) {
	var opts fhirstore.WriteOptions
	vals := r.Header.Values("If-Match")
	if len(vals) == 0 {
		return opts, nil
	}
	m, err := fhirstore.ParseIfMatch(strings.Join(vals, ","))
	if err != nil {
		return opts, err
	}
	opts.IfMatch = m
	return opts, nil
}

// versionURL is the Location of one version.
func versionURL(base string, res *fhirstore.Resource) string {
	return base + "/" + res.Type + "/" + res.ID + "/_history/" + res.VersionID()
}

// writeResult answers a successful create or update according to Prefer.
func (s *Server) writeResult(w http.ResponseWriter, r *http.Request, status int, res *fhirstore.Resource, created bool) {
	setVersionHeaders(w, res)
	if created {
		w.Header().Set("Location", versionURL(info(r).base, res))
	}
	switch parsePrefer(r).ret {
	case "minimal":
		w.WriteHeader(status)
	case "OperationOutcome":
		what := "updated"
		if created {
			what = "created"
		}
		s.writeJSON(w, status, fhir.OperationOutcome{ResourceType: "OperationOutcome", Issue: []fhir.OutcomeIssue{{
			Severity: "information", Code: "informational",
			Diagnostics: fmt.Sprintf("%s/%s %s as version %s", res.Type, res.ID, what, res.VersionID()),
		}}})
	default:
		s.writeBody(w, status, res.Content)
	}
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	typ := r.PathValue("type")
	if err := checkType(typ); err != nil {
		s.writeError(w, r, err)
		return
	}
	if vals := r.Header.Values("If-None-Exist"); len(vals) > 0 {
		s.conditionalCreate(w, r, typ, vals)
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	res, err := s.store.Create(r.Context(), info(r).tenant, typ, body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeResult(w, r, http.StatusCreated, res, true)
}

func (s *Server) update(w http.ResponseWriter, r *http.Request) {
	typ, id, err := typeAndID(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if r.Header.Get("If-None-Exist") != "" {
		s.writeError(w, r, errIfNoneExistOnPut)
		return
	}
	opts, err := writeOptions(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	res, created, err := s.store.Update(r.Context(), info(r).tenant, typ, id, body, opts)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	s.writeResult(w, r, status, res, created)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	typ, id, err := typeAndID(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	opts, err := writeOptions(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	res, err := s.store.Delete(r.Context(), info(r).tenant, typ, id, opts)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if res != nil {
		// The tombstone's tag lets a client revive the resource with If-Match.
		w.Header().Set("ETag", res.ETag())
	}
	if parsePrefer(r).ret == "OperationOutcome" {
		msg := fmt.Sprintf("%s/%s was not present or already deleted; nothing changed", typ, id)
		if res != nil {
			msg = fmt.Sprintf("%s/%s deleted as version %s", typ, id, res.VersionID())
		}
		s.writeJSON(w, http.StatusOK, fhir.OperationOutcome{ResourceType: "OperationOutcome", Issue: []fhir.OutcomeIssue{{
			Severity: "information", Code: "informational", Diagnostics: msg,
		}}})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) read(w http.ResponseWriter, r *http.Request) {
	typ, id, err := typeAndID(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	res, err := s.store.Read(r.Context(), info(r).tenant, typ, id)
	s.writeVersion(w, r, res, err)
}

func (s *Server) vread(w http.ResponseWriter, r *http.Request) {
	typ, id, err := typeAndID(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	vid := r.PathValue("vid")
	if !fhir.ValidID(vid) {
		s.writeError(w, r, outcome.Errorf(http.StatusBadRequest, "invalid", "%q is not a valid version id", vid))
		return
	}
	res, err := s.store.VRead(r.Context(), info(r).tenant, typ, id, vid)
	s.writeVersion(w, r, res, err)
}

// writeVersion answers a read or vread, honouring If-None-Match and
// If-Modified-Since (conditional read).
func (s *Server) writeVersion(w http.ResponseWriter, r *http.Request, res *fhirstore.Resource, err error) {
	if err != nil {
		if res != nil && errors.Is(err, fhirstore.ErrGone) {
			setVersionHeaders(w, res)
		}
		s.writeError(w, r, err)
		return
	}
	setVersionHeaders(w, res)
	if notModified(r, res) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	s.writeBody(w, http.StatusOK, res.Content)
}

// notModified applies RFC 9110 §13.2.2: If-None-Match, when present,
// decides alone; else If-Modified-Since compares at one-second precision.
func notModified(r *http.Request, res *fhirstore.Resource) bool {
	if inm := r.Header.Values("If-None-Match"); len(inm) > 0 {
		return etagMatches(strings.Join(inm, ","), res.ETag())
	}
	if ims := r.Header.Get("If-Modified-Since"); ims != "" && !res.LastModified.IsZero() {
		t, err := http.ParseTime(ims)
		if err != nil {
			return false // an unparsable date is ignored (RFC 9110)
		}
		return !res.LastModified.Truncate(time.Second).After(t)
	}
	return false
}

// postInstance answers POST /{type}/{id}: an instance operation, or a
// method FHIR does not define on an instance.
func (s *Server) postInstance(w http.ResponseWriter, r *http.Request) {
	typ, id := r.PathValue("type"), r.PathValue("id")
	if err := checkType(typ); err != nil {
		s.writeError(w, r, err)
		return
	}
	if strings.HasPrefix(id, "$") {
		s.writeError(w, r, checkID(typ, id))
		return
	}
	w.Header().Set("Allow", "GET, HEAD, PUT, DELETE")
	s.writeError(w, r, outcome.Errorf(http.StatusMethodNotAllowed, "not-supported", "POST is not allowed on %s/%s: create with POST /%s, update with PUT", typ, id, typ))
}

// searchByPost answers POST /{type}/_search.
func (s *Server) searchByPost(w http.ResponseWriter, r *http.Request) {
	typ := r.PathValue("type")
	if err := checkType(typ); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeError(w, r, outcome.Errorf(http.StatusNotImplemented, "not-supported", "search by POST is not supported; use GET /%s?…", typ))
}

var errIfNoneExistOnPut = outcome.Errorf(http.StatusBadRequest, "invalid", "If-None-Exist applies to create (POST) only; for a conditional update use PUT [type]?identifier=…; nothing was written")

// criteria parses the criteria of a conditional interaction: 501 when the
// server has no index, 400/501 for criteria the index cannot answer.
func (s *Server) criteria(what, query string) (index.Criteria, error) {
	if s.index == nil {
		return index.Criteria{}, outcome.Errorf(http.StatusNotImplemented, "not-supported",
			"conditional %s is not supported: this server runs without the identifier index; nothing was written", what)
	}
	return index.ParseCriteria(query)
}

// conditionalCreate answers POST with If-None-Exist: 201 when nothing
// matched and the resource was created, 200 with the one match (nothing
// written), 412 for several.
func (s *Server) conditionalCreate(w http.ResponseWriter, r *http.Request, typ string, vals []string) {
	if len(vals) != 1 {
		s.writeError(w, r, outcome.Errorf(http.StatusBadRequest, "invalid", "If-None-Exist is given %d times; give it once", len(vals)))
		return
	}
	c, err := s.criteria("create (If-None-Exist)", strings.TrimPrefix(strings.TrimSpace(vals[0]), "?"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	res, created, err := s.index.CreateIfNoneExist(r.Context(), info(r).tenant, typ, c, body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	s.writeResult(w, r, status, res, created)
}

// conditionalWrite answers PUT and DELETE on a type: conditional update
// and conditional delete (single) by identifier.
func (s *Server) conditionalWrite(w http.ResponseWriter, r *http.Request) {
	typ := r.PathValue("type")
	if err := checkType(typ); err != nil {
		s.writeError(w, r, err)
		return
	}
	what := "update (PUT [type]?criteria)"
	if r.Method == http.MethodDelete {
		what = "delete (DELETE [type]?criteria)"
	}
	if r.Header.Get("If-None-Exist") != "" && r.Method == http.MethodPut {
		s.writeError(w, r, errIfNoneExistOnPut)
		return
	}
	c, err := s.criteria(what, r.URL.RawQuery)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	opts, err := writeOptions(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ri := info(r)
	if r.Method == http.MethodDelete {
		res, err := s.index.ConditionalDelete(r.Context(), ri.tenant, typ, c, opts.IfMatch)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if res != nil {
			w.Header().Set("ETag", res.ETag())
		}
		if parsePrefer(r).ret == "OperationOutcome" {
			msg := fmt.Sprintf("no %s matched; nothing changed", typ)
			if res != nil {
				msg = fmt.Sprintf("%s/%s deleted as version %d", typ, res.ID, res.Version)
			}
			s.writeJSON(w, http.StatusOK, fhir.OperationOutcome{ResourceType: "OperationOutcome", Issue: []fhir.OutcomeIssue{{
				Severity: "information", Code: "informational", Diagnostics: msg,
			}}})
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	body, err := s.readBody(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	res, created, err := s.index.ConditionalUpdate(r.Context(), ri.tenant, typ, c, body, opts.IfMatch)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	s.writeResult(w, r, status, res, created)
}

// searchSystem answers GET on the base (search across all types).
func (s *Server) searchSystem(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, outcome.Errorf(http.StatusNotImplemented, "not-supported", "search across all resource types is not supported; search one type (GET /Patient) or read the system history (GET /_history)"))
}

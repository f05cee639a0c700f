package server

import (
	"encoding/base64"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/index"
	"fhirbucket/outcome"
)

// cursorParam carries the store's opaque paging cursor in next links.
const cursorParam = "_cursor"

// MaxCount is the largest page a client gets; a larger _count is lowered
// to it (FHIR lets the server return fewer than asked, never more).
const MaxCount = 1000

// params are the checked query parameters of a search or history request.
type params struct {
	count        int           // 0: the store's default
	cursor       string        // opaque
	since        time.Time     // history only
	ids          []string      // search only
	tokens       []index.Token // identifier (search only)
	summaryCount bool
	kept         url.Values // what the self link repeats
}

// paramRule says what one known parameter is allowed on.
const (
	onSearch  = 1 << iota // GET /{type}
	onHistory             // the three history levels
)

var knownParams = map[string]int{
	"_count":    onSearch | onHistory,
	cursorParam: onSearch | onHistory,
	"_format":   onSearch | onHistory,
	"_pretty":   onSearch | onHistory,
	"_since":    onHistory,
	"_id":       onSearch,
	"_summary":  onSearch,
	// identifier needs the index: searchType answers 501 without one.
	"identifier": onSearch,
}

// parseParams checks the query of a search (kind onSearch) or history
// (onHistory) request. Unknown parameters answer 501 not-supported unless
// the client sent Prefer: handling=lenient; then they are ignored and left
// out of the self link. Malformed values of known parameters answer 400
// whatever the handling.
func parseParams(r *http.Request, kind int) (params, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return params{}, outcome.Errorf(http.StatusBadRequest, "invalid", "the query string cannot be parsed: %v", err)
	}
	lenient := parsePrefer(r).lenient
	p := params{kept: url.Values{}}
	for name, vals := range q {
		if kind == onHistory && (name == "_at" || name == "_list") {
			return p, outcome.Errorf(http.StatusNotImplemented, "not-supported", "history parameter %s is not supported; use _since and _count", name)
		}
		if knownParams[name]&kind == 0 {
			if lenient {
				continue
			}
			what := "search"
			if kind == onHistory {
				what = "history"
			}
			return p, outcome.Errorf(http.StatusNotImplemented, "not-supported",
				"%s parameter %q is not supported (supported: %s); send Prefer: handling=lenient to have unknown parameters ignored", what, name, supportedList(kind))
		}
		if len(vals) != 1 {
			return p, outcome.Errorf(http.StatusBadRequest, "invalid", "parameter %s is given %d times; give it once", name, len(vals))
		}
		p.kept[name] = vals
	}
	if v, ok := q["_count"]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v[0]))
		if err != nil || n < 1 {
			return p, outcome.Errorf(http.StatusBadRequest, "invalid", "_count %q must be a positive integer", v[0])
		}
		p.count = min(n, MaxCount)
	}
	if v, ok := q[cursorParam]; ok {
		if v[0] == "" {
			return p, outcome.Errorf(http.StatusBadRequest, "invalid", "%s is empty; follow the next link as given", cursorParam)
		}
		p.cursor = v[0]
	}
	if v, ok := q["_since"]; ok {
		t, err := fhir.ParseInstant(v[0])
		if err != nil {
			return p, outcome.Errorf(http.StatusBadRequest, "invalid", "_since %q must be a FHIR instant such as 2024-01-31T12:00:00Z: %v", v[0], err)
		}
		p.since = t
	}
	if v, ok := q["_summary"]; ok {
		if v[0] != "count" {
			if !lenient {
				return p, outcome.Errorf(http.StatusNotImplemented, "not-supported", "_summary=%s is not supported; only _summary=count is", v[0])
			}
			p.kept.Del("_summary")
		} else {
			p.summaryCount = true
		}
	}
	if vals, ok := q["_id"]; ok {
		if p.ids, err = index.ParseIDs(vals[0]); err != nil {
			return p, err
		}
	}
	if vals, ok := q["identifier"]; ok {
		if len(vals[0]) > index.MaxCriteriaBytes {
			return p, outcome.Errorf(http.StatusBadRequest, "invalid", "identifier is %d bytes long; at most %d are allowed", len(vals[0]), index.MaxCriteriaBytes)
		}
		if p.tokens, err = index.ParseTokens(vals[0]); err != nil {
			return p, err
		}
	}
	return p, nil
}

func supportedList(kind int) string {
	if kind == onHistory {
		return "_count, _since, _format"
	}
	return "_id, identifier, _count, _summary=count, _format"
}

// links returns the self link and, when next is set, the next link: the
// request's base URL and path with the kept parameters, the next one with
// the cursor replaced.
func links(base, path string, kept url.Values, next string) []fhir.BundleLink {
	self := base + path
	if len(kept) > 0 {
		self += "?" + kept.Encode()
	}
	out := []fhir.BundleLink{{Relation: "self", URL: self}}
	if next != "" {
		nq := url.Values{}
		for k, v := range kept {
			nq[k] = v
		}
		nq.Set(cursorParam, next)
		out = append(out, fhir.BundleLink{Relation: "next", URL: base + path + "?" + nq.Encode()})
	}
	return out
}

func (s *Server) newBundle(typ string) *fhir.Bundle {
	return &fhir.Bundle{ResourceType: "Bundle", ID: newID(16), Meta: &fhir.Meta{LastUpdated: fhir.FormatInstant(s.now())}, Type: typ}
}

func (s *Server) searchType(w http.ResponseWriter, r *http.Request) {
	typ := r.PathValue("type")
	if err := checkType(typ); err != nil {
		s.writeError(w, r, err)
		return
	}
	p, err := parseParams(r, onSearch)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ri := info(r)
	if len(p.tokens) > 0 {
		s.searchIdentifier(w, r, typ, p)
		return
	}
	b := s.newBundle(fhir.BundleSearchset)
	if p.summaryCount {
		var n int
		if len(p.ids) > 0 {
			n, err = s.countIDs(r, typ, p.ids)
		} else {
			n, err = s.store.Count(r.Context(), ri.tenant, typ)
		}
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		b.Total = &n
		b.Link = links(ri.base, "/"+typ, p.kept, "")
		s.writeJSON(w, http.StatusOK, b)
		return
	}
	page, err := s.store.List(r.Context(), ri.tenant, typ, fhirstore.ListQuery{Count: p.count, Cursor: p.cursor, IDs: p.ids})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	for _, res := range page.Resources {
		b.Entry = append(b.Entry, fhir.BundleEntry{
			FullURL:  ri.base + "/" + res.Type + "/" + res.ID,
			Resource: res.Content,
			Search:   &fhir.BundleEntrySearch{Mode: "match"},
		})
	}
	if len(p.ids) > 0 && page.Next == "" && p.cursor == "" {
		// An _id search reads every id: the total is known.
		n := len(page.Resources)
		b.Total = &n
	}
	b.Link = links(ri.base, "/"+typ, p.kept, page.Next)
	s.writeJSON(w, http.StatusOK, b)
}

// identifierCursor prefixes the cursor of an identifier search: the last
// id of the previous page.
const identifierCursor = "i1:"

// searchIdentifier answers a search with identifier (and maybe _id): the
// index's matches in id order, paged by the last id, with the total.
func (s *Server) searchIdentifier(w http.ResponseWriter, r *http.Request, typ string, p params) {
	if s.index == nil {
		s.writeError(w, r, outcome.Errorf(http.StatusNotImplemented, "not-supported", "search parameter identifier is not supported: this server runs without the identifier index"))
		return
	}
	after := ""
	if p.cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(p.cursor)
		id, ok := strings.CutPrefix(string(raw), identifierCursor)
		if err != nil || !ok || !fhir.ValidID(id) {
			s.writeError(w, r, outcome.Errorf(http.StatusBadRequest, "invalid", "bad %s %q; follow the next link as given", cursorParam, p.cursor))
			return
		}
		after = id
	}
	ri := info(r)
	matches, err := s.index.Search(r.Context(), ri.tenant, typ, index.Criteria{Tokens: p.tokens, IDs: p.ids})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	b := s.newBundle(fhir.BundleSearchset)
	n := len(matches)
	b.Total = &n
	if p.summaryCount {
		b.Link = links(ri.base, "/"+typ, p.kept, "")
		s.writeJSON(w, http.StatusOK, b)
		return
	}
	count := p.count
	if count == 0 {
		count = fhirstore.DefaultListCount
	}
	next, lastID := "", ""
	for _, res := range matches {
		if res.ID <= after {
			continue
		}
		if len(b.Entry) == count {
			next = base64.RawURLEncoding.EncodeToString([]byte(identifierCursor + lastID))
			break
		}
		b.Entry = append(b.Entry, fhir.BundleEntry{
			FullURL:  ri.base + "/" + res.Type + "/" + res.ID,
			Resource: res.Content,
			Search:   &fhir.BundleEntrySearch{Mode: "match"},
		})
		lastID = res.ID
	}
	b.Link = links(ri.base, "/"+typ, p.kept, next)
	s.writeJSON(w, http.StatusOK, b)
}

// countIDs counts the current resources among ids (for _id with
// _summary=count).
func (s *Server) countIDs(r *http.Request, typ string, ids []string) (int, error) {
	n := 0
	cursor := ""
	for {
		page, err := s.store.List(r.Context(), info(r).tenant, typ, fhirstore.ListQuery{Count: MaxCount, Cursor: cursor, IDs: ids})
		if err != nil {
			return 0, err
		}
		n += len(page.Resources)
		if page.Next == "" {
			return n, nil
		}
		cursor = page.Next
	}
}

func (s *Server) historySystem(w http.ResponseWriter, r *http.Request) {
	s.history(w, r, "", "", "/_history")
}

func (s *Server) historyType(w http.ResponseWriter, r *http.Request) {
	typ := r.PathValue("type")
	if err := checkType(typ); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.history(w, r, typ, "", "/"+typ+"/_history")
}

func (s *Server) historyInstance(w http.ResponseWriter, r *http.Request) {
	typ, id, err := typeAndID(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.history(w, r, typ, id, "/"+typ+"/"+id+"/_history")
}

func (s *Server) history(w http.ResponseWriter, r *http.Request, typ, id, path string) {
	p, err := parseParams(r, onHistory)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ri := info(r)
	page, err := s.store.History(r.Context(), ri.tenant, fhirstore.HistoryQuery{
		Type: typ, ID: id, Since: p.since, Count: p.count, Cursor: p.cursor,
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	b := s.newBundle(fhir.BundleHistory)
	for _, res := range page.Entries {
		b.Entry = append(b.Entry, historyEntry(ri.base, res))
	}
	b.Link = links(ri.base, path, p.kept, page.Next)
	s.writeJSON(w, http.StatusOK, b)
}

// historyEntry renders one version. request.url is the type for a create
// and type/id otherwise (FHIR http.html); response.status is what the
// interaction answered: "201 Created" for a create (POST, or the PUT that
// made version 1), "200 OK" for an update, "204 No Content" for a delete,
// which carries no resource.
func historyEntry(base string, res *fhirstore.Resource) fhir.BundleEntry {
	e := fhir.BundleEntry{
		FullURL:  base + "/" + res.Type + "/" + res.ID,
		Response: &fhir.BundleEntryResponse{Etag: res.ETag(), LastModified: fhir.FormatInstant(res.LastModified)},
	}
	switch {
	case res.Deleted() || res.Method == fhirstore.MethodDelete:
		e.Request = &fhir.BundleEntryRequest{Method: "DELETE", URL: res.Type + "/" + res.ID}
		e.Response.Status = "204 No Content"
	case res.Method == fhirstore.MethodPost:
		e.Resource = res.Content
		e.Request = &fhir.BundleEntryRequest{Method: "POST", URL: res.Type}
		e.Response.Status = "201 Created"
	default:
		e.Resource = res.Content
		e.Request = &fhir.BundleEntryRequest{Method: "PUT", URL: res.Type + "/" + res.ID}
		e.Response.Status = "200 OK"
		if res.Version == 1 {
			e.Response.Status = "201 Created"
		}
	}
	return e
}

package bundle

import (
	"fmt"
	"net/url"
	"strings"

	"fhirbucket/fhir"
)

// Interaction is what an entry asks for, named by its FHIR
// restful-interaction code (http://hl7.org/fhir/restful-interaction), the
// codes a CapabilityStatement lists.
type Interaction string

// The interactions an entry can plan to.
const (
	Read            Interaction = "read"             // GET/HEAD Type/id
	VRead           Interaction = "vread"            // GET/HEAD Type/id/_history/vid
	SearchType      Interaction = "search-type"      // GET/HEAD Type?query
	SearchSystem    Interaction = "search-system"    // GET/HEAD ?query
	HistoryInstance Interaction = "history-instance" // GET/HEAD Type/id/_history
	HistoryType     Interaction = "history-type"     // GET/HEAD Type/_history
	HistorySystem   Interaction = "history-system"   // GET/HEAD _history
	Capabilities    Interaction = "capabilities"     // GET/HEAD metadata
	Create          Interaction = "create"           // POST Type
	Update          Interaction = "update"           // PUT Type/id
	Delete          Interaction = "delete"           // DELETE Type/id
	// ConditionalUpdate and ConditionalDelete name their resource by
	// criteria (PUT/DELETE Type?query, the criteria in Entry.Query).
	ConditionalUpdate Interaction = "conditional-update"
	ConditionalDelete Interaction = "conditional-delete"
)

// base is Options.Base taken apart: origin is "scheme://host[:port]",
// path the escaped path without a trailing slash ("" or "/fhir").
type base struct {
	origin, path string
}

func parseBase(s string) (*base, error) {
	if s == "" {
		return nil, nil
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("bundle: Options.Base %q: %w", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return nil, fmt.Errorf("bundle: Options.Base %q: want http(s)://host[:port][/path]", s)
	}
	return &base{origin: u.Scheme + "://" + u.Host, path: strings.TrimSuffix(u.EscapedPath(), "/")}, nil
}

// relative returns the part of the absolute URL u after the server's base
// and its slash ("Patient/1", "Patient?x=y", "" for the base itself), and
// whether u is under the base at all. Scheme and host compare without
// regard to case, the path exactly.
func (b *base) relative(u string) (string, bool) {
	if b == nil || len(u) < len(b.origin) || !strings.EqualFold(u[:len(b.origin)], b.origin) {
		return "", false
	}
	rest, ok := strings.CutPrefix(u[len(b.origin):], b.path)
	if !ok {
		return "", false
	}
	switch {
	case rest == "":
		return "", true
	case rest[0] == '/':
		return rest[1:], true
	case rest[0] == '?':
		return rest, true
	}
	return "", false // "/fhirx" is not under "/fhir"
}

// hasScheme reports whether s starts with a URI scheme and its colon
// (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"), i.e. is an
// absolute URI ("urn:uuid:…", "http://…") rather than a relative reference.
func hasScheme(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
		case i > 0 && (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.'):
		case i > 0 && c == ':':
			return true
		default:
			return false
		}
	}
	return false
}

// target is what a request URL names.
type target struct {
	interaction      Interaction
	typ, id, version string
	query            url.Values
}

// parseRequest checks method and url of one entry's request and returns
// what they name. Errors wrap ErrInvalid or ErrNotSupported.
func (p *planner) parseRequest(method, raw string) (target, error) {
	var t target
	switch method {
	case "GET", "HEAD", "POST", "PUT", "DELETE":
	case "PATCH":
		return t, notSupportedf("request.method PATCH")
	case "":
		return t, invalidf("request.method is missing")
	default:
		return t, invalidf("request.method %q is not GET, HEAD, POST, PUT or DELETE", method)
	}
	if raw == "" {
		return t, invalidf("request.url is missing")
	}
	rel := raw
	if hasScheme(raw) {
		var ok bool
		if rel, ok = p.base.relative(raw); !ok {
			if p.base == nil {
				return t, invalidf("request.url %q is absolute and the server's base URL is not known; use a relative URL", raw)
			}
			return t, invalidf("request.url %q is not on this server (base %s%s)", raw, p.base.origin, p.base.path)
		}
	} else if strings.HasPrefix(raw, "/") {
		// The official examples write "/Patient/example": relative to
		// the base, with one leading slash.
		rel = raw[1:]
	}
	if strings.ContainsAny(rel, "# \t\r\n") {
		return t, invalidf("request.url %q has a fragment or white space", raw)
	}
	path, rawQuery, hasQuery := strings.Cut(rel, "?")
	if hasQuery {
		q, err := url.ParseQuery(rawQuery)
		if err != nil {
			return t, invalidf("request.url %q: query: %v", raw, err)
		}
		t.query = q
	}
	var segs []string
	if path != "" {
		segs = strings.Split(path, "/")
	}
	for _, s := range segs {
		if s == "" {
			return t, invalidf("request.url %q has an empty path segment", raw)
		}
	}
	read := method == "GET" || method == "HEAD"
	wrongMethod := func() (target, error) {
		return t, invalidf("request.url %q does not take method %s", raw, method)
	}
	if len(segs) == 0 {
		if read && hasQuery {
			t.interaction = SearchSystem
			return t, nil
		}
		return t, invalidf("request.url %q names the server's base; only a GET search may", raw)
	}
	switch first := segs[0]; {
	case first == "metadata" || first == "_history":
		if len(segs) > 1 {
			return t, invalidf("request.url %q has extra path segments", raw)
		}
		if !read {
			return wrongMethod()
		}
		t.interaction = HistorySystem
		if first == "metadata" {
			t.interaction = Capabilities
		}
		return t, nil
	case strings.HasPrefix(first, "$"):
		return t, notSupportedf("request.url %q: operations are not supported", raw)
	case !fhir.IsResourceType(first):
		return t, invalidf("request.url %q: %q is not an R4 resource type", raw, first)
	}
	t.typ = segs[0]
	for _, s := range segs[1:] {
		if strings.HasPrefix(s, "$") {
			return t, notSupportedf("request.url %q: operations are not supported", raw)
		}
	}
	if len(segs) > 1 && segs[1] == "_search" {
		return t, notSupportedf("request.url %q: _search is not supported; use GET", raw)
	}
	// Writes other than a conditional update or delete take no query.
	if hasQuery && !read && !(len(segs) == 1 && (method == "PUT" || method == "DELETE")) {
		return t, invalidf("request.url %q: a %s takes no query", raw, method)
	}
	switch len(segs) {
	case 1: // Type
		switch method {
		case "GET", "HEAD":
			t.interaction = SearchType
		case "POST":
			t.interaction = Create
		case "PUT", "DELETE":
			if hasQuery {
				t.interaction = ConditionalUpdate
				if method == "DELETE" {
					t.interaction = ConditionalDelete
				}
				return t, nil
			}
			return t, invalidf("request.url %q: a %s needs an id (Type/id)", raw, method)
		}
		return t, nil
	case 2: // Type/_history or Type/id
		if segs[1] == "_history" {
			if !read {
				return wrongMethod()
			}
			t.interaction = HistoryType
			return t, nil
		}
	case 3, 4: // Type/id/_history[/vid]
		if segs[2] != "_history" {
			return t, invalidf("request.url %q has extra path segments", raw)
		}
	default:
		return t, invalidf("request.url %q has extra path segments", raw)
	}
	if !fhir.ValidID(segs[1]) {
		return t, invalidf("request.url %q: %q is not a valid id", raw, segs[1])
	}
	t.id = segs[1]
	switch len(segs) {
	case 2:
		switch method {
		case "GET", "HEAD":
			t.interaction = Read
		case "PUT":
			t.interaction = Update
		case "DELETE":
			t.interaction = Delete
		default:
			return t, invalidf("request.url %q: POST creates on the type (%s), not on an id", raw, t.typ)
		}
	case 3:
		if !read {
			return wrongMethod()
		}
		t.interaction = HistoryInstance
	case 4:
		if !read {
			return wrongMethod()
		}
		if !fhir.ValidID(segs[3]) {
			return t, invalidf("request.url %q: %q is not a valid version id", raw, segs[3])
		}
		t.version = segs[3]
		t.interaction = VRead
	}
	return t, nil
}

package bundle

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
)

// DefaultMaxEntries is the default of Options.MaxEntries. A Synthea
// patient record has 100–900 entries.
const DefaultMaxEntries = 1000

// Options configures NewPlan. Zero values take the defaults.
type Options struct {
	// Base is the server's FHIR base URL as clients address it, e.g.
	// "https://fhir.example.org/fhir", with the tenant in the path when
	// tenants are routed by path ("http://localhost:8080/acme"). A
	// trailing slash is ignored; scheme and host compare without regard
	// to case. An absolute request.url must start with it; when Base is
	// empty every absolute request.url is invalid. It must be an http or
	// https URL without query or fragment.
	Base string
	// Validator checks every POST and PUT resource, as it will be stored
	// (after rewriting). Nil skips schema validation, leaving only the
	// checks NewPlan makes itself; for callers that validate later.
	Validator *fhir.Validator
	// MaxEntries is the most entries a Bundle may have; more fail with
	// ErrTooMany. Default DefaultMaxEntries.
	MaxEntries int
}

// Phase is a step of the processing order of a transaction (FHIR R4
// http.html: DELETE, then POST, then PUT, then GET and HEAD). A batch is
// processed in the same order.
type Phase int

// The phases, in processing order; Plan.Phases is indexed by them.
const (
	PhaseDelete Phase = iota // DELETE
	PhaseCreate              // POST
	PhaseUpdate              // PUT
	PhaseRead                // GET and HEAD
	numPhases
)

// Plan is a checked Bundle, ready to apply: every entry parsed, every POST
// given its id, every resource rewritten and validated.
type Plan struct {
	// Type is Bundle.type as sent: "batch", "transaction" or "history".
	Type string
	// Transaction reports whether the Bundle is all or nothing. A history
	// Bundle is processed as a batch.
	Transaction bool
	// Entries holds one Entry per Bundle.entry, in request order (the
	// order of the response).
	Entries []*Entry

	phases [numPhases][]*Entry
}

// Phases returns the entries to process, indexed by Phase (PhaseDelete
// first) and each in request order. Entries with an Err are in none.
func (p *Plan) Phases() [][]*Entry {
	out := make([][]*Entry, numPhases)
	copy(out, p.phases[:])
	return out
}

// ResponseType is the Bundle.type of the response: "transaction-response"
// or "batch-response" (also for a history Bundle).
func (p *Plan) ResponseType() string {
	if p.Transaction {
		return fhir.BundleTransactionResponse
	}
	return fhir.BundleBatchResponse
}

// Entry is one planned Bundle.entry.
type Entry struct {
	// Index is the position in Bundle.entry, 0-based.
	Index int
	// FullURL is the entry's fullUrl as sent ("" when it has none).
	FullURL string
	// Method is request.method: GET, HEAD, POST, PUT or DELETE (or what
	// was sent, when Err says it is not one of them).
	Method string
	// Interaction is what request.url names with Method.
	Interaction Interaction
	// Type is the resource type of the URL ("" for system-level
	// interactions).
	Type string
	// ID is the resource id: from the URL, or for a POST the id the
	// server assigned (32 lowercase hex digits, 128 random bits).
	ID string
	// VersionID is the version of a vread.
	VersionID string
	// Query is the URL's query (nil when it has none).
	Query url.Values
	// IfMatch and IfNoneMatch are request.ifMatch (PUT, DELETE) and
	// request.ifNoneMatch (GET, HEAD) as sent: their syntax is checked
	// where they are evaluated, with the version rules of the store.
	IfMatch, IfNoneMatch string
	// IfModifiedSince is request.ifModifiedSince (GET, HEAD); zero when
	// absent.
	IfModifiedSince time.Time
	// Resource is what a POST or PUT stores: the entry's resource as
	// compact JSON, references to fullUrls of the Bundle rewritten (see
	// the package comment), and for a POST its new id. Nil otherwise.
	// meta.versionId and meta.lastUpdated are left as sent: the store
	// sets them when it writes.
	Resource json.RawMessage
	// IfNoneExist is request.ifNoneExist of a POST (conditional create):
	// the criteria as sent, without a leading "?"; "" when absent.
	IfNoneExist string
	// CondRefs are the conditional references ("reference":
	// "Type?criteria") of Resource, each once, in order of appearance.
	CondRefs []CondRef
	// NoOp marks a write entry that a transaction's resolution found to
	// need no write (ResolveConditional): an ifNoneExist that matched
	// Existing, or a conditional DELETE that matched nothing.
	NoOp bool
	// Existing is the resource a NoOp conditional create matched.
	Existing *fhirstore.Resource
	// Err, in a batch, is why this entry cannot be processed: an
	// *EntryError wrapping ErrInvalid, ErrNotSupported or
	// fhir.ErrTooLarge. It is always nil in a transaction plan (the first
	// error fails the plan instead).
	Err error
}

// CondRef is a conditional reference of an entry's resource.
type CondRef struct {
	// Ref is the reference as it stands in the resource.
	Ref string
	// Type and Query are what it names: Type?Query, relative to the base.
	Type, Query string
}

// Phase returns the processing phase of the entry's method.
func (e *Entry) Phase() Phase {
	switch e.Method {
	case "DELETE":
		return PhaseDelete
	case "POST":
		return PhaseCreate
	case "PUT":
		return PhaseUpdate
	}
	return PhaseRead
}

// Reference returns "Type/id" of the resource the entry is about, or ""
// when the entry has no id (searches, history of a type, system level).
func (e *Entry) Reference() string {
	if e.Type == "" || e.ID == "" {
		return ""
	}
	return e.Type + "/" + e.ID
}

// planner holds what NewPlan knows across entries.
type planner struct {
	base        *base
	validator   *fhir.Validator
	transaction bool
	history     bool
	// refs maps a fullUrl to the Type/id that replaces it in a
	// transaction: every fullUrl of a POST, and the urn: fullUrls of a
	// PUT.
	refs map[string]string
	// urns holds every urn: fullUrl of a batch, to refuse entries that
	// depend on one another.
	urns map[string]bool
}

// NewPlan parses and checks a batch, transaction or history Bundle (the
// body of POST [base]) and plans it. See the package comment for what it
// checks and rewrites.
//
// Errors of the Bundle as a whole (not JSON, not a Bundle, a type other
// than batch, transaction or history, entry not an array) wrap ErrInvalid;
// more entries than Options.MaxEntries wrap ErrTooMany. In a transaction
// the first invalid entry fails the plan with its *EntryError. In a batch
// an invalid entry only gets its Err. Errors in Options are returned as
// they are (a server fault, not the client's).
func NewPlan(data []byte, opts Options) (*Plan, error) {
	b, err := parseBase(opts.Base)
	if err != nil {
		return nil, err
	}
	if opts.MaxEntries < 0 {
		return nil, fmt.Errorf("bundle: Options.MaxEntries is negative")
	}
	maxEntries := opts.MaxEntries
	if maxEntries == 0 {
		maxEntries = DefaultMaxEntries
	}
	h, err := parseHead(data)
	if err != nil {
		return nil, err
	}
	raws := h.entries
	if len(raws) > maxEntries {
		return nil, fmt.Errorf("%w: the Bundle has %d entries, at most %d are accepted", ErrTooMany, len(raws), maxEntries)
	}
	p := &planner{
		base:        b,
		validator:   opts.Validator,
		transaction: h.typ == fhir.BundleTransaction,
		history:     h.typ == fhir.BundleHistory,
	}
	plan := &Plan{Type: h.typ, Transaction: p.transaction, Entries: make([]*Entry, len(raws))}
	resources := make([][]byte, len(raws))

	// Pass 1: each entry on its own, then what entries must not share.
	firstErr := -1
	fullURLs := make(map[string]int, len(raws))
	changes := make(map[string]int)
	for i, raw := range raws {
		e, res, err := p.parseEntry(i, raw)
		if e.FullURL != "" {
			if j, dup := fullURLs[e.FullURL]; !dup {
				fullURLs[e.FullURL] = i
			} else if err == nil && !p.history {
				// History Bundles repeat a fullUrl for each version (bdl-7).
				err = invalidf("fullUrl %q is also the fullUrl of Bundle.entry[%d]", e.FullURL, j)
			}
		}
		if err == nil && p.transaction && e.Phase() != PhaseRead && e.Interaction != ConditionalUpdate && e.Interaction != ConditionalDelete {
			// Conditional entries are checked once they are resolved.
			ref := e.Reference()
			if j, dup := changes[ref]; dup {
				err = invalidf("Bundle.entry[%d] also changes %s; a transaction may change a resource once", j, ref)
			} else {
				changes[ref] = i
			}
		}
		if err != nil {
			e.Err = &EntryError{Index: i, FullURL: e.FullURL, Err: err}
			if firstErr < 0 {
				firstErr = i
			}
		}
		plan.Entries[i], resources[i] = e, res
	}

	// The fullUrls that references may name.
	if p.transaction {
		p.refs = make(map[string]string)
	} else {
		p.urns = make(map[string]bool)
	}
	for _, e := range plan.Entries {
		if e.FullURL == "" {
			continue
		}
		if !p.transaction {
			if strings.HasPrefix(e.FullURL, "urn:") {
				p.urns[e.FullURL] = true
			}
			continue
		}
		if e.Err == nil {
			if ref := ownRef(e); ref != "" {
				p.refs[e.FullURL] = ref
			}
		}
	}

	// Pass 2: rewrite and validate the resources. A transaction stops at
	// the first failing entry; entries past one that failed in pass 1
	// need no look, as that one fails the plan anyway.
	limit := len(raws)
	if p.transaction && firstErr >= 0 {
		limit = firstErr
	}
	for i := 0; i < limit; i++ {
		e := plan.Entries[i]
		if e.Err != nil || resources[i] == nil {
			continue
		}
		if err := p.prepareResource(e, resources[i]); err != nil {
			e.Err = &EntryError{Index: i, FullURL: e.FullURL, Err: err}
			if p.transaction {
				return nil, e.Err
			}
		}
	}
	if p.transaction && firstErr >= 0 {
		return nil, plan.Entries[firstErr].Err
	}
	for _, e := range plan.Entries {
		if e.Err == nil {
			plan.phases[e.Phase()] = append(plan.phases[e.Phase()], e)
		}
	}
	return plan, nil
}

// ownRef is the Type/id that replaces references to e's fullUrl: any
// fullUrl of a POST (the client cannot know the id the server assigns),
// and a urn: fullUrl of a PUT (the PUT names the id). Other fullUrls are
// real addresses and stay as they are.
func ownRef(e *Entry) string {
	switch {
	case e.FullURL == "":
		return ""
	case e.Method == "POST":
		return e.Reference()
	case e.Method == "PUT" && strings.HasPrefix(e.FullURL, "urn:"):
		return e.Reference()
	}
	return ""
}

// parseEntry checks one entry on its own (pass 1). It returns the entry
// (partly filled when err != nil) and, for POST and PUT, the resource to
// prepare in pass 2.
func (p *planner) parseEntry(i int, raw []byte) (*Entry, []byte, error) {
	e := &Entry{Index: i}
	be, err := parseEntryMembers(raw)
	if err != nil {
		return e, nil, err
	}
	e.FullURL = be.fullURL
	if err := p.checkFullURL(be.fullURL); err != nil {
		return e, nil, err
	}
	r := be.request
	if r == nil {
		return e, nil, invalidf("request is missing")
	}
	e.Method = r.Method
	t, err := p.parseRequest(r.Method, r.URL)
	if err != nil {
		return e, nil, err
	}
	e.Interaction, e.Type, e.ID, e.VersionID, e.Query = t.interaction, t.typ, t.id, t.version, t.query
	if r.IfNoneExist != "" {
		if e.Method != "POST" {
			return e, nil, invalidf("request.ifNoneExist applies to POST (conditional create), not %s", e.Method)
		}
		e.IfNoneExist = strings.TrimPrefix(strings.TrimSpace(r.IfNoneExist), "?")
		if e.IfNoneExist == "" {
			return e, nil, invalidf("request.ifNoneExist has no criteria")
		}
	}
	read := e.Method == "GET" || e.Method == "HEAD"
	if r.IfMatch != "" {
		if e.Method != "PUT" && e.Method != "DELETE" {
			return e, nil, invalidf("request.ifMatch applies to PUT and DELETE, not %s", e.Method)
		}
		e.IfMatch = r.IfMatch
	}
	if r.IfNoneMatch != "" {
		if !read {
			return e, nil, invalidf("request.ifNoneMatch applies to GET and HEAD, not %s", e.Method)
		}
		e.IfNoneMatch = r.IfNoneMatch
	}
	if r.IfModifiedSince != "" {
		if !read {
			return e, nil, invalidf("request.ifModifiedSince applies to GET and HEAD, not %s", e.Method)
		}
		ts, err := fhir.ParseInstant(r.IfModifiedSince)
		if err != nil {
			return e, nil, invalidf("request.ifModifiedSince %q is not a FHIR instant", r.IfModifiedSince)
		}
		e.IfModifiedSince = ts
	}
	if err := p.checkFullURLTarget(e); err != nil {
		return e, nil, err
	}
	if e.Method != "POST" && e.Method != "PUT" {
		// A resource on GET, HEAD or DELETE (history Bundles carry the
		// deleted content) has no use and is ignored.
		return e, nil, nil
	}
	res := be.resource
	if len(res) == 0 || string(res) == "null" {
		return e, nil, invalidf("a %s needs a resource", e.Method)
	}
	if res[0] != '{' {
		return e, nil, invalidf("resource is not a JSON object")
	}
	rt, id, err := fhir.Peek(res)
	if err != nil {
		return e, nil, fmt.Errorf("%w: resource: %w", ErrInvalid, err)
	}
	if rt != e.Type {
		return e, nil, invalidf("resource.resourceType %q does not match the type %q of request.url", rt, e.Type)
	}
	switch {
	case e.Interaction == ConditionalUpdate:
		// The criteria name the resource; the id is settled when they
		// are resolved (a body id must then match). References to the
		// entry's fullUrl name a placeholder id until then.
		e.ID = newID()
	case e.Method == "PUT":
		if id == "" {
			return e, nil, invalidf("the resource has no id; a PUT to %s must carry id %q", e.Reference(), e.ID)
		}
		if id != e.ID {
			return e, nil, invalidf("resource.id %q does not match the id %q of request.url", id, e.ID)
		}
	default:
		e.ID = newID()
	}
	return e, res, nil
}

// checkFullURL checks the form of a fullUrl: absolute (urn:uuid:…,
// urn:oid:…, http(s)://…), no white space, not version specific (bdl-8).
func (p *planner) checkFullURL(f string) error {
	switch {
	case f == "":
		return nil
	case !hasScheme(f):
		return invalidf("fullUrl %q is not an absolute URI (urn:uuid:…, or a URL)", f)
	case strings.ContainsAny(f, " \t\r\n"):
		return invalidf("fullUrl %q contains white space", f)
	case strings.Contains(f, "/_history/"):
		return invalidf("fullUrl %q is version specific (bdl-8)", f)
	}
	return nil
}

// checkFullURLTarget checks a fullUrl on this server's base against what
// the entry writes: a PUT's fullUrl must be its own Type/id, and a POST's
// must name the type it creates.
func (p *planner) checkFullURLTarget(e *Entry) error {
	rel, ok := p.base.relative(e.FullURL)
	if !ok || e.Method != "POST" && e.Method != "PUT" {
		return nil
	}
	typ, id, _ := strings.Cut(rel, "/")
	if typ != e.Type || e.Interaction == Update && id != e.ID {
		return invalidf("fullUrl %q is on this server but names another resource than request.url", e.FullURL)
	}
	return nil
}

// prepareResource rewrites and validates the resource of a POST or PUT
// (pass 2) and stores the result in e.Resource.
func (p *planner) prepareResource(e *Entry, res []byte) error {
	setID := ""
	if e.Method == "POST" {
		setID = e.ID
	}
	out, err := rewriteResource(res, &entrySub{p: p, e: e, own: ownRef(e)}, setID)
	if err != nil {
		return err
	}
	if p.validator != nil {
		if _, err := p.validator.Validate(out); err != nil {
			if errors.Is(err, fhir.ErrTooLarge) {
				return fmt.Errorf("bundle: resource: %w", err)
			}
			return fmt.Errorf("%w: resource: %w", ErrInvalid, err)
		}
	}
	e.Resource = out
	return nil
}

// entrySub is the substituter for one entry's resource.
type entrySub struct {
	p   *planner
	e   *Entry
	own string // what replaces the entry's own fullUrl, "" if nothing
}

func (s *entrySub) subst(v []byte) (string, bool, error) {
	if s.p.transaction {
		ref, ok := s.p.refs[string(v)]
		return ref, ok, nil
	}
	// A batch: only the entry's own fullUrl has a known replacement; a
	// urn: naming another entry would be left dangling.
	if s.e.FullURL != "" && string(v) == s.e.FullURL {
		return s.own, s.own != "", nil
	}
	if s.p.urns[string(v)] {
		return "", false, invalidf("the resource refers to %q, the fullUrl of another entry: entries of a batch must not depend on each other (send a transaction)", v)
	}
	return "", false, nil
}

func (s *entrySub) conditional(ref string) error {
	r := ref
	if hasScheme(r) {
		var ok bool
		if r, ok = s.p.base.relative(r); !ok {
			return nil
		}
	}
	if typ, q, found := strings.Cut(strings.TrimPrefix(r, "/"), "?"); found && fhir.IsResourceType(typ) {
		if !slices.ContainsFunc(s.e.CondRefs, func(c CondRef) bool { return c.Ref == ref }) {
			s.e.CondRefs = append(s.e.CondRefs, CondRef{Ref: ref, Type: typ, Query: q})
		}
	}
	return nil
}

// newID returns a new server-assigned id: 128 random bits as 32 lowercase
// hex digits, the format of the ids fhirstore assigns on create.
func newID() string {
	var r [16]byte
	_, _ = rand.Read(r[:]) // never fails (crypto/rand)
	return hex.EncodeToString(r[:])
}

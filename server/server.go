// Package server is the FHIR R4 REST API of fhirbucket: an http.Handler
// that routes requests on the standard net/http mux, negotiates content
// (JSON only), selects the tenant, calls the resource store, and turns
// every error into an OperationOutcome and an HTTP status in one place
// (errors.go, over the table of package outcome).
//
// Decisions a client can observe are documented in docs/http-api.md.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"fhirbucket/auth"
	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/index"
	"fhirbucket/metrics"
	"fhirbucket/outcome"
)

// Store is the part of the resource store the server calls.
// *fhirstore.Store satisfies it.
type Store interface {
	Create(ctx context.Context, tenant, typ string, body []byte) (*fhirstore.Resource, error)
	Update(ctx context.Context, tenant, typ, id string, body []byte, opts fhirstore.WriteOptions) (*fhirstore.Resource, bool, error)
	Delete(ctx context.Context, tenant, typ, id string, opts fhirstore.WriteOptions) (*fhirstore.Resource, error)
	Read(ctx context.Context, tenant, typ, id string) (*fhirstore.Resource, error)
	VRead(ctx context.Context, tenant, typ, id, version string) (*fhirstore.Resource, error)
	History(ctx context.Context, tenant string, q fhirstore.HistoryQuery) (*fhirstore.HistoryPage, error)
	List(ctx context.Context, tenant, typ string, q fhirstore.ListQuery) (*fhirstore.ListPage, error)
	Count(ctx context.Context, tenant, typ string) (int, error)
}

// DefaultMaxBodyBytes is the request body limit when Config.MaxBodyBytes
// is 0: the validator's default resource limit.
const DefaultMaxBodyBytes = fhir.DefaultMaxBytes

// Config configures a Server. Store is required; every other field has a
// documented default.
type Config struct {
	// Store keeps the resources.
	Store Store
	// BaseURL is the public URL of the FHIR base (scheme, host and base
	// path, e.g. "https://fhir.example.org/fhir") used in Location,
	// fullUrl and Bundle links. With path tenant routing the tenant
	// segment is appended to it. Default: built from each request
	// (http or https, Host header, BasePath).
	BaseURL string
	// BasePath moves the FHIR base below the server root ("/fhir"). Default
	// "" (the root). /healthz and /readyz stay at the root.
	BasePath string
	// TenantRouting selects where the tenant comes from. Default
	// TenantHeader.
	TenantRouting TenantRouting
	// MaxBodyBytes bounds request bodies; a larger body answers 413.
	// 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// Ready reports whether the storage is usable; /readyz answers 503
	// while it fails. nil means always ready.
	Ready func(ctx context.Context) error
	// Logger receives the access log and the detail of internal errors.
	// Default slog.Default().
	Logger *slog.Logger
	// Now is the clock for Date headers and Bundle timestamps. Default
	// time.Now.
	Now func() time.Time
	// SoftwareVersion is reported in the CapabilityStatement. Default "dev".
	SoftwareVersion string
	// Bundles enables batch and transaction Bundles (POST to the base).
	// nil: they answer 501 and the CapabilityStatement does not claim
	// them.
	Bundles *BundleConfig
	// Index answers search by identifier and the conditional interactions
	// (If-None-Exist, PUT and DELETE [type]?identifier=…). nil: they answer
	// 501 and the CapabilityStatement does not claim them.
	Index Index
	// Auth checks bearer tokens, tenants and scopes (see server/authz.go):
	// an *auth.Authenticator (auth mode token) or a TokenEndpoint (auth
	// mode smart). nil: no access control (auth mode none).
	Auth Authenticator
	// Export runs Bulk Data exports (server/export.go). nil: the $export
	// routes answer 501 and /metadata does not list them.
	Export Exporter
}

// Authenticator turns the bearer token of a request into the principal
// whose tenant and scopes the access checks consult. A missing or invalid
// token fails with auth.ErrUnauthenticated. *auth.Authenticator (static
// tokens) satisfies it.
type Authenticator interface {
	Authenticate(h http.Header) (*auth.Principal, error)
}

// TokenEndpoint is an Authenticator that also issues its tokens: SMART
// Backend Services (*smart.Service). With one, the server answers its
// token endpoint ({base path}/auth/token), every FHIR base's
// /.well-known/smart-configuration, and states both in the
// CapabilityStatement's rest.security.
type TokenEndpoint interface {
	Authenticator
	// ServeToken answers a request to the token endpoint whose public
	// URL is tokenURL (the audience of client assertions).
	ServeToken(w http.ResponseWriter, r *http.Request, tokenURL string)
	// Configuration is the smart-configuration document (JSON) of a
	// FHIR base whose token endpoint is tokenURL.
	Configuration(tokenURL string) any
}

// TokenPath is the path of the token endpoint below the base path.
const TokenPath = "/auth/token"

// Server is the FHIR REST handler.
type Server struct {
	store    Store
	log      *slog.Logger
	now      func() time.Time
	ready    func(ctx context.Context) error
	routing  TenantRouting
	basePath string   // "" or "/seg/…", no trailing slash
	baseURL  *url.URL // nil: from the request
	maxBody  int64
	version  string
	mux      *http.ServeMux

	auth   Authenticator     // nil: no access control (server/authz.go)
	tokens TokenEndpoint     // nil: no token endpoint (auth mode none or token)
	export Exporter          // nil: no bulk export (server/export.go)
	table  []route           // the routes served (server/routes.go)
	routed map[string]*route // mux pattern -> its row

	bundles *BundleConfig // nil: batch and transaction answer 501 (server/bundle.go)
	index   Index         // nil: identifier search and conditional interactions answer 501
}

// Index is the identifier index the server calls; *index.Index satisfies
// it.
type Index interface {
	Search(ctx context.Context, tenant, typ string, c index.Criteria) ([]*fhirstore.Resource, error)
	CreateIfNoneExist(ctx context.Context, tenant, typ string, c index.Criteria, body []byte) (*fhirstore.Resource, bool, error)
	ConditionalUpdate(ctx context.Context, tenant, typ string, c index.Criteria, body []byte, ifMatch *fhirstore.Match) (*fhirstore.Resource, bool, error)
	ConditionalDelete(ctx context.Context, tenant, typ string, c index.Criteria, ifMatch *fhirstore.Match) (*fhirstore.Resource, error)
	ClaimCreates(ctx context.Context, tenant string, reqs []index.CreateClaim) ([]index.ClaimResult, *index.Claims, error)
}

// New checks cfg and returns the handler. Errors name the Config field at
// fault.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("server: Config.Store is required")
	}
	s := &Server{
		store:   cfg.Store,
		log:     cfg.Logger,
		now:     cfg.Now,
		ready:   cfg.Ready,
		routing: cfg.TenantRouting,
		maxBody: cfg.MaxBodyBytes,
		version: cfg.SoftwareVersion,
		auth:    cfg.Auth,
		export:  cfg.Export,
		index:   cfg.Index,
	}
	if cfg.Bundles != nil {
		b := *cfg.Bundles
		if b.Transactions == nil || b.Validator == nil {
			return nil, errors.New("server: Config.Bundles needs Transactions and Validator")
		}
		if b.Parallelism <= 0 {
			b.Parallelism = DefaultBatchParallelism
		}
		s.bundles = &b
	}
	if a, ok := s.auth.(*auth.Authenticator); ok && a == nil {
		s.auth = nil // a typed nil is no access control, not a nil dereference
	}
	s.tokens, _ = s.auth.(TokenEndpoint)
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.maxBody == 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	if s.maxBody < 0 {
		return nil, fmt.Errorf("server: Config.MaxBodyBytes must be >= 0, got %d", cfg.MaxBodyBytes)
	}
	if s.version == "" {
		s.version = "dev"
	}
	switch s.routing {
	case TenantHeader, TenantPath, TenantBoth:
	default:
		return nil, fmt.Errorf("server: Config.TenantRouting %d is not a TenantRouting", int(s.routing))
	}
	bp, err := CleanBasePath(cfg.BasePath)
	if err != nil {
		return nil, fmt.Errorf("server: Config.BasePath: %w", err)
	}
	s.basePath = bp
	if s.baseURL, err = ParseBaseURL(cfg.BaseURL); err != nil {
		return nil, fmt.Errorf("server: Config.BaseURL: %w", err)
	}
	s.table = s.servedRoutes()
	s.mux, s.routed = s.routes()
	return s, nil
}

// CleanBasePath checks a base path ("fhir", "/fhir/", "/a/b") and returns
// it as "/seg/…" without a trailing slash ("" for the root).
func CleanBasePath(p string) (string, error) {
	p = strings.Trim(p, "/")
	if p == "" {
		return "", nil
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." || url.PathEscape(seg) != seg {
			return "", fmt.Errorf("base path %q: segments must be non-empty, not . or .., and need no escaping", p)
		}
	}
	return "/" + p, nil
}

// ParseBaseURL checks a public base URL: absolute http(s), no query or
// fragment. "" returns nil (base taken from each request).
func ParseBaseURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, nil
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("base URL %q must be an absolute http(s) URL without credentials, query or fragment", s)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// reqInfo is what ServeHTTP learns before dispatch.
type reqInfo struct {
	id     string // request id, echoed in X-Request-Id and logs
	tenant string
	base   string // absolute URL of the tenant's FHIR base, no trailing slash
	status int    // set by the error writer for the access log
	err    error  // the error behind a 5xx, for the access log

	principal *auth.Principal // the authenticated token (server/authz.go)
}

type ctxKey struct{}

func info(r *http.Request) *reqInfo {
	if ri, ok := r.Context().Value(ctxKey{}).(*reqInfo); ok {
		return ri
	}
	return &reqInfo{tenant: fhirstore.DefaultTenant}
}

// statusWriter records the status for the access log.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// ServeHTTP handles /healthz and /readyz, then strips the base path,
// selects the tenant, checks the requested format, and dispatches to the
// mux.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	ri := &reqInfo{id: newID(8), tenant: fhirstore.DefaultTenant}
	sw := &statusWriter{ResponseWriter: w}
	sw.Header().Set("X-Request-Id", ri.id)
	sw.Header().Set("Date", s.now().UTC().Format(http.TimeFormat))
	r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, ri))

	switch r.URL.Path {
	case "/healthz":
		metrics.SetInteraction(r.Context(), labelHealth)
		s.healthz(sw, r)
	case "/readyz":
		metrics.SetInteraction(r.Context(), labelHealth)
		s.readyz(sw, r)
	case s.basePath + TokenPath:
		metrics.SetInteraction(r.Context(), labelToken)
		s.token(sw, r)
	default:
		s.serveFHIR(sw, r)
	}

	status := sw.status
	if ri.status != 0 {
		status = ri.status
	}
	attrs := []slog.Attr{
		slog.String("id", ri.id), slog.String("method", r.Method), slog.String("path", r.URL.RequestURI()),
		slog.String("tenant", ri.tenant), slog.Int("status", status), slog.Int64("bytes", sw.bytes),
		slog.Duration("duration", time.Since(start)),
	}
	if ri.principal != nil {
		attrs = append(attrs, slog.String("client", ri.principal.Name))
	}
	level := slog.LevelInfo
	if ri.err != nil {
		attrs = append(attrs, slog.String("error", ri.err.Error()))
		if status >= 500 {
			level = slog.LevelError
		}
	}
	s.log.LogAttrs(r.Context(), level, "request", attrs...)
}

func (s *Server) serveFHIR(w http.ResponseWriter, r *http.Request) {
	ri := info(r)
	segs, err := s.splitPath(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	acceptErr := checkAccept(r)
	tenant, tenantInURL, segs, tenantErr := s.selectTenant(r, segs)

	// Rebuild the URL relative to the tenant's base for the mux. Each
	// segment is escaped again so that an encoded "/" inside an id stays
	// inside its segment (and is then rejected as an invalid id).
	r2 := new(http.Request)
	*r2 = *r
	u := *r.URL
	var raw, plain strings.Builder
	for _, seg := range segs {
		raw.WriteString("/" + url.PathEscape(seg))
		plain.WriteString("/" + seg)
	}
	u.Path, u.RawPath = plain.String(), raw.String()
	if u.Path == "" {
		u.Path, u.RawPath = "/", ""
	}
	r2.URL = &u
	h, pattern := s.mux.Handler(r2)
	rt := s.routed[pattern]
	if tenantErr == errNoTenantSegment {
		rt, segs = nil, nil
	}
	// Named before any check, so that a request turned away (400, 401,
	// 406) is still counted under its interaction.
	metrics.SetInteraction(r.Context(), metricsLabel(rt, segs))

	// Export files are NDJSON: an Accept naming it is no reason for 406.
	if acceptErr != nil && !(rt != nil && rt.label == "export-file") {
		s.writeError(w, r, acceptErr)
		return
	}
	if tenantErr == nil {
		ri.tenant = tenant
		tenantErr = fhirstore.ValidTenant(ri.tenant)
	}
	if tenantErr != nil {
		s.writeError(w, r, tenantErr)
		return
	}
	ri.base = s.publicBase(r)
	if tenantInURL {
		ri.base += "/" + url.PathEscape(ri.tenant)
	}

	if err := s.authenticate(w, r, rt); err != nil {
		s.writeError(w, r, err)
		return
	}
	if rt == nil {
		// The mux would answer 404 or 405 in plain text; keep its verdict
		// (and its Allow header) but answer with an OperationOutcome.
		rec := &headerRecorder{h: http.Header{}}
		h.ServeHTTP(rec, r2)
		if rec.code == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", rec.h.Get("Allow"))
			s.writeError(w, r, outcome.Errorf(http.StatusMethodNotAllowed, "not-supported",
				"method %s is not allowed on %s; allowed: %s", r.Method, u.Path, rec.h.Get("Allow")))
			return
		}
		s.writeError(w, r, outcome.Errorf(http.StatusNotFound, "not-found", "no FHIR interaction at %s %s", r.Method, u.Path))
		return
	}
	// ServeHTTP (not h) so that the mux sets the path values.
	s.mux.ServeHTTP(w, r2)
}

// splitPath strips the base path and returns the unescaped path segments
// below it. "." and ".." segments and empty segments (other than one
// trailing "/") are rejected rather than cleaned: a FHIR URL never needs
// them, and cleaning would let "Patient/x/../y" address "Patient/y".
func (s *Server) splitPath(r *http.Request) ([]string, error) {
	p := r.URL.EscapedPath()
	if s.basePath != "" {
		switch {
		case p == s.basePath:
			p = "/"
		case strings.HasPrefix(p, s.basePath+"/"):
			p = p[len(s.basePath):]
		default:
			return nil, outcome.Errorf(http.StatusNotFound, "not-found", "the FHIR base is %s/", s.basePath)
		}
	}
	p = strings.TrimPrefix(p, "/")
	p = strings.TrimSuffix(p, "/")
	if p == "" {
		return nil, nil
	}
	var segs []string
	for raw := range strings.SplitSeq(p, "/") {
		seg, err := url.PathUnescape(raw)
		if err != nil {
			return nil, outcome.Errorf(http.StatusBadRequest, "invalid", "path segment %q is not valid percent-encoding", raw)
		}
		switch seg {
		case "", ".", "..":
			return nil, outcome.Errorf(http.StatusBadRequest, "invalid", "path segment %q is not allowed in a FHIR URL", seg)
		}
		segs = append(segs, seg)
	}
	return segs, nil
}

// publicBase is the absolute URL of the FHIR base (without tenant).
func (s *Server) publicBase(r *http.Request) string {
	if s.baseURL != nil {
		return s.baseURL.String()
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + s.basePath
}

// headerRecorder captures the status and headers of the mux's own 404/405
// handler without sending them.
type headerRecorder struct {
	h    http.Header
	code int
}

func (h *headerRecorder) Header() http.Header         { return h.h }
func (h *headerRecorder) Write(p []byte) (int, error) { return len(p), nil }
func (h *headerRecorder) WriteHeader(code int)        { h.code = code }

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if s.ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		if err := s.ready(ctx); err != nil {
			ri := info(r)
			ri.err = err
			s.log.Warn("not ready", "error", err)
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"status":"unavailable"}` + "\n"))
			return
		}
	}
	_, _ = w.Write([]byte(`{"status":"ready"}` + "\n"))
}

func newID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

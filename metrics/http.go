package metrics

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"fhirbucket/fhir"
)

// Interaction names, the values of the "interaction" label. They follow
// the FHIR RESTful API's names.
const (
	InteractionRead            = "read"
	InteractionVRead           = "vread"
	InteractionUpdate          = "update"
	InteractionConditionalUpd  = "conditional-update"
	InteractionDelete          = "delete"
	InteractionConditionalDel  = "conditional-delete"
	InteractionCreate          = "create"
	InteractionHistoryInstance = "history-instance"
	InteractionHistoryType     = "history-type"
	InteractionHistorySystem   = "history-system"
	InteractionSearchType      = "search-type"
	InteractionSearchSystem    = "search-system"
	InteractionBatch           = "batch" // batch or transaction: the same endpoint
	InteractionCapabilities    = "capabilities"
	InteractionOperation       = "operation"
	InteractionHealth          = "health"
	InteractionMetrics         = "metrics"
	InteractionOther           = "other" // anything that is no FHIR interaction (answered 4xx)
)

// Tenant routing modes for Classifier, as the server's tenant-routing
// setting names them.
const (
	RoutingHeader = "header"
	RoutingPath   = "path"
	RoutingBoth   = "both"
)

// Classifier names the FHIR interaction of a request from its method and
// URL path alone, following the server's routes. It must know where the
// FHIR base is and whether a tenant segment precedes it.
type Classifier struct {
	basePath string // "" or "/seg/…"
	routing  string
}

// NewClassifier returns the classifier for a server with the given base
// path ("" for the root, "/fhir", …) and tenant routing (RoutingHeader,
// RoutingPath, RoutingBoth).
func NewClassifier(basePath, routing string) (*Classifier, error) {
	switch routing {
	case RoutingHeader, RoutingPath, RoutingBoth:
	default:
		return nil, fmt.Errorf("metrics: tenant routing %q: want header, path or both", routing)
	}
	bp := strings.Trim(basePath, "/")
	if bp != "" {
		bp = "/" + bp
	}
	return &Classifier{basePath: bp, routing: routing}, nil
}

// Interaction returns the interaction label of r (one of the Interaction*
// constants). Paths are split on the escaped form, so an encoded "/" in
// an id cannot add a segment.
func (c *Classifier) Interaction(r *http.Request) string {
	p := r.URL.EscapedPath()
	switch p {
	case "/healthz", "/readyz":
		return InteractionHealth
	case "/metrics":
		return InteractionMetrics
	}
	if c.basePath != "" {
		switch {
		case p == c.basePath:
			p = "/"
		case strings.HasPrefix(p, c.basePath+"/"):
			p = p[len(c.basePath):]
		default:
			return InteractionOther
		}
	}
	p = strings.Trim(p, "/")
	var segs []string
	if p != "" {
		segs = strings.Split(p, "/")
	}
	switch c.routing {
	case RoutingPath:
		if len(segs) == 1 && segs[0] == "metadata" {
			break
		}
		if len(segs) == 0 {
			return InteractionOther
		}
		segs = segs[1:]
	case RoutingBoth:
		if len(segs) > 0 && !rootSegment(segs[0]) {
			segs = segs[1:]
		}
	}
	return interaction(r.Method, segs)
}

func rootSegment(s string) bool {
	return fhir.IsResourceType(s) || s == "metadata" || s == "_history" || strings.HasPrefix(s, "$")
}

// interaction maps method and the path segments below the tenant's FHIR
// base to an interaction, mirroring server.routes.
func interaction(method string, segs []string) string {
	get := method == http.MethodGet || method == http.MethodHead
	for _, s := range segs {
		if strings.HasPrefix(s, "$") {
			return InteractionOperation
		}
	}
	switch len(segs) {
	case 0:
		switch {
		case get:
			return InteractionSearchSystem
		case method == http.MethodPost:
			return InteractionBatch
		}
	case 1:
		switch {
		case segs[0] == "metadata" && get:
			return InteractionCapabilities
		case segs[0] == "_history" && get:
			return InteractionHistorySystem
		case !fhir.IsResourceType(segs[0]):
		case get:
			return InteractionSearchType
		case method == http.MethodPost:
			return InteractionCreate
		case method == http.MethodPut:
			return InteractionConditionalUpd
		case method == http.MethodDelete:
			return InteractionConditionalDel
		}
	case 2:
		switch {
		case !fhir.IsResourceType(segs[0]):
		case segs[1] == "_history" && get:
			return InteractionHistoryType
		case segs[1] == "_search" && method == http.MethodPost:
			return InteractionSearchType
		case get:
			return InteractionRead
		case method == http.MethodPut:
			return InteractionUpdate
		case method == http.MethodDelete:
			return InteractionDelete
		}
	case 3:
		if fhir.IsResourceType(segs[0]) && segs[2] == "_history" && get {
			return InteractionHistoryInstance
		}
	case 4:
		if fhir.IsResourceType(segs[0]) && segs[2] == "_history" && get {
			return InteractionVRead
		}
	}
	return InteractionOther
}

// methodLabel keeps the method label bounded: unknown methods collapse.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete,
		http.MethodPatch, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// Middleware wraps next so that every request is counted in
// fhirbucket_http_requests_total and timed in
// fhirbucket_http_request_duration_seconds under the interaction that
// interactionOf names (for example Classifier.Interaction).
func (m *Metrics) Middleware(interactionOf func(*http.Request) string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		m.httpInFlight.Inc()
		rec := &recorder{ResponseWriter: w}
		completed := false
		defer func() {
			m.httpInFlight.Dec()
			code := rec.code
			switch {
			case !completed:
				// A panic: net/http answers 500 or drops the connection.
				code = http.StatusInternalServerError
			case code == 0:
				code = http.StatusOK // nothing written: net/http sends 200
			}
			in := interactionOf(r)
			m.httpRequests.WithLabelValues(in, methodLabel(r.Method), strconv.Itoa(code)).Inc()
			m.httpDuration.WithLabelValues(in).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(rec, r)
		completed = true
	})
}

// WithEndpoint serves GET and HEAD /metrics from the registry and hands
// every other request to next. The FHIR handler never sees that path (it
// is no FHIR URL: "metrics" is neither a resource type nor, at the root,
// a tenant with a FHIR path below it).
func (m *Metrics) WithEndpoint(next http.Handler) http.Handler {
	h := m.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			h.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// recorder captures the status code.
type recorder struct {
	http.ResponseWriter
	code int
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 && code >= 200 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

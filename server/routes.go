package server

// The route table: every request the FHIR handler answers is one row. The
// mux (routes), the access rules (authz.go), the metrics labels
// (metricsLabel) and the CapabilityStatement (capability.go) are all
// derived from it, so a new interaction is one new row.

import (
	"fmt"
	"net/http"
	"slices"
	"strings"

	"fhirbucket/auth"
	"fhirbucket/fhir"
	"fhirbucket/metrics"
)

// route is one row of the route table.
type route struct {
	// pattern is the net/http mux pattern, relative to the tenant's FHIR
	// base: ServeHTTP strips the base path and the tenant segment first,
	// so the patterns need no tenant wildcard (which would make
	// "/{tenant}/{type}" and "/{type}/{id}" conflict).
	pattern string
	handle  func(*Server, http.ResponseWriter, *http.Request)
	// interaction is what the access check asks of the token.
	interaction auth.Interaction
	// label is the value of the metrics "interaction" label.
	label string
	// capability is the CapabilityStatement interaction codes the route
	// implements (space-separated), or "" when the statement does not
	// claim any (the route answers 501 or 405, or is no RESTful
	// interaction). A row whose service is not configured claims nothing
	// (servedRoutes).
	capability string
}

// optionalRoutes names the rows whose handler needs a service the server
// may be built without; without it they answer 501 and claim nothing.
var optionalRoutes = map[string]func(*Server) bool{
	"POST /{$}": func(s *Server) bool { return s.bundles != nil },
}

// optionalCodes names the capability codes that need a service the
// server may be built without; without it the rows do not claim them.
var optionalCodes = map[string]func(*Server) bool{
	"conditionalCreate": func(s *Server) bool { return s.index != nil },
	"conditionalUpdate": func(s *Server) bool { return s.index != nil },
	"conditionalDelete": func(s *Server) bool { return s.index != nil },
}

// servedRoutes is the route table as this server serves it.
func (s *Server) servedRoutes() []route {
	out := slices.Clone(routeTable)
	for i := range out {
		if has, ok := optionalRoutes[out[i].pattern]; ok && !has(s) {
			out[i].capability = ""
		}
		var codes []string
		for _, c := range strings.Fields(out[i].capability) {
			if has, ok := optionalCodes[c]; !ok || has(s) {
				codes = append(codes, c)
			}
		}
		out[i].capability = strings.Join(codes, " ")
	}
	return out
}

// routeTable is the route set. The CapabilityStatement lists the
// capability codes in the order of the rows.
var routeTable = []route{
	{"GET /metadata", (*Server).capabilities, auth.Capabilities, "capabilities", ""},
	{"GET /.well-known/smart-configuration", (*Server).smartConfiguration, auth.Discovery, "smart-configuration", ""},
	{"GET /{$}", (*Server).searchSystem, auth.SearchSystem, "search-system", ""},
	// Batch and transaction share the endpoint.
	{"POST /{$}", (*Server).batch, auth.Batch, "batch", "batch transaction"},
	// Bulk Data $export (server/export.go). The status and file routes
	// take the job and file in the query: a second path segment would
	// overlap "/{type}/_history".
	{"GET /$export", (*Server).exportSystem, auth.Export, "export", "export"},
	{"POST /$export", (*Server).exportSystem, auth.Export, "export", "export"},
	{"GET /Patient/$export", (*Server).exportPatient, auth.Export, "export", "patient-export"},
	{"POST /Patient/$export", (*Server).exportPatient, auth.Export, "export", "patient-export"},
	{"GET /Group/{id}/$export", (*Server).exportGroup, auth.Export, "export", "group-export"},
	{"POST /Group/{id}/$export", (*Server).exportGroup, auth.Export, "export", "group-export"},
	{"GET /$export-poll-status", (*Server).exportStatus, auth.Export, "export-status", ""},
	{"DELETE /$export-poll-status", (*Server).exportCancel, auth.Export, "export-status", ""},
	{"GET /$export-file", (*Server).exportFile, auth.Export, "export-file", ""},
	{"GET /_history", (*Server).historySystem, auth.HistorySystem, "history-system", "history-system"},
	{"GET /{type}/{id}", (*Server).read, auth.Read, "read", "read"},
	{"GET /{type}/{id}/_history/{vid}", (*Server).vread, auth.VRead, "vread", "vread"},
	{"PUT /{type}/{id}", (*Server).update, auth.Update, "update", "update"},
	{"DELETE /{type}/{id}", (*Server).delete, auth.Delete, "delete", "delete"},
	{"GET /{type}/{id}/_history", (*Server).historyInstance, auth.HistoryInstance, "history-instance", "history-instance"},
	{"GET /{type}/_history", (*Server).historyType, auth.HistoryType, "history-type", "history-type"},
	// POST answers conditional create too (If-None-Exist).
	{"POST /{type}", (*Server).create, auth.Create, "create", "create conditionalCreate"},
	{"GET /{type}", (*Server).searchType, auth.SearchType, "search-type", "search-type"},
	{"PUT /{type}", (*Server).conditionalWrite, auth.Update, "conditional-update", "conditionalUpdate"},
	{"DELETE /{type}", (*Server).conditionalWrite, auth.Delete, "conditional-delete", "conditionalDelete"},
	{"POST /{type}/_search", (*Server).searchByPost, auth.Operation, "search-type", ""},
	// POST on an instance names an operation ("$name": labelled so by
	// metricsLabel) or no interaction at all (405).
	{"POST /{type}/{id}", (*Server).postInstance, auth.Operation, metrics.InteractionOther, ""},
}

// labelHealth labels /healthz and /readyz in the metrics, labelToken the
// token endpoint.
const (
	labelHealth = "health"
	labelToken  = "token"
)

// capabilityFlags are the codes of a row that set a flag of every
// rest.resource (conditionalCreate, conditionalUpdate: true;
// conditionalDelete: "single") rather than naming an interaction.
var capabilityFlags = map[string]bool{"conditionalCreate": true, "conditionalUpdate": true, "conditionalDelete": true}

// capabilityLevels are the CapabilityStatement interaction codes of FHIR
// R4: true for a system-level code (rest.interaction), false for a
// type-level one (rest.resource.interaction).
var capabilityLevels = map[string]bool{
	"read": false, "vread": false, "update": false, "patch": false, "delete": false,
	"history-instance": false, "history-type": false, "create": false, "search-type": false,
	"transaction": true, "batch": true, "search-system": true, "history-system": true,
}

// operationDefinitions are the operations a row may claim in its
// capability field, with their canonical definitions: they are listed
// under rest.operation, not as interactions.
var operationDefinitions = map[string]string{
	"export":         "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
	"patient-export": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
	"group-export":   "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
}

// Route is one route the server serves, as the route table states it.
type Route struct {
	// Pattern is the net/http mux pattern, relative to the tenant's FHIR
	// base ("GET /{type}/{id}").
	Pattern string
	// Interaction is what the access check asks of the token.
	Interaction auth.Interaction
	// Label is the route's value of the metrics "interaction" label.
	Label string
	// Capability is the CapabilityStatement interaction codes and
	// resource flags (space-separated), or "".
	Capability string
}

// Public reports whether the route needs no token.
func (r Route) Public() bool { return r.Interaction.Need().Public }

// Routes returns every route the server serves, in table order.
func (s *Server) Routes() []Route {
	out := make([]Route, 0, len(s.table))
	for _, rt := range s.table {
		out = append(out, Route{Pattern: rt.pattern, Interaction: rt.interaction, Label: rt.label, Capability: rt.capability})
	}
	return out
}

// routes builds the mux from the table, each handler wrapped in the scope
// check of its interaction, and indexes the rows by pattern. A row
// without a known interaction, label or capability code panics (a
// programming error, like a conflicting mux pattern).
func (s *Server) routes() (*http.ServeMux, map[string]*route) {
	mux := http.NewServeMux()
	byPattern := make(map[string]*route, len(s.table))
	for i := range s.table {
		rt := &s.table[i]
		if !rt.interaction.Known() || rt.label == "" {
			panic(fmt.Sprintf("server: route %q needs a known interaction and a metrics label", rt.pattern))
		}
		for _, code := range strings.Fields(rt.capability) {
			_, op := operationDefinitions[code]
			if _, ok := capabilityLevels[code]; !ok && !op && !capabilityFlags[code] {
				panic(fmt.Sprintf("server: route %q: %q is no CapabilityStatement interaction code", rt.pattern, code))
			}
		}
		mux.HandleFunc(rt.pattern, s.guard(rt))
		byPattern[rt.pattern] = rt
	}
	return mux, byPattern
}

// metricsLabel is the metrics label of a request that matched rt (nil:
// no route), whose path segments below the tenant's base are segs. A
// wildcard holding an operation name ("$everything") makes the request an
// operation, and a {type} that names no resource type makes it "other":
// the handlers answer those with 501 and 404, whatever the row does. A
// request that matches no route is an operation when a segment names one
// (POST /Patient/1/$validate), else "other".
func metricsLabel(rt *route, segs []string) string {
	if rt == nil {
		for _, seg := range segs {
			if strings.HasPrefix(seg, "$") {
				return string(auth.Operation)
			}
		}
		return metrics.InteractionOther
	}
	_, path, _ := strings.Cut(rt.pattern, " ")
	label := rt.label
	for i, p := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		if i >= len(segs) || !strings.HasPrefix(p, "{") || p == "{$}" {
			continue
		}
		switch {
		case strings.HasPrefix(segs[i], "$"):
			return string(auth.Operation)
		case p == "{type}" && !fhir.IsResourceType(segs[i]):
			label = metrics.InteractionOther
		}
	}
	return label
}

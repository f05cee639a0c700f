package server

// Access control wiring. Every route is registered through routeMux, which
// looks its pattern up in routeAccess (the one table that says what each
// route does, as an auth.Interaction) and wraps the handler in the scope
// check. A pattern missing from the table panics in New, so no route can
// be added without an access rule; TestAuthRoutes walks Routes() to prove
// that each one answers 401 without a token and 403 without the scope.
//
// The checks run in two steps:
//   - before dispatch (serveFHIR → authenticate): a bearer token is
//     required for every request except the public routes, including
//     requests that match no route; the token's tenant must be the
//     request's tenant (else 403). Syntax errors found before that (a
//     malformed path, Accept or tenant id) still answer 400/406: they
//     depend on nothing stored.
//   - at dispatch (guard): the token's scopes must grant the route's
//     interaction on the {type} of the URL (else 403).

import (
	"errors"
	"fmt"
	"net/http"

	"fhirbucket/auth"
)

// routeAccess names the interaction of every route pattern.
var routeAccess = map[string]auth.Interaction{
	"GET /metadata":                   auth.Capabilities,
	"GET /{$}":                        auth.SearchSystem,
	"POST /{$}":                       auth.Batch,
	"GET /_history":                   auth.HistorySystem,
	"GET /{type}":                     auth.SearchType,
	"POST /{type}":                    auth.Create,
	"PUT /{type}":                     auth.Update, // conditional update
	"DELETE /{type}":                  auth.Delete, // conditional delete
	"GET /{type}/_history":            auth.HistoryType,
	"GET /{type}/{id}":                auth.Read,
	"PUT /{type}/{id}":                auth.Update,
	"DELETE /{type}/{id}":             auth.Delete,
	"POST /{type}/{id}":               auth.Operation,
	"GET /{type}/{id}/_history":       auth.HistoryInstance,
	"GET /{type}/{id}/_history/{vid}": auth.VRead,
}

// Route is one registered route and the interaction it is checked as.
type Route struct {
	// Pattern is the net/http mux pattern, relative to the tenant's FHIR
	// base ("GET /{type}/{id}").
	Pattern     string
	Interaction auth.Interaction
}

// Public reports whether the route needs no token.
func (r Route) Public() bool { return r.Interaction.Need().Public }

// Routes returns every route the server registered, in registration
// order.
func (s *Server) Routes() []Route { return append([]Route(nil), s.routeList...) }

// routeMux is the only way routes reach the mux: it has no method that
// registers a handler without its access rule.
type routeMux struct {
	s   *Server
	mux *http.ServeMux
}

func (s *Server) newRouteMux() *routeMux {
	s.routeList = nil
	s.access = map[string]auth.Interaction{}
	return &routeMux{s: s, mux: http.NewServeMux()}
}

// HandleFunc registers h for pattern, wrapped in the scope check of the
// pattern's interaction. It panics when routeAccess has no entry for the
// pattern (a programming error, like a conflicting mux pattern).
func (m *routeMux) HandleFunc(pattern string, h http.HandlerFunc) {
	in, ok := routeAccess[pattern]
	if !ok || !in.Known() {
		panic(fmt.Sprintf("server: route %q has no access rule in routeAccess (server/authz.go)", pattern))
	}
	m.s.routeList = append(m.s.routeList, Route{Pattern: pattern, Interaction: in})
	m.s.access[pattern] = in
	m.mux.HandleFunc(pattern, m.s.guard(in, h))
}

// authenticate checks the bearer token of a request that matched pattern
// ("" when it matched none) and that the token may use the request's
// tenant. It records the principal for guard and the access log.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, pattern string) error {
	if s.auth == nil {
		return nil
	}
	if in, ok := s.access[pattern]; ok && in.Need().Public {
		return nil
	}
	p, err := s.auth.Authenticate(r.Header)
	if err != nil {
		challenge := `Bearer realm="fhirbucket"`
		if r.Header.Get("Authorization") != "" {
			challenge += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
		return err
	}
	ri := info(r)
	ri.principal = p
	if !p.AllowsTenant(ri.tenant) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="fhirbucket", error="insufficient_scope"`)
		return fmt.Errorf("%w: token %q is not allowed to use tenant %q", auth.ErrForbidden, p.Name, ri.tenant)
	}
	return nil
}

// guard wraps a route's handler in the scope check of its interaction.
func (s *Server) guard(in auth.Interaction, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.auth == nil || in.Need().Public {
			h(w, r)
			return
		}
		ri := info(r)
		if ri.principal == nil {
			// authenticate did not run: fail closed.
			s.writeError(w, r, fmt.Errorf("%w: %s", auth.ErrUnauthenticated, errNoPrincipal))
			return
		}
		if err := ri.principal.Authorize(ri.tenant, in, r.PathValue("type")); err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fhirbucket", error="insufficient_scope"`)
			s.writeError(w, r, err)
			return
		}
		h(w, r)
	}
}

var errNoPrincipal = errors.New("the request was not authenticated before dispatch")

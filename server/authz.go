package server

// Access control wiring. Every row of the route table (routes.go) names
// the auth.Interaction of its route, and routes wraps each handler in the
// scope check of that interaction (guard), so no route can be served
// without an access rule; TestAuthRoutes walks Routes() to prove that each
// one answers 401 without a token and 403 without the scope.
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
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"fhirbucket/auth"
	"fhirbucket/outcome"
)

// authenticate checks the bearer token of a request that matched rt (nil
// when it matched none) and that the token may use the request's tenant.
// It records the principal for guard and the access log.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, rt *route) error {
	if s.auth == nil {
		return nil
	}
	if rt != nil && rt.interaction.Need().Public {
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

// guard is the handler of rt wrapped in the scope check of its
// interaction.
func (s *Server) guard(rt *route) http.HandlerFunc {
	in := rt.interaction
	return func(w http.ResponseWriter, r *http.Request) {
		if s.auth == nil || in.Need().Public {
			rt.handle(s, w, r)
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
		rt.handle(s, w, r)
	}
}

var errNoPrincipal = errors.New("the request was not authenticated before dispatch")

// tokenURL is the public URL of the token endpoint: below the configured
// base URL, else below the request's scheme and Host. It is the audience
// client assertions must name, so deployments behind a proxy set the base
// URL.
func (s *Server) tokenURL(r *http.Request) string {
	return s.publicBase(r) + TokenPath
}

// token serves the token endpoint ({base path}/auth/token). It is public
// (the client authenticates with its signed assertion) and knows no
// tenant: the client's registration binds it to one.
func (s *Server) token(w http.ResponseWriter, r *http.Request) {
	if s.tokens == nil {
		s.writeError(w, r, outcome.Errorf(http.StatusNotFound, "not-found",
			"this server issues no tokens: the token endpoint exists with SMART Backend Services authorization (auth mode smart)"))
		return
	}
	s.tokens.ServeToken(w, r, s.tokenURL(r))
}

// smartConfiguration serves /.well-known/smart-configuration of a FHIR
// base; only a server that issues tokens has one.
func (s *Server) smartConfiguration(w http.ResponseWriter, r *http.Request) {
	if s.tokens == nil {
		s.writeError(w, r, outcome.Errorf(http.StatusNotFound, "not-found",
			"this server does not use SMART authorization (its auth mode is not smart)"))
		return
	}
	data, err := json.Marshal(s.tokens.Configuration(s.tokenURL(r)))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, _ = w.Write(data)
}

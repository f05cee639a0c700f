package smart

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"fhirbucket/auth"
)

// Error is an OAuth 2.0 error answer of the token endpoint (RFC 6749
// §5.2): its code, a description for the client, and the HTTP status.
type Error struct {
	Code        string
	Description string
	Status      int
}

func (e *Error) Error() string { return "smart: " + e.Code + ": " + e.Description }

// The OAuth 2.0 error codes the endpoint answers.
const (
	CodeInvalidRequest       = "invalid_request"
	CodeInvalidClient        = "invalid_client"
	CodeInvalidScope         = "invalid_scope"
	CodeUnsupportedGrantType = "unsupported_grant_type"
	CodeServerError          = "server_error"
)

func invalidRequest(format string, a ...any) *Error {
	return &Error{CodeInvalidRequest, fmt.Sprintf(format, a...), http.StatusBadRequest}
}

// invalidClient is every failure to authenticate the client: the profile
// answers them all with invalid_client, and RFC 6749 allows 401.
func invalidClient(format string, a ...any) *Error {
	return &Error{CodeInvalidClient, fmt.Sprintf(format, a...), http.StatusUnauthorized}
}

// TokenResponse is the endpoint's answer to a granted request.
type TokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	Scope       string `json:"scope"`
}

// maxAssertionBytes bounds the client_assertion parameter.
const maxAssertionBytes = 16 << 10

// maxFormBytes bounds the body of a token request.
const maxFormBytes = 64 << 10

// Token answers a token request with the form parameters form, sent to
// the token endpoint whose URL is tokenURL (the assertion's aud). Every
// refusal is an *Error.
func (s *Service) Token(ctx context.Context, tokenURL string, form url.Values) (*TokenResponse, error) {
	one := func(name string) (string, *Error) {
		v := form[name]
		switch len(v) {
		case 0:
			return "", nil
		case 1:
			return v[0], nil
		}
		return "", invalidRequest("the parameter %s is given %d times", name, len(v))
	}
	var p [5]string
	for i, name := range []string{"grant_type", "client_assertion_type", "client_assertion", "scope", "client_id"} {
		v, err := one(name)
		if err != nil {
			return nil, err
		}
		p[i] = v
	}
	grant, assertionType, assertion, scope, formClient := p[0], p[1], p[2], p[3], p[4]
	switch {
	case grant == "":
		return nil, invalidRequest("grant_type is required: client_credentials")
	case grant != "client_credentials":
		return nil, &Error{CodeUnsupportedGrantType, fmt.Sprintf("grant_type %q is not supported: use client_credentials", trunc(grant)), http.StatusBadRequest}
	case assertionType == "":
		return nil, invalidRequest("client_assertion_type is required: %s", AssertionType)
	case assertionType != AssertionType:
		return nil, invalidClient("client_assertion_type %q is not supported: use %s", trunc(assertionType), AssertionType)
	case assertion == "":
		return nil, invalidRequest("client_assertion is required: a JWT signed with the client's private key")
	case len(assertion) > maxAssertionBytes:
		return nil, invalidClient("client_assertion is longer than %d bytes", maxAssertionBytes)
	case strings.TrimSpace(scope) == "":
		return nil, invalidRequest("scope is required, e.g. system/*.rs")
	}
	c, exp, jti, err := s.verifyAssertion(ctx, tokenURL, assertion)
	if err != nil {
		return nil, err
	}
	if formClient != "" && formClient != c.ID {
		return nil, invalidClient("client_id %q is not the assertion's issuer", trunc(formClient))
	}
	granted, err := Grant(c.Scopes, scope)
	if err != nil {
		return nil, err
	}
	switch err := s.replay.Claim(ctx, c, jti, exp); {
	case errors.Is(err, ErrReplayed):
		return nil, invalidClient("the assertion's jti was used before: sign a new assertion with a fresh jti for every token request")
	case err != nil:
		s.log.ErrorContext(ctx, "token endpoint: recording the jti", "client", c.ID, "error", err)
		return nil, &Error{CodeServerError, "the assertion could not be recorded; try again", http.StatusServiceUnavailable}
	}
	tok, texp, err := s.issue(tokenURL, c, granted)
	if err != nil {
		return nil, &Error{CodeServerError, "the access token could not be signed", http.StatusInternalServerError}
	}
	return &TokenResponse{AccessToken: tok, TokenType: "bearer", ExpiresIn: int(texp.Sub(s.now()).Round(time.Second) / time.Second), Scope: granted}, nil
}

// assertionClaims are the claims of a client assertion.
type assertionClaims struct {
	jwt.Claims
}

// verifyAssertion checks a client assertion as SMART Backend Services
// says: a JWS (RS384, ES384, …; never none or HS*) whose kid names one of
// the registered client's keys, signed by that key, iss = sub = the
// client id, aud = the token endpoint URL, exp present and at most five
// minutes ahead, and a jti. It returns the client, exp and jti.
func (s *Service) verifyAssertion(ctx context.Context, tokenURL, assertion string) (*Client, time.Time, string, error) {
	tok, err := jwt.ParseSigned(assertion, AssertionAlgorithms)
	if err != nil {
		return nil, time.Time{}, "", invalidClient("client_assertion is not a compact JWS signed with one of %s", algList())
	}
	if len(tok.Headers) != 1 {
		return nil, time.Time{}, "", invalidClient("client_assertion must carry exactly one signature")
	}
	h := tok.Headers[0]
	if h.KeyID == "" {
		return nil, time.Time{}, "", invalidClient("the assertion's header has no kid: name the signing key")
	}
	if typ, ok := h.ExtraHeaders[jose.HeaderType]; ok {
		if ts, _ := typ.(string); !strings.EqualFold(ts, "JWT") {
			return nil, time.Time{}, "", invalidClient("the assertion's typ header is %q, want JWT", trunc(fmt.Sprint(typ)))
		}
	}
	if h.JSONWebKey != nil {
		return nil, time.Time{}, "", invalidClient("the assertion embeds a key (jwk header): keys come from the registry only")
	}
	// Which client: read iss before the signature is checked, only to
	// find the keys to check it with.
	var unverified assertionClaims
	if err := tok.UnsafeClaimsWithoutVerification(&unverified); err != nil {
		return nil, time.Time{}, "", invalidClient("the assertion's claims are not a JSON object of JWT claims")
	}
	c := s.clients.Client(unverified.Issuer)
	if c == nil {
		return nil, time.Time{}, "", invalidClient("the assertion's iss %q is not a registered client", trunc(unverified.Issuer))
	}
	if jku, ok := h.ExtraHeaders["jku"]; ok {
		if js, _ := jku.(string); c.jwksURL == "" || js != c.jwksURL {
			return nil, time.Time{}, "", invalidClient("the assertion's jku header is not the client's registered jwks_url")
		}
	}
	keys := c.keys
	if c.jwksURL != "" {
		if keys, err = s.jwks.keys(ctx, c.jwksURL, h.KeyID); err != nil {
			return nil, time.Time{}, "", invalidClient("%v", err)
		}
	}
	found := keys.Key(h.KeyID)
	if len(found) == 0 {
		return nil, time.Time{}, "", invalidClient("kid %q is not one of client %q's keys", trunc(h.KeyID), c.ID)
	}
	var claims assertionClaims
	var verified bool
	for _, k := range found {
		if k.Algorithm != "" && k.Algorithm != h.Algorithm {
			continue
		}
		if tok.Claims(k.Key, &claims) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, time.Time{}, "", invalidClient("the assertion's signature does not verify with key %q of client %q (algorithm %s)", trunc(h.KeyID), c.ID, h.Algorithm)
	}
	now := s.now()
	switch {
	case claims.Issuer != c.ID || claims.Subject != c.ID:
		return nil, time.Time{}, "", invalidClient("the assertion's iss and sub must both be the client id")
	case !claims.Audience.Contains(tokenURL):
		return nil, time.Time{}, "", invalidClient("the assertion's aud must be the token endpoint URL %s", tokenURL)
	case claims.Expiry == nil:
		return nil, time.Time{}, "", invalidClient("the assertion has no exp")
	case claims.ID == "":
		return nil, time.Time{}, "", invalidClient("the assertion has no jti")
	case len(claims.ID) > 1024:
		return nil, time.Time{}, "", invalidClient("the assertion's jti is longer than 1024 bytes")
	case claims.Expiry.Time().After(now.Add(MaxAssertionLifetime + ClockSkew)):
		return nil, time.Time{}, "", invalidClient("the assertion's exp is more than %s ahead", MaxAssertionLifetime)
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Time: now}, ClockSkew); err != nil {
		switch {
		case errors.Is(err, jwt.ErrExpired):
			return nil, time.Time{}, "", invalidClient("the assertion has expired (exp is past)")
		default:
			return nil, time.Time{}, "", invalidClient("the assertion is not valid yet (nbf or iat is ahead)")
		}
	}
	return c, claims.Expiry.Time(), claims.ID, nil
}

func algList() string {
	names := make([]string, len(AssertionAlgorithms))
	for i, a := range AssertionAlgorithms {
		names[i] = string(a)
	}
	return strings.Join(names, ", ")
}

// trunc keeps client-chosen values short in error descriptions.
func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// splitScope splits a space-delimited scope parameter (RFC 6749 §3.3).
func splitScope(s string) []string { return strings.Fields(s) }

// Grant returns the scopes granted for the space-delimited request asked,
// given what the client may have: the intersection, scope by scope. A
// requested resource scope is granted with the permissions the allowed
// scopes give on its type (a request on * also yields the allowed scopes
// on single types, cut to what was asked); a named scope is granted when
// allowed. Each granted scope keeps the syntax it was asked in (v1 .read
// or v2 letters) when it can. A scope this server does not know, or a
// request of which nothing is granted, fails with invalid_scope.
func Grant(allowed []auth.Scope, asked string) (string, error) {
	var out []string
	add := func(s string) {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	fields := splitScope(asked)
	if len(fields) > 100 {
		return "", &Error{CodeInvalidScope, "more than 100 scopes asked", http.StatusBadRequest}
	}
	for _, f := range fields {
		want, err := auth.ParseScope(f)
		if err != nil {
			return "", &Error{CodeInvalidScope, fmt.Sprintf("scope %q is not one this server grants: %s", trunc(f), scopeHelp), http.StatusBadRequest}
		}
		if want.Named != "" {
			if slices.ContainsFunc(allowed, func(a auth.Scope) bool { return a.Named == want.Named }) {
				add(f)
			}
			continue
		}
		_, suffix, _ := strings.Cut(f, ".")
		v1 := suffix == "read" || suffix == "write" || suffix == "*"
		// Permissions on the asked type itself (a scope on * covers it).
		var have auth.Perm
		for _, a := range allowed {
			if a.Named == "" && (a.Type == "*" || a.Type == want.Type) {
				have |= a.Perm
			}
		}
		if g := want.Perm & have; g != 0 {
			add(spell(want.Type, g, g == want.Perm, f, v1))
		}
		if want.Type != "*" {
			continue
		}
		// A request on every type also yields what is allowed on single
		// types.
		for _, a := range allowed {
			if a.Named != "" || a.Type == "*" {
				continue
			}
			if g := want.Perm & a.Perm &^ have; g != 0 {
				add(spell(a.Type, g, false, "", v1))
			}
		}
	}
	if len(out) == 0 {
		return "", &Error{CodeInvalidScope, fmt.Sprintf("none of the scopes asked (%s) is allowed for this client", trunc(asked)), http.StatusBadRequest}
	}
	return strings.Join(out, " "), nil
}

const scopeHelp = "system/<Type|*>.read|.write|.* (SMART v1), system/<Type|*>.<cruds> (SMART v2), system/bulk-submit"

// spell writes the granted scope on typ with permissions g: the request
// itself when all of it was granted, else in the asked syntax where it
// fits.
func spell(typ string, g auth.Perm, whole bool, asked string, v1 bool) string {
	if whole && asked != "" {
		return asked
	}
	if v1 {
		switch g {
		case auth.PermRead | auth.PermSearch:
			return "system/" + typ + ".read"
		case auth.PermCreate | auth.PermUpdate | auth.PermDelete:
			return "system/" + typ + ".write"
		case auth.PermAll:
			return "system/" + typ + ".*"
		}
	}
	return "system/" + typ + "." + g.String()
}

// ServeToken is the token endpoint's HTTP handler for a request that was
// sent to tokenURL: POST, application/x-www-form-urlencoded, answered with
// the token or an OAuth 2.0 error as JSON, never cached.
func (s *Service) ServeToken(w http.ResponseWriter, r *http.Request, tokenURL string) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	resp, err := s.tokenRequest(w, r, tokenURL)
	if err != nil {
		var oe *Error
		if !errors.As(err, &oe) {
			oe = &Error{CodeServerError, "the token request failed", http.StatusInternalServerError}
		}
		s.log.InfoContext(r.Context(), "token request refused", "error", oe.Code, "reason", oe.Description)
		if oe.Code == CodeInvalidClient {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fhirbucket", error="invalid_client"`)
		}
		writeJSON(w, oe.Status, map[string]string{"error": oe.Code, "error_description": oe.Description})
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (s *Service) tokenRequest(w http.ResponseWriter, r *http.Request, tokenURL string) (*TokenResponse, error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, &Error{CodeInvalidRequest, "the token endpoint takes POST", http.StatusMethodNotAllowed}
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, invalidRequest("the body must be application/x-www-form-urlencoded")
	}
	if r.URL.RawQuery != "" {
		return nil, invalidRequest("token requests carry their parameters in the body, never in the query")
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return nil, invalidRequest("the body is not a valid form of at most %d bytes", maxFormBytes)
	}
	return s.Token(r.Context(), tokenURL, r.PostForm)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(data, '\n'))
}

// Configuration is the document of /.well-known/smart-configuration for a
// FHIR base whose token endpoint is tokenURL (SMART App Launch 2.x §
// Conformance): what this server supports, and nothing more.
func (s *Service) Configuration(tokenURL string) any {
	return configuration{
		TokenEndpoint:                 tokenURL,
		TokenEndpointAuthMethods:      []string{"private_key_jwt"},
		TokenEndpointAuthSigningAlgs:  strings.Split(algList(), ", "),
		GrantTypesSupported:           []string{"client_credentials"},
		ScopesSupported:               ScopesSupported,
		Capabilities:                  []string{"client-confidential-asymmetric", "permission-v1", "permission-v2"},
		CodeChallengeMethodsSupported: []string{},
	}
}

// ScopesSupported are the scopes /.well-known/smart-configuration names:
// the system scopes on every type in SMART v1 and v2 syntax, and
// bulk-submit. Scopes on single types (system/Patient.rs) are granted
// too.
var ScopesSupported = []string{
	"system/*.read", "system/*.write", "system/*.*",
	"system/*.rs", "system/*.cud", "system/*.cruds",
	"system/bulk-submit",
}

type configuration struct {
	TokenEndpoint                 string   `json:"token_endpoint"`
	TokenEndpointAuthMethods      []string `json:"token_endpoint_auth_methods_supported"`
	TokenEndpointAuthSigningAlgs  []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	GrantTypesSupported           []string `json:"grant_types_supported"`
	ScopesSupported               []string `json:"scopes_supported"`
	Capabilities                  []string `json:"capabilities"`
	CodeChallengeMethodsSupported []string `json:"code_challenge_methods_supported"`
}

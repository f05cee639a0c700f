// Package auth is fhirbucket's access control: bearer tokens read from a
// token file, each bound to one tenant (or every tenant) and to
// SMART-style system scopes, and the rules that decide whether a principal
// may perform an interaction on a resource type in a tenant.
//
// The package knows nothing about HTTP routing: the server labels each of
// its routes with an Interaction and asks Authorize. Tokens are kept only
// as SHA-256 hashes and compared in constant time.
package auth

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"fhirbucket/internal/layout"
)

// The errors callers test with errors.Is.
var (
	// ErrUnauthenticated: no token, a malformed Authorization header, or
	// a token the file does not list (HTTP 401).
	ErrUnauthenticated = errors.New("auth: unauthenticated")
	// ErrForbidden: a valid token whose tenant or scopes do not cover
	// the request (HTTP 403).
	ErrForbidden = errors.New("auth: forbidden")
	// ErrInvalidConfig: the token file or a scope in it is malformed.
	ErrInvalidConfig = errors.New("auth: invalid configuration")
)

// Mode is the authentication mode of a server.
type Mode string

// The modes. ModeNone is the default: every request is allowed, as suits
// an embedded server on a trusted host. Any networked deployment sets
// ModeToken (static bearer tokens) or ModeSMART (SMART Backend Services:
// package auth/smart).
const (
	ModeNone  Mode = "none"
	ModeToken Mode = "token"
	ModeSMART Mode = "smart"
)

// ParseMode maps the setting values "none", "token" and "smart".
func ParseMode(s string) (Mode, error) {
	switch Mode(s) {
	case ModeNone, ModeToken, ModeSMART:
		return Mode(s), nil
	}
	return "", fmt.Errorf("auth mode %q: want none, token or smart", s)
}

// AnyTenant in a token's tenant field binds the token to every tenant.
const AnyTenant = "*"

// TokenFile is the JSON document of FHIRBUCKET_AUTH_TOKEN_FILE:
//
//	{"tokens": [
//	  {"name": "etl-a", "sha256": "<64 hex digits>", "tenant": "a",
//	   "scopes": ["system/*.read", "system/Patient.write"]}
//	]}
//
// sha256 is the hex SHA-256 of the token exactly as the client sends it
// after "Bearer " (printf %s "$TOKEN" | sha256sum). The file never holds
// the tokens themselves.
type TokenFile struct {
	Tokens []TokenEntry `json:"tokens"`
}

// TokenEntry is one token of a TokenFile.
type TokenEntry struct {
	// Name identifies the token in logs; it must be unique.
	Name string `json:"name"`
	// SHA256 is the hex SHA-256 digest of the token.
	SHA256 string `json:"sha256"`
	// Tenant is the one tenant the token may use, or "*" for all.
	Tenant string `json:"tenant"`
	// Scopes are SMART-style system scopes (see ParseScope).
	Scopes []string `json:"scopes"`
}

// Principal is an authenticated token: who it is, which tenant it is
// bound to, and what it may do.
type Principal struct {
	// Name is the token's name from the token file.
	Name string
	// Tenant is the bound tenant, or AnyTenant.
	Tenant string
	// Scopes are the parsed scopes.
	Scopes []Scope
}

type entry struct {
	digest [sha256.Size]byte
	p      *Principal
}

// Authenticator checks bearer tokens against a token file. It is
// immutable and safe for concurrent use.
type Authenticator struct {
	entries []entry
}

// maxTokenFileBytes bounds the token file: it is read whole.
const maxTokenFileBytes = 4 << 20

// LoadFile reads and checks a token file.
func LoadFile(path string) (*Authenticator, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth: token file: %w", err)
	}
	defer f.Close()
	a, err := Parse(io.LimitReader(f, maxTokenFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// Parse reads a token file. Unknown fields, duplicate names or digests,
// empty scope lists, malformed digests, tenants and scopes are errors
// wrapping ErrInvalidConfig, so a typo fails start-up instead of granting
// or denying silently.
func Parse(r io.Reader) (*Authenticator, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("auth: reading token file: %w", err)
	}
	if len(data) > maxTokenFileBytes {
		return nil, fmt.Errorf("%w: token file is larger than %d bytes", ErrInvalidConfig, maxTokenFileBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var tf TokenFile
	if err := dec.Decode(&tf); err != nil {
		return nil, fmt.Errorf("%w: token file is not the expected JSON: %v", ErrInvalidConfig, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: token file has data after the JSON object", ErrInvalidConfig)
	}
	if len(tf.Tokens) == 0 {
		return nil, fmt.Errorf("%w: token file lists no tokens; every request would answer 401", ErrInvalidConfig)
	}
	a := &Authenticator{}
	names := map[string]bool{}
	digests := map[[sha256.Size]byte]string{}
	for i, te := range tf.Tokens {
		where := fmt.Sprintf("tokens[%d]", i)
		if te.Name == "" {
			return nil, fmt.Errorf("%w: %s: name is required", ErrInvalidConfig, where)
		}
		where = fmt.Sprintf("token %q", te.Name)
		if names[te.Name] {
			return nil, fmt.Errorf("%w: %s is listed twice", ErrInvalidConfig, where)
		}
		names[te.Name] = true
		raw, err := hex.DecodeString(te.SHA256)
		if err != nil || len(raw) != sha256.Size {
			return nil, fmt.Errorf("%w: %s: sha256 must be 64 hex digits (the SHA-256 of the token)", ErrInvalidConfig, where)
		}
		var d [sha256.Size]byte
		copy(d[:], raw)
		if other, dup := digests[d]; dup {
			return nil, fmt.Errorf("%w: %s has the same sha256 as token %q", ErrInvalidConfig, where, other)
		}
		digests[d] = te.Name
		if te.Tenant != AnyTenant {
			if err := layout.ValidTenant(te.Tenant); err != nil {
				return nil, fmt.Errorf("%w: %s: tenant: %v (or \"*\" for every tenant)", ErrInvalidConfig, where, err)
			}
		}
		if len(te.Scopes) == 0 {
			return nil, fmt.Errorf("%w: %s has no scopes", ErrInvalidConfig, where)
		}
		p := &Principal{Name: te.Name, Tenant: te.Tenant}
		for _, s := range te.Scopes {
			sc, err := ParseScope(s)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			p.Scopes = append(p.Scopes, sc)
		}
		a.entries = append(a.entries, entry{digest: d, p: p})
	}
	return a, nil
}

// HashToken returns the hex SHA-256 of a token, the value of a token
// file's sha256 field.
func HashToken(token string) string {
	d := sha256.Sum256([]byte(token))
	return hex.EncodeToString(d[:])
}

// BearerToken extracts the token of an "Authorization: Bearer <token>"
// header (RFC 6750 §2.1; the scheme is case-insensitive). Absent, repeated
// or malformed headers fail with ErrUnauthenticated. Tokens in the query
// string or the body are never read: they end up in logs.
func BearerToken(h http.Header) (string, error) {
	vals := h.Values("Authorization")
	switch len(vals) {
	case 0:
		return "", fmt.Errorf("%w: no Authorization header; send Authorization: Bearer <token>", ErrUnauthenticated)
	case 1:
	default:
		return "", fmt.Errorf("%w: the Authorization header is given %d times", ErrUnauthenticated, len(vals))
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("%w: the Authorization header must use the Bearer scheme", ErrUnauthenticated)
	}
	tok = strings.TrimLeft(tok, " ")
	if !validB64Token(tok) {
		return "", fmt.Errorf("%w: the bearer token is malformed", ErrUnauthenticated)
	}
	return tok, nil
}

// validB64Token checks RFC 6750's b64token: 1*( ALPHA / DIGIT / "-" / "." /
// "_" / "~" / "+" / "/" ) *"=".
func validB64Token(s string) bool {
	if s == "" || len(s) > 4096 {
		return false
	}
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~+/", c) >= 0 {
			continue
		}
		break
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// Authenticate returns the principal of the request's bearer token. A
// missing, malformed or unknown token fails with ErrUnauthenticated; the
// message never says which of the known tokens came close.
func (a *Authenticator) Authenticate(h http.Header) (*Principal, error) {
	tok, err := BearerToken(h)
	if err != nil {
		return nil, err
	}
	return a.lookup(tok)
}

// lookup compares the token's digest with every entry in constant time,
// without stopping at a match, so the time taken says nothing about which
// entry (if any) matched.
func (a *Authenticator) lookup(tok string) (*Principal, error) {
	d := sha256.Sum256([]byte(tok))
	var found *Principal
	for i := range a.entries {
		if subtle.ConstantTimeCompare(d[:], a.entries[i].digest[:]) == 1 {
			found = a.entries[i].p
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: the bearer token is not valid", ErrUnauthenticated)
	}
	return found, nil
}

// AllowsTenant reports whether the principal may act in tenant.
func (p *Principal) AllowsTenant(tenant string) bool {
	return p.Tenant == AnyTenant || p.Tenant == tenant
}

// Allows reports whether the scopes grant perm on typ (a resource type;
// "*" asks for every type, which only a scope on "*" grants). Permissions
// of several scopes add up.
func (p *Principal) Allows(typ string, perm Perm) bool {
	var have Perm
	for _, s := range p.Scopes {
		if s.Named == "" && (s.Type == "*" || s.Type == typ && typ != "*") {
			have |= s.Perm
		}
	}
	return perm != 0 && have&perm == perm
}

// HasNamed reports whether the principal holds the named scope.
func (p *Principal) HasNamed(name string) bool {
	for _, s := range p.Scopes {
		if s.Named == name {
			return true
		}
	}
	return false
}

// Authorize decides whether the principal may perform in on typ (the
// resource type of the request, "" at system level) in tenant. It fails
// with ErrForbidden, saying what is missing.
func (p *Principal) Authorize(tenant string, in Interaction, typ string) error {
	if !p.AllowsTenant(tenant) {
		return fmt.Errorf("%w: token %q is not allowed to use tenant %q", ErrForbidden, p.Name, tenant)
	}
	need := in.Need()
	switch {
	case need.Public:
		return nil
	case need.Named != "":
		if p.HasNamed(need.Named) {
			return nil
		}
		return fmt.Errorf("%w: %s needs scope system/%s", ErrForbidden, in, need.Named)
	}
	target := typ
	if need.AllTypes || target == "" {
		target = "*"
	}
	if p.Allows(target, need.Perm) {
		return nil
	}
	return fmt.Errorf("%w: %s needs scope %s (or system/%s.%s)", ErrForbidden, in, scopeHint(target, need.Perm), target, need.Perm)
}

// scopeHint names the SMART v1 scope that grants perm on typ.
func scopeHint(typ string, perm Perm) string {
	suffix := "*"
	switch {
	case perm&^(PermRead|PermSearch) == 0:
		suffix = "read"
	case perm&^(PermCreate|PermUpdate|PermDelete) == 0:
		suffix = "write"
	}
	return "system/" + typ + "." + suffix
}

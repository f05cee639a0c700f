// Package smart is fhirbucket's SMART Backend Services authorization: a
// registry of clients (each bound to a tenant and to the scopes it may
// have, with its public keys), the token endpoint that trades a client's
// signed JWT assertion for a short-lived access token (SMART App Launch
// 2.x, "Backend Services"; RFC 7523 private_key_jwt), and the check of
// those access tokens on every FHIR request.
//
// Every signature is made and checked by go-jose: the package selects the
// key (kid), restricts the algorithms and checks the claims the profile
// asks for, and never parses or verifies a signature itself. Accepted
// assertion ids (jti) are recorded in the bucket (Replay), so an assertion
// is used once across every replica that shares it.
package smart

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"unicode"

	"github.com/go-jose/go-jose/v4"

	"fhirbucket/auth"
	"fhirbucket/internal/layout"
)

// RegistryFile is the JSON document of FHIRBUCKET_AUTH_SMART_CLIENTS:
//
//	{"clients": [
//	  {"client_id": "bulk-acme", "tenant": "acme",
//	   "scopes": ["system/*.rs", "system/bulk-submit"],
//	   "jwks": {"keys": [{"kty": "EC", "crv": "P-384", "kid": "…", "x": "…", "y": "…"}]}},
//	  {"client_id": "etl", "tenant": "*", "scopes": ["system/Patient.read"],
//	   "jwks_url": "https://etl.example.org/.well-known/jwks.json"}
//	]}
//
// Each client has either jwks (its public keys inline) or jwks_url (an
// https URL the server fetches, with a timeout, and caches).
type RegistryFile struct {
	Clients []ClientEntry `json:"clients"`
}

// ClientEntry is one client of a RegistryFile.
type ClientEntry struct {
	ClientID string              `json:"client_id"`
	Tenant   string              `json:"tenant"`
	Scopes   []string            `json:"scopes"`
	JWKS     *jose.JSONWebKeySet `json:"jwks,omitempty"`
	JWKSURL  string              `json:"jwks_url,omitempty"`
}

// Client is a registered client.
type Client struct {
	// ID is the client_id, the iss and sub of its assertions.
	ID string
	// Tenant is the one tenant the client may use, or auth.AnyTenant.
	Tenant string
	// Scopes are what the client may be granted.
	Scopes []auth.Scope
	// keys are the inline public keys; nil when jwksURL is set.
	keys *jose.JSONWebKeySet
	// jwksURL is where the client publishes its keys, or "".
	jwksURL string
}

// JWKSURL is the URL the client's keys are fetched from, or "" when they
// are inline.
func (c *Client) JWKSURL() string { return c.jwksURL }

// Registry is the set of registered clients. It is immutable.
type Registry struct {
	clients map[string]*Client
}

// maxRegistryBytes bounds the registry file: it is read whole.
const maxRegistryBytes = 4 << 20

// maxClientIDLen bounds a client id (it becomes a key segment).
const maxClientIDLen = 255

// LoadRegistry reads and checks a registry file.
func LoadRegistry(path string) (*Registry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("smart: client registry: %w", err)
	}
	defer f.Close()
	r, err := ParseRegistry(io.LimitReader(f, maxRegistryBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// ParseRegistry reads a registry. Unknown fields, duplicate client ids,
// bad tenants and scopes, a client with both or neither of jwks and
// jwks_url, a non-https jwks_url and keys that are private, symmetric or
// without a kid are errors wrapping auth.ErrInvalidConfig.
func ParseRegistry(r io.Reader) (*Registry, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("smart: reading client registry: %w", err)
	}
	if len(data) > maxRegistryBytes {
		return nil, fmt.Errorf("%w: client registry is larger than %d bytes", auth.ErrInvalidConfig, maxRegistryBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var rf RegistryFile
	if err := dec.Decode(&rf); err != nil {
		return nil, fmt.Errorf("%w: client registry is not the expected JSON: %v", auth.ErrInvalidConfig, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: client registry has data after the JSON object", auth.ErrInvalidConfig)
	}
	if len(rf.Clients) == 0 {
		return nil, fmt.Errorf("%w: client registry lists no clients; every request would answer 401", auth.ErrInvalidConfig)
	}
	reg := &Registry{clients: map[string]*Client{}}
	for i, ce := range rf.Clients {
		c, err := newClient(ce)
		if err != nil {
			where := fmt.Sprintf("clients[%d]", i)
			if ce.ClientID != "" {
				where = fmt.Sprintf("client %q", ce.ClientID)
			}
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if _, dup := reg.clients[c.ID]; dup {
			return nil, fmt.Errorf("%w: client %q is listed twice", auth.ErrInvalidConfig, c.ID)
		}
		reg.clients[c.ID] = c
	}
	return reg, nil
}

func newClient(ce ClientEntry) (*Client, error) {
	if ce.ClientID == "" {
		return nil, fmt.Errorf("%w: client_id is required", auth.ErrInvalidConfig)
	}
	if len(ce.ClientID) > maxClientIDLen {
		return nil, fmt.Errorf("%w: client_id is longer than %d bytes", auth.ErrInvalidConfig, maxClientIDLen)
	}
	for _, r := range ce.ClientID {
		if !unicode.IsPrint(r) || r == ' ' {
			return nil, fmt.Errorf("%w: client_id must be printable characters without spaces", auth.ErrInvalidConfig)
		}
	}
	if ce.Tenant != auth.AnyTenant {
		if err := layout.ValidTenant(ce.Tenant); err != nil {
			return nil, fmt.Errorf("%w: tenant: %v (or \"*\" for every tenant)", auth.ErrInvalidConfig, err)
		}
	}
	if len(ce.Scopes) == 0 {
		return nil, fmt.Errorf("%w: no scopes", auth.ErrInvalidConfig)
	}
	c := &Client{ID: ce.ClientID, Tenant: ce.Tenant}
	for _, s := range ce.Scopes {
		sc, err := auth.ParseScope(s)
		if err != nil {
			return nil, err
		}
		c.Scopes = append(c.Scopes, sc)
	}
	switch {
	case ce.JWKS != nil && ce.JWKSURL != "":
		return nil, fmt.Errorf("%w: give jwks or jwks_url, not both", auth.ErrInvalidConfig)
	case ce.JWKS != nil:
		if err := checkPublicKeys(ce.JWKS); err != nil {
			return nil, fmt.Errorf("%w: jwks: %v", auth.ErrInvalidConfig, err)
		}
		c.keys = ce.JWKS
	case ce.JWKSURL != "":
		u, err := url.Parse(ce.JWKSURL)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Fragment != "" {
			return nil, fmt.Errorf("%w: jwks_url %q must be an absolute https URL without credentials or fragment", auth.ErrInvalidConfig, ce.JWKSURL)
		}
		c.jwksURL = ce.JWKSURL
	default:
		return nil, fmt.Errorf("%w: give the client's public keys as jwks or jwks_url", auth.ErrInvalidConfig)
	}
	return c, nil
}

// checkPublicKeys accepts a key set of asymmetric public keys, each with a
// kid (assertions select their key by kid).
func checkPublicKeys(set *jose.JSONWebKeySet) error {
	if len(set.Keys) == 0 {
		return errors.New("the key set has no keys")
	}
	for i, k := range set.Keys {
		switch {
		case !k.Valid():
			return fmt.Errorf("keys[%d] is not a valid key", i)
		case !k.IsPublic():
			return fmt.Errorf("keys[%d] (kid %q) is not an asymmetric public key: give only public keys, never a private or shared secret", i, k.KeyID)
		case k.KeyID == "":
			return fmt.Errorf("keys[%d] has no kid", i)
		case k.Use != "" && k.Use != "sig":
			return fmt.Errorf("keys[%d] (kid %q) has use %q, want sig", i, k.KeyID, k.Use)
		}
	}
	return nil
}

// Client returns the registered client with id, or nil.
func (r *Registry) Client(id string) *Client { return r.clients[id] }

// Len is the number of clients.
func (r *Registry) Len() int { return len(r.clients) }

// Clients returns every client.
func (r *Registry) Clients() []*Client {
	out := make([]*Client, 0, len(r.clients))
	for _, c := range r.clients {
		out = append(out, c)
	}
	return out
}

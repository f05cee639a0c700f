// Package smartclient is the client side of SMART Backend Services: it
// makes key pairs and their JWKS for the client registry, finds a FHIR
// server's token endpoint in its /.well-known/smart-configuration, signs
// client assertions and trades them for access tokens, kept until shortly
// before they expire. The project's CLIs (load, export, submit) share it.
//
// Signing is go-jose's; nothing here makes or checks a signature itself.
package smartclient

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// AssertionType is the client_assertion_type of a JWT assertion.
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// GenerateKey makes a private key for alg: ES384 (P-384, the default
// for "") or RS384 (RSA 3072 bits).
func GenerateKey(alg string) (crypto.Signer, error) {
	switch alg {
	case "", "ES384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "RS384":
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	return nil, fmt.Errorf("smartclient: algorithm %q: want ES384 or RS384", alg)
}

// Algorithm is the JWS algorithm an assertion signed with key uses:
// ES256/ES384/ES512 by curve, RS384 for RSA.
func Algorithm(key crypto.Signer) (jose.SignatureAlgorithm, error) {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return jose.ES256, nil
		case elliptic.P384():
			return jose.ES384, nil
		case elliptic.P521():
			return jose.ES512, nil
		}
	case *rsa.PrivateKey:
		return jose.RS384, nil
	}
	return "", fmt.Errorf("smartclient: want an EC (P-256, P-384, P-521) or RSA private key, got %T", key)
}

// KeyID is the kid of a key: its RFC 7638 JWK thumbprint (SHA-256,
// base64url), so that the registry entry and the client agree on it
// without being told.
func KeyID(key crypto.Signer) (string, error) {
	jwk := jose.JSONWebKey{Key: key.Public()}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("smartclient: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// PublicJWKS is the key set to register for key: its public half, with
// kid (KeyID), alg and use "sig".
func PublicJWKS(key crypto.Signer) (jose.JSONWebKeySet, error) {
	alg, err := Algorithm(key)
	if err != nil {
		return jose.JSONWebKeySet{}, err
	}
	kid, err := KeyID(key)
	if err != nil {
		return jose.JSONWebKeySet{}, err
	}
	return jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: kid, Algorithm: string(alg), Use: "sig"}}}, nil
}

// MarshalPrivateKey encodes key as a PKCS #8 PEM block ("PRIVATE KEY"),
// the form openssl genpkey writes.
func MarshalPrivateKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("smartclient: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePrivateKey reads a private key: PEM (PKCS #8 "PRIVATE KEY", SEC 1
// "EC PRIVATE KEY" or PKCS #1 "RSA PRIVATE KEY") or a private JWK. The
// JWK's kid, if any, is returned; "" otherwise.
func ParsePrivateKey(data []byte) (crypto.Signer, string, error) {
	if block, _ := pem.Decode(data); block != nil {
		var k any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			return nil, "", fmt.Errorf("smartclient: PEM block %q is not a private key", block.Type)
		}
		if err != nil {
			return nil, "", fmt.Errorf("smartclient: %w", err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, "", fmt.Errorf("smartclient: unsupported private key %T", k)
		}
		if _, err := Algorithm(s); err != nil {
			return nil, "", err
		}
		return s, "", nil
	}
	var jwk jose.JSONWebKey
	if err := json.Unmarshal(data, &jwk); err != nil {
		return nil, "", errors.New("smartclient: the key is neither PEM nor a JWK")
	}
	s, ok := jwk.Key.(crypto.Signer)
	if !ok || jwk.IsPublic() {
		return nil, "", errors.New("smartclient: the JWK is not a private EC or RSA key")
	}
	if _, err := Algorithm(s); err != nil {
		return nil, "", err
	}
	return s, jwk.KeyID, nil
}

// LoadPrivateKey reads a private key file (see ParsePrivateKey).
func LoadPrivateKey(path string) (crypto.Signer, string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("smartclient: private key: %w", err)
	}
	k, kid, err := ParsePrivateKey(data)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", path, err)
	}
	return k, kid, nil
}

// Assertion signs a client assertion for clientID and the token endpoint
// tokenURL: iss = sub = clientID, aud = tokenURL, a fresh random jti,
// exp lifetime after now (at most five minutes), kid in the header.
func Assertion(key crypto.Signer, kid, clientID, tokenURL string, now time.Time, lifetime time.Duration) (string, error) {
	alg, err := Algorithm(key)
	if err != nil {
		return "", err
	}
	if kid == "" {
		if kid, err = KeyID(key); err != nil {
			return "", err
		}
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("smartclient: %w", err)
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	return jwt.Signed(sig).Claims(jwt.Claims{
		Issuer: clientID, Subject: clientID, Audience: jwt.Audience{tokenURL},
		ID: hex.EncodeToString(jti[:]), Expiry: jwt.NewNumericDate(now.Add(lifetime)),
	}).Serialize()
}

// Discover returns the token endpoint that the FHIR base at baseURL
// names in its /.well-known/smart-configuration. header is sent with the
// request (X-Tenant-ID, for a server that takes the tenant from it).
func Discover(ctx context.Context, hc *http.Client, baseURL string, header http.Header) (string, error) {
	u := strings.TrimSuffix(baseURL, "/") + "/.well-known/smart-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("smartclient: %w", err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("smartclient: discovering the token endpoint: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("smartclient: reading %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("smartclient: GET %s answered %s: the server does not offer SMART Backend Services (give the token URL)", u, resp.Status)
	}
	var doc struct {
		TokenEndpoint string   `json:"token_endpoint"`
		AuthMethods   []string `json:"token_endpoint_auth_methods_supported"`
	}
	if err := json.Unmarshal(data, &doc); err != nil || doc.TokenEndpoint == "" {
		return "", fmt.Errorf("smartclient: %s names no token_endpoint", u)
	}
	if tu, err := url.Parse(doc.TokenEndpoint); err != nil || (tu.Scheme != "https" && tu.Scheme != "http") || tu.Host == "" {
		return "", fmt.Errorf("smartclient: %s: token_endpoint %q is not an absolute http(s) URL", u, doc.TokenEndpoint)
	}
	return doc.TokenEndpoint, nil
}

// Config configures a Source.
type Config struct {
	// BaseURL is the FHIR base; its smart-configuration names the token
	// endpoint unless TokenURL is given.
	BaseURL string
	// TokenURL is the token endpoint; "" to discover it.
	TokenURL string
	// Header is sent with the discovery request (X-Tenant-ID).
	Header http.Header
	// ClientID is the registered client id.
	ClientID string
	// Key signs the assertions; KeyID is their kid (default KeyID(Key)).
	Key   crypto.Signer
	KeyID string
	// Scope is the space-delimited scopes to ask for.
	Scope string
	// HTTPClient sends the requests. Default http.DefaultClient.
	HTTPClient *http.Client
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Source hands out access tokens, asking the token endpoint for a new one
// when the last is within a tenth of its lifetime (at least 10 s) of
// expiring. It is safe for concurrent use.
type Source struct {
	cfg Config

	mu       sync.Mutex
	tokenURL string
	token    string
	renewAt  time.Time
	scope    string
}

// New checks cfg and returns a Source. It does no I/O.
func New(cfg Config) (*Source, error) {
	if cfg.ClientID == "" || cfg.Key == nil {
		return nil, errors.New("smartclient: a client id and a private key are required")
	}
	if cfg.Scope == "" {
		return nil, errors.New("smartclient: a scope is required")
	}
	if cfg.BaseURL == "" && cfg.TokenURL == "" {
		return nil, errors.New("smartclient: a FHIR base URL or a token URL is required")
	}
	if _, err := Algorithm(cfg.Key); err != nil {
		return nil, err
	}
	if cfg.KeyID == "" {
		kid, err := KeyID(cfg.Key)
		if err != nil {
			return nil, err
		}
		cfg.KeyID = kid
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Source{cfg: cfg, tokenURL: cfg.TokenURL}, nil
}

// Error is a refusal of the token endpoint.
type Error struct {
	Status      int
	Code        string
	Description string
}

func (e *Error) Error() string {
	return fmt.Sprintf("smartclient: the token endpoint answered %d %s: %s", e.Status, e.Code, e.Description)
}

// Scope is the scope the last token was granted ("" before the first).
func (s *Source) Scope() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.scope
}

// Token returns a valid access token.
func (s *Source) Token(ctx context.Context) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	if s.token != "" && now.Before(s.renewAt) {
		return s.token, nil
	}
	if s.tokenURL == "" {
		u, err := Discover(ctx, s.cfg.HTTPClient, s.cfg.BaseURL, s.cfg.Header)
		if err != nil {
			return "", err
		}
		s.tokenURL = u
	}
	assertion, err := Assertion(s.cfg.Key, s.cfg.KeyID, s.cfg.ClientID, s.tokenURL, now, 4*time.Minute)
	if err != nil {
		return "", err
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {AssertionType},
		"client_assertion":      {assertion},
		"scope":                 {s.cfg.Scope},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", fmt.Errorf("smartclient: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := s.cfg.HTTPClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("smartclient: token request: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("smartclient: reading the token response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		_ = json.Unmarshal(data, &e)
		return "", &Error{Status: resp.StatusCode, Code: e.Error, Description: e.Description}
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int    `json:"expires_in"`
		Scope       string `json:"scope"`
	}
	if err := json.Unmarshal(data, &tr); err != nil || tr.AccessToken == "" || !strings.EqualFold(tr.TokenType, "bearer") {
		return "", errors.New("smartclient: the token response holds no bearer access_token")
	}
	life := time.Duration(tr.ExpiresIn) * time.Second
	if life <= 0 {
		life = time.Minute
	}
	margin := max(life/10, 10*time.Second)
	s.token, s.scope, s.renewAt = tr.AccessToken, tr.Scope, now.Add(life-margin)
	return s.token, nil
}

// Invalidate forgets the current token, so that the next Token call asks
// for a new one (after a 401 from the FHIR server).
func (s *Source) Invalidate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = ""
}

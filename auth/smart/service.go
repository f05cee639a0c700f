package smart

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"fhirbucket/auth"
)

// Limits of the profile (SMART App Launch 2.x, Backend Services).
const (
	// MaxAssertionLifetime: an assertion's exp is at most five minutes
	// ahead.
	MaxAssertionLifetime = 5 * time.Minute
	// MaxTokenLifetime is the longest access token lifetime, and the
	// default.
	MaxTokenLifetime = 5 * time.Minute
	// ClockSkew is the leeway for clocks that disagree: on exp, nbf and
	// iat of assertions and access tokens.
	ClockSkew = 30 * time.Second
)

// AssertionType is the client_assertion_type of a JWT assertion.
const AssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// AssertionAlgorithms are the signature algorithms accepted on client
// assertions: the profile's RS384 and ES384, and their SHA-256 and
// SHA-512 siblings. Symmetric algorithms (HS*) and "none" are never
// accepted.
var AssertionAlgorithms = []jose.SignatureAlgorithm{jose.RS384, jose.ES384, jose.RS256, jose.ES256, jose.RS512, jose.ES512}

// accessTokenType is the typ header of the access tokens (RFC 9068).
const accessTokenType = "at+jwt"

// Config configures a Service. Clients and Replay are required.
type Config struct {
	// Clients are the registered clients.
	Clients *Registry
	// Replay records accepted assertion ids.
	Replay Replay
	// SigningKey signs the access tokens: an ECDSA P-256 or P-384 or an
	// RSA (2048 bits or more) private key. Every replica behind one
	// address needs the same key. nil: a key made at start-up, so that
	// tokens are valid only at this process.
	SigningKey crypto.Signer
	// TokenLifetime is the access token lifetime, at most and by default
	// MaxTokenLifetime.
	TokenLifetime time.Duration
	// HTTPClient fetches the clients' jwks_url key sets. Default: a
	// client with the JWKSTimeout.
	HTTPClient *http.Client
	// JWKSTimeout bounds each key-set fetch. Default 5s.
	JWKSTimeout time.Duration
	// JWKSCacheTTL is how long a fetched key set is used. Default 5m.
	JWKSCacheTTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives the reason of each refused token request. Default
	// slog.Default().
	Logger *slog.Logger
}

// Service is the token endpoint and the access-token check of SMART
// Backend Services. It is safe for concurrent use.
type Service struct {
	clients  *Registry
	replay   Replay
	lifetime time.Duration
	now      func() time.Time
	log      *slog.Logger
	jwks     *jwksCache

	signer   jose.Signer
	alg      jose.SignatureAlgorithm
	verifyBy jose.JSONWebKey // the public half of the signing key
}

// New checks cfg and returns the service.
func New(cfg Config) (*Service, error) {
	if cfg.Clients == nil || cfg.Clients.Len() == 0 {
		return nil, errors.New("smart: Config.Clients is required")
	}
	if cfg.Replay == nil {
		return nil, errors.New("smart: Config.Replay is required")
	}
	s := &Service{clients: cfg.Clients, replay: cfg.Replay, lifetime: cfg.TokenLifetime, now: cfg.Now, log: cfg.Logger}
	if s.lifetime == 0 {
		s.lifetime = MaxTokenLifetime
	}
	if s.lifetime < time.Second || s.lifetime > MaxTokenLifetime {
		return nil, fmt.Errorf("smart: the token lifetime %s must be between 1s and %s", s.lifetime, MaxTokenLifetime)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	timeout, ttl := cfg.JWKSTimeout, cfg.JWKSCacheTTL
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	if ttl <= 0 {
		ttl = 5 * time.Minute
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: timeout}
	}
	s.jwks = &jwksCache{client: hc, timeout: timeout, ttl: ttl, minRefetch: 10 * time.Second, now: s.now, entries: map[string]*jwksEntry{}}

	key := cfg.SigningKey
	if key == nil {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("smart: making a signing key: %w", err)
		}
		key = k
	}
	alg, err := SigningAlgorithm(key)
	if err != nil {
		return nil, err
	}
	s.alg = alg
	s.verifyBy = jose.JSONWebKey{Key: key.Public(), Algorithm: string(alg), Use: "sig"}
	tp, err := s.verifyBy.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("smart: signing key: %w", err)
	}
	s.verifyBy.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	s.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: s.verifyBy.KeyID}},
		(&jose.SignerOptions{}).WithType(accessTokenType))
	if err != nil {
		return nil, fmt.Errorf("smart: signing key: %w", err)
	}
	return s, nil
}

// SigningAlgorithm is the JWS algorithm for a private key: ES256 for
// P-256, ES384 for P-384, RS384 for RSA keys of 2048 bits or more. Other
// keys are refused.
func SigningAlgorithm(key crypto.Signer) (jose.SignatureAlgorithm, error) {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return jose.ES256, nil
		case elliptic.P384():
			return jose.ES384, nil
		}
		return "", fmt.Errorf("%w: signing key: EC keys must be on P-256 or P-384", auth.ErrInvalidConfig)
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return "", fmt.Errorf("%w: signing key: RSA keys need at least 2048 bits", auth.ErrInvalidConfig)
		}
		return jose.RS384, nil
	}
	return "", fmt.Errorf("%w: signing key: want an EC (P-256, P-384) or RSA private key, got %T", auth.ErrInvalidConfig, key)
}

// Clients are the registered clients.
func (s *Service) Clients() []*Client { return s.clients.Clients() }

// Lifetime is the access token lifetime.
func (s *Service) Lifetime() time.Duration { return s.lifetime }

// accessClaims are the claims of an access token.
type accessClaims struct {
	jwt.Claims
	ClientID string `json:"client_id"`
	Scope    string `json:"scope"`
	Tenant   string `json:"tenant"`
}

// issue signs an access token for c with the granted scopes.
func (s *Service) issue(tokenURL string, c *Client, scope string) (string, time.Time, error) {
	now := s.now()
	exp := now.Add(s.lifetime)
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", exp, err
	}
	claims := accessClaims{
		Claims: jwt.Claims{
			Issuer: tokenURL, Subject: c.ID, ID: hex.EncodeToString(id[:]),
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(exp),
		},
		ClientID: c.ID, Scope: scope, Tenant: c.Tenant,
	}
	tok, err := jwt.Signed(s.signer).Claims(claims).Serialize()
	return tok, exp, err
}

// Authenticate returns the principal of the request's access token: a
// token this service (or a replica with the same signing key) issued,
// not expired, for a client that is still registered. Anything else
// fails with auth.ErrUnauthenticated.
func (s *Service) Authenticate(h http.Header) (*auth.Principal, error) {
	raw, err := auth.BearerToken(h)
	if err != nil {
		return nil, err
	}
	return s.verifyAccessToken(raw)
}

func (s *Service) verifyAccessToken(raw string) (*auth.Principal, error) {
	bad := func(why string) error {
		return fmt.Errorf("%w: the access token %s", auth.ErrUnauthenticated, why)
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{s.alg})
	if err != nil {
		return nil, bad("is not one this server issued")
	}
	if len(tok.Headers) != 1 || tok.Headers[0].ExtraHeaders[jose.HeaderType] != accessTokenType || tok.Headers[0].KeyID != s.verifyBy.KeyID {
		return nil, bad("is not one this server issued")
	}
	var claims accessClaims
	if err := tok.Claims(s.verifyBy.Key, &claims); err != nil {
		return nil, bad("is not one this server issued")
	}
	if claims.Expiry == nil {
		return nil, bad("has no expiry")
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Time: s.now()}, ClockSkew); err != nil {
		if errors.Is(err, jwt.ErrExpired) {
			return nil, bad("has expired: ask the token endpoint for a new one")
		}
		return nil, bad("is not valid yet")
	}
	c := s.clients.Client(claims.ClientID)
	if c == nil || claims.Subject != c.ID || claims.Tenant != c.Tenant {
		return nil, bad("names a client that is not registered (any more)")
	}
	p := &auth.Principal{Name: c.ID, Tenant: c.Tenant}
	for _, f := range splitScope(claims.Scope) {
		sc, err := auth.ParseScope(f)
		if err != nil {
			return nil, bad("holds a scope this server does not know")
		}
		p.Scopes = append(p.Scopes, sc)
	}
	return p, nil
}

package smart_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"fhirbucket/auth"
	"fhirbucket/auth/smart"
	"fhirbucket/auth/smartclient"
	"fhirbucket/internal/layout"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
)

const tokenURL = "https://fhir.example.org/auth/token"

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// fixture is a registry of clients with keys, and the pieces to build
// services on one bucket.
type fixture struct {
	t      testing.TB
	keys   map[string]crypto.Signer // client id -> its key
	reg    *smart.Registry
	bucket storage.Bucket
	clock  *clock
	sign   crypto.Signer // the servers' shared signing key
}

func genKey(t testing.TB, alg string) crypto.Signer {
	t.Helper()
	k, err := smartclient.GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sharedRSAKey is one RSA key for every fixture: making RSA keys is slow.
var sharedRSAKey = func() func(testing.TB) crypto.Signer {
	var once sync.Once
	var key crypto.Signer
	return func(t testing.TB) crypto.Signer {
		once.Do(func() { key = genKey(t, "RS384") })
		return key
	}
}()

func registryEntry(t testing.TB, id, tenant string, key crypto.Signer, scopes ...string) smart.ClientEntry {
	t.Helper()
	set, err := smartclient.PublicJWKS(key)
	if err != nil {
		t.Fatal(err)
	}
	return smart.ClientEntry{ClientID: id, Tenant: tenant, Scopes: scopes, JWKS: &set}
}

func parseRegistry(t testing.TB, entries ...smart.ClientEntry) *smart.Registry {
	t.Helper()
	data, err := json.Marshal(smart.RegistryFile{Clients: entries})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := smart.ParseRegistry(strings.NewReader(string(data)))
	if err != nil {
		t.Fatalf("ParseRegistry: %v\n%s", err, data)
	}
	return reg
}

func newFixture(t testing.TB) *fixture {
	f := &fixture{t: t, keys: map[string]crypto.Signer{}, bucket: memstore.New(), clock: &clock{t: time.Now()}}
	f.keys["es"] = genKey(t, "ES384")
	f.keys["rs"] = sharedRSAKey(t)
	f.keys["ops"] = genKey(t, "ES384")
	f.reg = parseRegistry(t,
		registryEntry(t, "es", "a", f.keys["es"], "system/*.read", "system/Observation.cruds", "system/bulk-submit"),
		registryEntry(t, "rs", "a", f.keys["rs"], "system/Patient.rs"),
		registryEntry(t, "ops", "*", f.keys["ops"], "system/*.rs"),
	)
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	f.sign = k
	return f
}

// replica is one server process on the fixture's bucket.
func (f *fixture) replica(mod ...func(*smart.Config)) *smart.Service {
	f.t.Helper()
	cfg := smart.Config{
		Clients: f.reg,
		Replay: &smart.BucketReplay{Bucket: func(tenant string) (storage.Bucket, error) {
			return storage.Prefixed(f.bucket, tenant)
		}, AnyTenantBase: "default", Now: f.clock.now},
		SigningKey: f.sign,
		Now:        f.clock.now,
		Logger:     testenv.QuietLogger(),
	}
	for _, m := range mod {
		m(&cfg)
	}
	s, err := smart.New(cfg)
	if err != nil {
		f.t.Fatalf("smart.New: %v", err)
	}
	return s
}

// claims are the claims of a test assertion.
type claims struct {
	Iss string   `json:"iss,omitempty"`
	Sub string   `json:"sub,omitempty"`
	Aud []string `json:"aud,omitempty"`
	Exp int64    `json:"exp,omitempty"`
	Nbf int64    `json:"nbf,omitempty"`
	Jti string   `json:"jti,omitempty"`
}

func (f *fixture) good(client string) claims {
	return claims{Iss: client, Sub: client, Aud: []string{tokenURL}, Exp: f.clock.now().Add(4 * time.Minute).Unix(), Jti: randomID(f.t)}
}

func randomID(t testing.TB) string {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// signWith signs c with key under kid and alg.
func signWith(t testing.TB, alg jose.SignatureAlgorithm, key any, kid string, c claims) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.Signed(sig).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (f *fixture) assertion(client string, c claims) string {
	f.t.Helper()
	key := f.keys[client]
	kid, _ := smartclient.KeyID(key)
	alg, _ := smartclient.Algorithm(key)
	return signWith(f.t, alg, key, kid, c)
}

func form(assertion, scope string) url.Values {
	return url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {smart.AssertionType},
		"client_assertion":      {assertion},
		"scope":                 {scope},
	}
}

func oauthCode(t testing.TB, err error) (string, int) {
	t.Helper()
	var oe *smart.Error
	if !errors.As(err, &oe) {
		t.Fatalf("error %v is no *smart.Error", err)
	}
	return oe.Code, oe.Status
}

// TestTokenHappyPath: an ES384 and an RS384 client get tokens whose
// principal carries the client's tenant and the granted scopes, in both
// SMART v1 and v2 syntax.
func TestTokenHappyPath(t *testing.T) {
	f := newFixture(t)
	s := f.replica()
	for _, c := range []struct{ client, asked, granted, tenant string }{
		{"es", "system/Patient.read system/bulk-submit", "system/Patient.read system/bulk-submit", "a"},
		{"es", "system/*.rs", "system/*.rs", "a"},
		{"es", "system/Observation.write system/Patient.cruds", "system/Observation.write system/Patient.rs", "a"},
		{"rs", "system/*.read", "system/Patient.read", "a"},
		{"rs", "system/Patient.rs system/Observation.rs", "system/Patient.rs", "a"},
		{"ops", "system/*.*", "system/*.read", "*"},
	} {
		resp, err := s.Token(t.Context(), tokenURL, form(f.assertion(c.client, f.good(c.client)), c.asked))
		if err != nil {
			t.Fatalf("%s asking %q: %v", c.client, c.asked, err)
		}
		if resp.Scope != c.granted || resp.TokenType != "bearer" || resp.ExpiresIn != 300 {
			t.Errorf("%s asking %q: scope %q, type %q, expires_in %d; want %q, bearer, 300", c.client, c.asked, resp.Scope, resp.TokenType, resp.ExpiresIn, c.granted)
		}
		p, err := s.Authenticate(http.Header{"Authorization": {"Bearer " + resp.AccessToken}})
		if err != nil {
			t.Fatalf("Authenticate: %v", err)
		}
		if p.Name != c.client || p.Tenant != c.tenant {
			t.Errorf("principal %q of %q, want %q of %q", p.Name, p.Tenant, c.client, c.tenant)
		}
		var got []string
		for _, sc := range p.Scopes {
			got = append(got, sc.String())
		}
		want := []string{}
		for _, g := range strings.Fields(c.granted) {
			sc, _ := auth.ParseScope(g)
			want = append(want, sc.String())
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("principal scopes %v, want %v", got, want)
		}
	}
}

// TestTokenRejections: every way an assertion or a token request can be
// wrong is refused with the OAuth 2.0 error and status it deserves, and
// none of them issues a token.
func TestTokenRejections(t *testing.T) {
	f := newFixture(t)
	s := f.replica()
	esKid, _ := smartclient.KeyID(f.keys["es"])
	pubDER, err := x509.MarshalPKIXPublicKey(f.keys["es"].Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	pubJWK, _ := json.Marshal(jose.JSONWebKey{Key: f.keys["es"].Public()})
	other := genKey(t, "ES384")
	now := f.clock.now()
	with := func(mod func(*claims)) string {
		c := f.good("es")
		mod(&c)
		return f.assertion("es", c)
	}
	none := func() string {
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","kid":"` + esKid + `","typ":"JWT"}`))
		p, _ := json.Marshal(f.good("es"))
		return h + "." + base64.RawURLEncoding.EncodeToString(p) + "."
	}
	replayed := f.assertion("es", f.good("es"))
	if _, err := s.Token(t.Context(), tokenURL, form(replayed, "system/*.read")); err != nil {
		t.Fatalf("first use: %v", err)
	}
	cases := []struct {
		name   string
		form   url.Values
		code   string
		status int
	}{
		{"wrong aud", form(with(func(c *claims) { c.Aud = []string{"https://other.example.org/auth/token"} }), "system/*.read"), "invalid_client", 401},
		{"no aud", form(with(func(c *claims) { c.Aud = nil }), "system/*.read"), "invalid_client", 401},
		{"expired", form(with(func(c *claims) { c.Exp = now.Add(-time.Minute).Unix() }), "system/*.read"), "invalid_client", 401},
		{"no exp", form(with(func(c *claims) { c.Exp = 0 }), "system/*.read"), "invalid_client", 401},
		{"exp too far ahead", form(with(func(c *claims) { c.Exp = now.Add(10 * time.Minute).Unix() }), "system/*.read"), "invalid_client", 401},
		{"exp just past the limit", form(with(func(c *claims) { c.Exp = now.Add(smart.MaxAssertionLifetime + smart.ClockSkew + 2*time.Second).Unix() }), "system/*.read"), "invalid_client", 401},
		{"nbf ahead", form(with(func(c *claims) { c.Nbf = now.Add(2 * time.Minute).Unix() }), "system/*.read"), "invalid_client", 401},
		{"no jti", form(with(func(c *claims) { c.Jti = "" }), "system/*.read"), "invalid_client", 401},
		{"replayed jti", form(replayed, "system/*.read"), "invalid_client", 401},
		{"iss is not sub", form(with(func(c *claims) { c.Sub = "rs" }), "system/*.read"), "invalid_client", 401},
		{"unknown client", form(with(func(c *claims) { c.Iss, c.Sub = "nobody", "nobody" }), "system/*.read"), "invalid_client", 401},
		{"unknown kid", form(signWith(t, jose.ES384, f.keys["es"], "no-such-kid", f.good("es")), "system/*.read"), "invalid_client", 401},
		{"no kid", form(signWith(t, jose.ES384, f.keys["es"], "", f.good("es")), "system/*.read"), "invalid_client", 401},
		{"alg none", form(none(), "system/*.read"), "invalid_client", 401},
		{"HS256 with the public key (PEM) as secret", form(signWith(t, jose.HS256, pubPEM, esKid, f.good("es")), "system/*.read"), "invalid_client", 401},
		{"HS256 with the public key (JWK) as secret", form(signWith(t, jose.HS256, pubJWK, esKid, f.good("es")), "system/*.read"), "invalid_client", 401},
		{"signed by another key under the client's kid", form(signWith(t, jose.ES384, other, esKid, f.good("es")), "system/*.read"), "invalid_client", 401},
		{"another client's key", form(signWith(t, jose.ES384, f.keys["ops"], esKid, f.good("es")), "system/*.read"), "invalid_client", 401},
		{"not a JWT", form("not.a.jwt", "system/*.read"), "invalid_client", 401},
		{"scope not allowed", form(f.assertion("rs", f.good("rs")), "system/Observation.read"), "invalid_scope", 400},
		{"scope unknown", form(f.assertion("es", f.good("es")), "patient/*.read"), "invalid_scope", 400},
		{"no scope", form(f.assertion("es", f.good("es")), ""), "invalid_request", 400},
		{"wrong grant type", func() url.Values {
			v := form(f.assertion("es", f.good("es")), "system/*.read")
			v.Set("grant_type", "authorization_code")
			return v
		}(), "unsupported_grant_type", 400},
		{"no grant type", func() url.Values {
			v := form(f.assertion("es", f.good("es")), "system/*.read")
			v.Del("grant_type")
			return v
		}(), "invalid_request", 400},
		{"wrong assertion type", func() url.Values {
			v := form(f.assertion("es", f.good("es")), "system/*.read")
			v.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
			return v
		}(), "invalid_client", 401},
		{"no assertion", form("", "system/*.read"), "invalid_request", 400},
		{"parameter twice", func() url.Values {
			v := form(f.assertion("es", f.good("es")), "system/*.read")
			v.Add("scope", "system/*.read")
			return v
		}(), "invalid_request", 400},
		{"client_id of another client", func() url.Values {
			v := form(f.assertion("es", f.good("es")), "system/*.read")
			v.Set("client_id", "rs")
			return v
		}(), "invalid_client", 401},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, err := s.Token(t.Context(), tokenURL, c.form)
			if err == nil {
				t.Fatalf("issued a token: %+v", resp)
			}
			code, status := oauthCode(t, err)
			if code != c.code || status != c.status {
				t.Errorf("%s %d (%v), want %s %d", code, status, err, c.code, c.status)
			}
		})
	}
}

// TestReplayAcrossReplicas: an assertion used at one replica is refused
// at another on the same bucket, and two replicas racing with one
// assertion issue exactly one token.
func TestReplayAcrossReplicas(t *testing.T) {
	f := newFixture(t)
	r1, r2 := f.replica(), f.replica()
	a := f.assertion("es", f.good("es"))
	if _, err := r1.Token(t.Context(), tokenURL, form(a, "system/*.read")); err != nil {
		t.Fatal(err)
	}
	_, err := r2.Token(t.Context(), tokenURL, form(a, "system/*.read"))
	if code, _ := oauthCode(t, err); code != "invalid_client" || !strings.Contains(err.Error(), "jti") {
		t.Errorf("replay at the second replica: %v", err)
	}
	// The record is where docs/object-layout.md says.
	var claimsOf claims
	tok, _ := jwt.ParseSigned(a, smart.AssertionAlgorithms)
	_ = tok.UnsafeClaimsWithoutVerification(&claimsOf)
	if _, err := f.bucket.Stat(t.Context(), "a/"+layout.JTIKey("es", claimsOf.Jti)); err != nil {
		t.Errorf("no jti record at a/%s: %v", layout.JTIKey("es", claimsOf.Jti), err)
	}

	// A client bound to every tenant keeps its records in the base of
	// AnyTenantBase.
	if _, err := r1.Token(t.Context(), tokenURL, form(f.assertion("ops", f.good("ops")), "system/*.read")); err != nil {
		t.Fatal(err)
	}
	if page, _ := f.bucket.List(t.Context(), storage.ListOptions{Prefix: "default/" + layout.ClientJTIPrefix("ops")}); len(page.Objects) != 1 {
		t.Errorf("records of the * client: %v", page.Objects)
	}

	for i := range 5 {
		a := f.assertion("es", f.good("es"))
		var wg sync.WaitGroup
		var mu sync.Mutex
		ok := 0
		for _, r := range []*smart.Service{r1, r2, r1, r2} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := r.Token(context.Background(), tokenURL, form(a, "system/*.read")); err == nil {
					mu.Lock()
					ok++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if ok != 1 {
			t.Errorf("race %d: %d tokens for one assertion", i, ok)
		}
	}
}

// TestReplaySweep: old jti records are deleted once they are past
// SweepAge, so the bucket does not grow without bound.
func TestReplaySweep(t *testing.T) {
	f := newFixture(t)
	mem := memstore.New()
	// The store's clock is the real one: sweep records older than 200ms.
	replay := &smart.BucketReplay{Bucket: func(string) (storage.Bucket, error) { return mem, nil }, SweepEvery: 100 * time.Millisecond, SweepAge: 200 * time.Millisecond}
	c := f.reg.Client("es")
	if err := replay.Claim(t.Context(), c, "j1", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := replay.Claim(t.Context(), c, "j1", time.Now()); !errors.Is(err, smart.ErrReplayed) {
		t.Fatalf("second claim: %v", err)
	}
	time.Sleep(300 * time.Millisecond)
	if err := replay.Claim(t.Context(), c, "j2", time.Now()); err != nil {
		t.Fatal(err)
	}
	page, _ := mem.List(t.Context(), storage.ListOptions{Prefix: layout.ClientJTIPrefix("es")})
	if len(page.Objects) != 1 || page.Objects[0].Key != layout.JTIKey("es", "j2") {
		t.Errorf("after the sweep: %v", page.Objects)
	}
}

// TestAccessTokenRejections: expired tokens, tokens of another server
// key, tampered tokens and tokens of clients no longer registered are
// all 401.
func TestAccessTokenRejections(t *testing.T) {
	f := newFixture(t)
	s := f.replica()
	resp, err := s.Token(t.Context(), tokenURL, form(f.assertion("es", f.good("es")), "system/*.read"))
	if err != nil {
		t.Fatal(err)
	}
	authn := func(s *smart.Service, tok string) error {
		_, err := s.Authenticate(http.Header{"Authorization": {"Bearer " + tok}})
		return err
	}
	if err := authn(s, resp.AccessToken); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	// Another replica with the same key accepts it.
	if err := authn(f.replica(), resp.AccessToken); err != nil {
		t.Errorf("a replica with the same key: %v", err)
	}
	// A server with another key does not.
	if err := authn(f.replica(func(c *smart.Config) { c.SigningKey = nil }), resp.AccessToken); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("a server with another key: %v", err)
	}
	// Tampered: another payload under the same signature.
	parts := strings.Split(resp.AccessToken, ".")
	var cl map[string]any
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	_ = json.Unmarshal(raw, &cl)
	cl["scope"] = "system/*.*"
	raw, _ = json.Marshal(cl)
	if err := authn(s, parts[0]+"."+base64.RawURLEncoding.EncodeToString(raw)+"."+parts[2]); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("tampered token: %v", err)
	}
	// A client assertion is no access token, even for the right key.
	if err := authn(s, f.assertion("es", f.good("es"))); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("an assertion used as token: %v", err)
	}
	// The client is removed from the registry (restart).
	f2 := *f
	f2.reg = parseRegistry(t, registryEntry(t, "rs", "a", f.keys["rs"], "system/Patient.rs"))
	if err := authn(f2.replica(), resp.AccessToken); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Errorf("a client no longer registered: %v", err)
	}
	// Expired.
	f.clock.add(smart.MaxTokenLifetime + smart.ClockSkew + time.Second)
	err = authn(s, resp.AccessToken)
	if !errors.Is(err, auth.ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v", err)
	}
}

// TestTokenLifetime: the lifetime is configurable up to five minutes.
func TestTokenLifetime(t *testing.T) {
	f := newFixture(t)
	s := f.replica(func(c *smart.Config) { c.TokenLifetime = time.Minute })
	resp, err := s.Token(t.Context(), tokenURL, form(f.assertion("es", f.good("es")), "system/*.read"))
	if err != nil || resp.ExpiresIn != 60 {
		t.Fatalf("%+v %v", resp, err)
	}
	for _, d := range []time.Duration{6 * time.Minute, time.Millisecond} {
		if _, err := smart.New(smart.Config{Clients: f.reg, Replay: &smart.BucketReplay{}, TokenLifetime: d}); err == nil {
			t.Errorf("lifetime %s accepted", d)
		}
	}
}

// TestJWKSURL: keys published at a jwks_url are fetched and cached; a
// URL that is down, slow or serves garbage answers invalid_client (401)
// within the timeout, never a hang.
func TestJWKSURL(t *testing.T) {
	key := genKey(t, "ES384")
	set, _ := smartclient.PublicJWKS(key)
	var mu sync.Mutex
	mode, hits := "ok", 0
	release := make(chan struct{})
	ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		m := mode
		hits++
		mu.Unlock()
		switch m {
		case "ok":
			_ = json.NewEncoder(w).Encode(set)
		case "slow":
			select {
			case <-release:
			case <-r.Context().Done():
			}
		case "500":
			http.Error(w, "boom", 500)
		case "garbage":
			_, _ = w.Write([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0","kid":"x"}]}`))
		}
	}))
	defer ts.Close()
	defer close(release)
	f := newFixture(t)
	entry := smart.ClientEntry{ClientID: "remote", Tenant: "a", Scopes: []string{"system/*.read"}, JWKSURL: ts.URL + "/jwks.json"}
	f.reg = parseRegistry(t, entry)
	f.keys["remote"] = key
	s := f.replica(func(c *smart.Config) { c.HTTPClient = ts.Client(); c.JWKSTimeout = 300 * time.Millisecond })

	if _, err := s.Token(t.Context(), tokenURL, form(f.assertion("remote", f.good("remote")), "system/*.read")); err != nil {
		t.Fatalf("keys from the URL: %v", err)
	}
	if _, err := s.Token(t.Context(), tokenURL, form(f.assertion("remote", f.good("remote")), "system/*.read")); err != nil {
		t.Fatalf("cached keys: %v", err)
	}
	if hits != 1 {
		t.Errorf("%d fetches for two requests, want 1 (cached)", hits)
	}
	for _, m := range []string{"slow", "500", "garbage", "down"} {
		t.Run(m, func(t *testing.T) {
			url := ts.URL
			if m == "down" {
				url = "https://127.0.0.1:1"
			}
			mu.Lock()
			mode = m
			mu.Unlock()
			f := newFixture(t)
			f.reg = parseRegistry(t, smart.ClientEntry{ClientID: "remote", Tenant: "a", Scopes: []string{"system/*.read"}, JWKSURL: url + "/jwks.json"})
			f.keys["remote"] = key
			s := f.replica(func(c *smart.Config) { c.HTTPClient = ts.Client(); c.JWKSTimeout = 300 * time.Millisecond })
			start := time.Now()
			_, err := s.Token(t.Context(), tokenURL, form(f.assertion("remote", f.good("remote")), "system/*.read"))
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("took %s", took)
			}
			if code, status := oauthCode(t, err); code != "invalid_client" || status != 401 || !strings.Contains(err.Error(), "jwks_url") {
				t.Errorf("%s %d %v", code, status, err)
			}
		})
	}
}

// TestGrant: the granted scopes are the intersection of the asked and the
// allowed ones, in the syntax they were asked in.
func TestGrant(t *testing.T) {
	parse := func(ss ...string) []auth.Scope {
		var out []auth.Scope
		for _, s := range ss {
			sc, err := auth.ParseScope(s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, sc)
		}
		return out
	}
	for _, c := range []struct {
		allowed []string
		asked   string
		want    string // "" = invalid_scope
	}{
		{[]string{"system/*.read"}, "system/Patient.read", "system/Patient.read"},
		{[]string{"system/*.read"}, "system/Patient.rs", "system/Patient.rs"},
		{[]string{"system/*.read"}, "system/Patient.r", "system/Patient.r"},
		{[]string{"system/*.read"}, "system/*.*", "system/*.read"},
		{[]string{"system/*.read"}, "system/*.cruds", "system/*.rs"},
		{[]string{"system/*.rs"}, "system/*.write", ""},
		{[]string{"system/Patient.*"}, "system/*.read", "system/Patient.read"},
		{[]string{"system/Patient.*", "system/Observation.r"}, "system/*.rs", "system/Patient.rs system/Observation.r"},
		{[]string{"system/Patient.cud"}, "system/Patient.*", "system/Patient.write"},
		{[]string{"system/bulk-submit"}, "system/bulk-submit system/*.read", "system/bulk-submit"},
		{[]string{"system/*.read"}, "system/bulk-submit", ""},
		{[]string{"system/*.read"}, "system/Patient.read system/Patient.read", "system/Patient.read"},
		{[]string{"system/*.read"}, "openid", ""},
		{[]string{"system/*.read"}, "system/Patient.read?category=x", ""},
	} {
		got, err := smart.Grant(parse(c.allowed...), c.asked)
		if c.want == "" {
			if err == nil {
				t.Errorf("%v asking %q: granted %q", c.allowed, c.asked, got)
			} else if code, _ := oauthCode(t, err); code != "invalid_scope" {
				t.Errorf("%v asking %q: %v", c.allowed, c.asked, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%v asking %q: %q %v, want %q", c.allowed, c.asked, got, err, c.want)
		}
	}
}

// TestParseRegistryErrors: mistakes in the registry fail start-up.
func TestParseRegistryErrors(t *testing.T) {
	key := genKey(t, "ES384")
	set, _ := smartclient.PublicJWKS(key)
	pub, _ := json.Marshal(set)
	priv, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key, KeyID: "k"}}})
	for _, c := range []struct{ name, doc, want string }{
		{"empty", `{"clients":[]}`, "no clients"},
		{"unknown field", `{"clients":[{"client_id":"a","tenant":"a","scopes":["system/*.read"],"jwks":` + string(pub) + `,"x":1}]}`, "unknown field"},
		{"no id", `{"clients":[{"tenant":"a","scopes":["system/*.read"],"jwks":` + string(pub) + `}]}`, "client_id"},
		{"twice", `{"clients":[{"client_id":"a","tenant":"a","scopes":["system/*.read"],"jwks":` + string(pub) + `},{"client_id":"a","tenant":"a","scopes":["system/*.read"],"jwks":` + string(pub) + `}]}`, "twice"},
		{"bad tenant", `{"clients":[{"client_id":"a","tenant":"_system","scopes":["system/*.read"],"jwks":` + string(pub) + `}]}`, "tenant"},
		{"bad scope", `{"clients":[{"client_id":"a","tenant":"a","scopes":["patient/*.read"],"jwks":` + string(pub) + `}]}`, "system/"},
		{"no scopes", `{"clients":[{"client_id":"a","tenant":"a","jwks":` + string(pub) + `}]}`, "scopes"},
		{"no keys", `{"clients":[{"client_id":"a","tenant":"a","scopes":["system/*.read"]}]}`, "jwks"},
		{"both", `{"clients":[{"client_id":"a","tenant":"a","scopes":["system/*.read"],"jwks":` + string(pub) + `,"jwks_url":"https://x.org/j"}]}`, "not both"},
		{"http url", `{"clients":[{"client_id":"a","tenant":"a","scopes":["system/*.read"],"jwks_url":"http://x.org/j"}]}`, "https"},
		{"private key", `{"clients":[{"client_id":"a","tenant":"a","scopes":["system/*.read"],"jwks":` + string(priv) + `}]}`, "public"},
		{"secret", `{"clients":[{"client_id":"a","tenant":"a","scopes":["system/*.read"],"jwks":{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"k"}]}}]}`, "keys[0]"},
		{"no kid", `{"clients":[{"client_id":"a","tenant":"a","scopes":["system/*.read"],"jwks":{"keys":[` + strings.Replace(string(mustJSON(t, set.Keys[0])), `"kid"`, `"x-kid"`, 1) + `]}}]}`, "kid"},
	} {
		_, err := smart.ParseRegistry(strings.NewReader(c.doc))
		if err == nil || !errors.Is(err, auth.ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an invalid-config error naming %q", c.name, err, c.want)
		}
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestServeToken: the HTTP endpoint takes a POSTed form only, answers
// OAuth 2.0 JSON errors, and never lets its answers be cached.
func TestServeToken(t *testing.T) {
	f := newFixture(t)
	s := f.replica()
	do := func(method, ctype, query, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, tokenURL+query, strings.NewReader(body))
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		w := httptest.NewRecorder()
		s.ServeToken(w, req, tokenURL)
		return w
	}
	good := form(f.assertion("es", f.good("es")), "system/*.read").Encode()
	w := do("POST", "application/x-www-form-urlencoded", "", good)
	var tr smart.TokenResponse
	if w.Code != 200 || json.Unmarshal(w.Body.Bytes(), &tr) != nil || tr.AccessToken == "" || w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("%d %s %v", w.Code, w.Body, w.Header())
	}
	for _, c := range []struct {
		name, method, ctype, query, body, code string
		status                                 int
	}{
		{"GET", "GET", "", "", "", "invalid_request", 405},
		{"JSON body", "POST", "application/json", "", `{}`, "invalid_request", 400},
		{"query parameters", "POST", "application/x-www-form-urlencoded", "?scope=x", good, "invalid_request", 400},
		{"bad form", "POST", "application/x-www-form-urlencoded", "", "%zz", "invalid_request", 400},
		{"too big", "POST", "application/x-www-form-urlencoded", "", strings.Repeat("a", 70<<10), "invalid_request", 400},
		{"replayed", "POST", "application/x-www-form-urlencoded", "", good, "invalid_client", 401},
	} {
		w := do(c.method, c.ctype, c.query, c.body)
		var e struct{ Error, ErrorDescription string }
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || w.Code != c.status || e.Error != c.code || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%s: %d %s, want %d %s", c.name, w.Code, w.Body, c.status, c.code)
		}
	}
}

// TestConfiguration: the smart-configuration states the token endpoint,
// private_key_jwt, the algorithms and the asymmetric-client capability.
func TestConfiguration(t *testing.T) {
	f := newFixture(t)
	data, _ := json.Marshal(f.replica().Configuration(tokenURL))
	var doc map[string]any
	_ = json.Unmarshal(data, &doc)
	if doc["token_endpoint"] != tokenURL {
		t.Errorf("token_endpoint %v", doc["token_endpoint"])
	}
	for _, want := range []string{`"private_key_jwt"`, `"RS384"`, `"ES384"`, `"client-confidential-asymmetric"`, `"client_credentials"`, `"system/bulk-submit"`} {
		if !strings.Contains(string(data), want) {
			t.Errorf("configuration lacks %s: %s", want, data)
		}
	}
	if strings.Contains(string(data), "HS256") || strings.Contains(string(data), "authorization_endpoint") {
		t.Errorf("configuration claims too much: %s", data)
	}
}

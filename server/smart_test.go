package server_test

import (
	"crypto"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"fhirbucket/auth/smart"
	"fhirbucket/auth/smartclient"
	"fhirbucket/internal/testenv"
	"fhirbucket/server"
	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
)

// smartAuth is a SMART Backend Services authorization with one registered
// client per token spec (client id = spec name; its tenant and scopes),
// keeping its replay records in replayBucket. mint asks the running
// server's token endpoint for every client's access token and returns
// them by the spec's token.
func smartAuth(t testing.TB, replayBucket storage.Bucket, specs ...tokenSpec) (*smart.Service, func(*live) map[string]string) {
	t.Helper()
	return smartAuthWith(t, nil, replayBucket, specs...)
}

// smartAuthWith is smartAuth with a change to the service's Config.
func smartAuthWith(t testing.TB, mod func(*smart.Config), replayBucket storage.Bucket, specs ...tokenSpec) (*smart.Service, func(*live) map[string]string) {
	t.Helper()
	keys := map[string]crypto.Signer{}
	var rf smart.RegistryFile
	for _, s := range specs {
		k, err := smartclient.GenerateKey("ES384")
		if err != nil {
			t.Fatal(err)
		}
		keys[s.name] = k
		set, err := smartclient.PublicJWKS(k)
		if err != nil {
			t.Fatal(err)
		}
		rf.Clients = append(rf.Clients, smart.ClientEntry{ClientID: s.name, Tenant: s.tenant, Scopes: s.scopes, JWKS: &set})
	}
	data, _ := json.Marshal(rf)
	reg, err := smart.ParseRegistry(strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	cfg := smart.Config{
		Clients: reg,
		Replay: &smart.BucketReplay{Bucket: func(tenant string) (storage.Bucket, error) {
			return storage.Prefixed(replayBucket, tenant)
		}, AnyTenantBase: "default"},
		Logger: testenv.QuietLogger(),
	}
	if mod != nil {
		mod(&cfg)
	}
	svc, err := smart.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mint := func(l *live) map[string]string {
		t.Helper()
		out := map[string]string{}
		for _, s := range specs {
			src, err := smartclient.New(smartclient.Config{
				BaseURL: l.url, ClientID: s.name, Key: keys[s.name], Scope: strings.Join(s.scopes, " "), HTTPClient: l.client,
				Header: http.Header{"X-Tenant-ID": {s.tenant}},
			})
			if err != nil {
				t.Fatal(err)
			}
			// Discovery through the tenant-less base works in every
			// routing.
			tok, err := src.Token(t.Context())
			if err != nil {
				t.Fatalf("token of %s: %v", s.name, err)
			}
			out[s.token] = tok
		}
		return out
	}
	return svc, mint
}

// TestSmartEndpoints: the token endpoint is at {base path}/auth/token
// whatever the tenant routing, the SMART configuration at every FHIR base
// names it, the CapabilityStatement's rest.security tells the same, and
// the token it grants opens the tenant the client is bound to only.
func TestSmartEndpoints(t *testing.T) {
	for _, routing := range []server.TenantRouting{server.TenantHeader, server.TenantPath, server.TenantBoth} {
		t.Run(routing.String(), func(t *testing.T) {
			svc, mint := smartAuth(t, memstore.New(), tokenSpec{"admin", "tok-admin", "a", []string{"system/*.*"}})
			l := start(t, server.Config{Store: prefixStore(t, memstore.New()), TenantRouting: routing, Auth: svc, BasePath: "/fhir"})
			tokenURL := l.url + "/fhir/auth/token"
			bases := []string{"/fhir"}
			if routing != server.TenantHeader {
				bases = append(bases, "/fhir/a")
			}
			for _, b := range bases {
				r := l.send("GET", b+"/.well-known/smart-configuration", "", nil)
				var doc struct {
					TokenEndpoint string   `json:"token_endpoint"`
					Methods       []string `json:"token_endpoint_auth_methods_supported"`
				}
				if r.status != 200 || json.Unmarshal(r.body, &doc) != nil || doc.TokenEndpoint != tokenURL || len(doc.Methods) != 1 || doc.Methods[0] != "private_key_jwt" {
					t.Errorf("GET %s/.well-known/smart-configuration: %d %s", b, r.status, r.body)
				}
				r = l.send("GET", b+"/metadata", "", nil)
				if r.status != 200 || !strings.Contains(string(r.body), `"code":"SMART-on-FHIR"`) ||
					!strings.Contains(string(r.body), `{"url":"http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris","extension":[{"url":"token","valueUri":"`+tokenURL+`"}]}`) {
					t.Errorf("GET %s/metadata: rest.security does not name the token endpoint: %d %.300s", b, r.status, r.body)
				}
			}
			tokens := mint(&live{t: t, url: l.url + "/fhir", client: l.client})
			pathA, pathB, hA, hB := "/fhir/a/Patient", "/fhir/b/Patient", http.Header{}, http.Header{}
			if routing == server.TenantHeader {
				pathA, pathB, hA, hB = "/fhir/Patient", "/fhir/Patient", headers("X-Tenant-ID: a"), headers("X-Tenant-ID: b")
			}
			hA.Set("Authorization", "Bearer "+tokens["tok-admin"])
			hB.Set("Authorization", "Bearer "+tokens["tok-admin"])
			if r := l.send("GET", pathA, "", hA); r.status != 200 {
				t.Errorf("GET %s with the client's token: %d %s", pathA, r.status, r.body)
			}
			if r := l.send("GET", pathB, "", hB); r.status != 403 {
				t.Errorf("GET %s (another tenant) with the client's token: %d %s", pathB, r.status, r.body)
			}
			if r := l.send("GET", "/fhir/auth/token", "", nil); r.status != 405 || !strings.Contains(string(r.body), `"error":"invalid_request"`) {
				t.Errorf("GET of the token endpoint: %d %s", r.status, r.body)
			}
		})
	}
}

// TestSmartBaseURL: with a configured base URL the token endpoint is below
// it, and assertions must name that URL, not the one the Host header
// would give.
func TestSmartBaseURL(t *testing.T) {
	svc, _ := smartAuth(t, memstore.New(), tokenSpec{"admin", "tok-admin", "a", []string{"system/*.*"}})
	l := start(t, server.Config{Store: prefixStore(t, memstore.New()), Auth: svc, BaseURL: "https://fhir.example.org/r4"})
	r := l.send("GET", "/.well-known/smart-configuration", "", nil)
	if !strings.Contains(string(r.body), `"token_endpoint":"https://fhir.example.org/r4/auth/token"`) {
		t.Errorf("smart-configuration: %s", r.body)
	}
}

// TestNoSmartOutsideSmartMode: in auth modes none and token there is no
// token endpoint and no SMART configuration, and the CapabilityStatement
// claims no SMART service.
func TestNoSmartOutsideSmartMode(t *testing.T) {
	a := authenticator(t, tokenSpec{"admin", "tok-admin", "a", []string{"system/*.*"}})
	for _, cfg := range []server.Config{{}, {Auth: a}} {
		cfg.Store = prefixStore(t, memstore.New())
		l := start(t, cfg)
		for _, p := range []string{"/.well-known/smart-configuration", "/auth/token"} {
			if r := l.send("GET", p, "", nil); r.status != 404 {
				t.Errorf("auth %v: GET %s: %d %s", cfg.Auth != nil, p, r.status, r.body)
			}
		}
		r := l.send("POST", "/auth/token", url.Values{"grant_type": {"client_credentials"}}.Encode(), headers("Content-Type: application/x-www-form-urlencoded"))
		if r.status != 404 {
			t.Errorf("auth %v: POST /auth/token: %d", cfg.Auth != nil, r.status)
		}
		r = l.send("GET", "/metadata", "", nil)
		if strings.Contains(string(r.body), "SMART-on-FHIR") || strings.Contains(string(r.body), "oauth-uris") {
			t.Errorf("auth %v: the CapabilityStatement claims SMART", cfg.Auth != nil)
		}
		if (cfg.Auth != nil) != strings.Contains(string(r.body), `"security"`) {
			t.Errorf("auth %v: rest.security present = %v", cfg.Auth != nil, !(cfg.Auth != nil))
		}
	}
}

// TestSmartExpiredAccessToken: an access token past its lifetime answers
// 401 invalid_token, like an unknown one.
func TestSmartExpiredAccessToken(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	svc, mint := smartAuthWith(t, func(c *smart.Config) { c.Now = clock }, memstore.New(), tokenSpec{"admin", "tok-admin", "a", []string{"system/*.*"}})
	l := start(t, server.Config{Store: prefixStore(t, memstore.New()), Auth: svc})
	tok := mint(l)["tok-admin"]
	if r := l.send("GET", "/Patient", "", bearer(tok, "X-Tenant-ID: a")); r.status != 200 {
		t.Fatalf("fresh token: %d %s", r.status, r.body)
	}
	mu.Lock()
	now = now.Add(smart.MaxTokenLifetime + smart.ClockSkew + time.Second)
	mu.Unlock()
	r := l.send("GET", "/Patient", "", bearer(tok, "X-Tenant-ID: a"))
	if r.status != 401 || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) || !strings.Contains(string(r.body), "expired") {
		t.Errorf("expired token: %d %q %s", r.status, r.header.Get("WWW-Authenticate"), r.body)
	}
}

package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"fhirbucket/auth/smart"
	"fhirbucket/auth/smartclient"
	"fhirbucket/internal/s3test"
	"fhirbucket/internal/testenv"
)

// testCA is a throw-away certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	pool *x509.CertPool
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fhirbucket test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	return ca
}

// issue writes a server certificate for 127.0.0.1 and localhost with the
// given serial to certFile and keyFile.
func (ca *testCA) issue(t testing.TB, serial int64, certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	// Write to temporary files and rename, as certificate tools do, so
	// that a reload never reads a half-written file.
	for _, f := range []struct {
		path string
		data []byte
	}{{keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})}, {certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}} {
		if err := os.WriteFile(f.path+".tmp", f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f.path+".tmp", f.path); err != nil {
			t.Fatal(err)
		}
	}
}

func (ca *testCA) client() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: ca.pool}
	return &http.Client{Transport: tr, Timeout: time.Minute}
}

// inProcess is a serve running in the test process.
type inProcess struct {
	addr string
	logs *testenv.LockedBuffer
}

// startInProcess runs serve with args and env until the test ends.
func startInProcess(t *testing.T, args, env []string) *inProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &inProcess{logs: &testenv.LockedBuffer{}}
	done := make(chan struct{})
	code := 0
	go func() {
		defer close(done)
		code = run(ctx, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...), append([]string{"FHIRBUCKET_LOG_FORMAT=json"}, env...), io.Discard, p.logs)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-done:
			t.Fatalf("serve exited with %d: %s", code, p.logs.String())
		default:
		}
		if p.addr = listenAddr(p.logs.String()); p.addr != "" {
			return p
		}
	}
	t.Fatalf("serve did not log its address: %s", p.logs.String())
	return nil
}

// smartSetup is a registry with one client made by `client register`, a
// shared signing key and a TLS certificate from a throw-away CA.
type smartSetup struct {
	dir, registry, clientKey, signingKey, cert, key, caFile string
	ca                                                      *testCA
}

func newSmartSetup(t *testing.T, tenant, scopes string) *smartSetup {
	t.Helper()
	s := &smartSetup{dir: t.TempDir(), ca: newTestCA(t)}
	s.clientKey = filepath.Join(s.dir, "client-key.pem")
	var out, errOut bytes.Buffer
	if code := run(t.Context(), []string{"client", "register", "--id", "bulk-client", "--tenant", tenant, "--scopes", scopes, "--key-out", s.clientKey}, nil, &out, &errOut); code != exitOK {
		t.Fatalf("client register: %d %s", code, errOut.String())
	}
	var entry smart.ClientEntry
	if err := json.Unmarshal(out.Bytes(), &entry); err != nil {
		t.Fatalf("client register printed %q: %v", out.String(), err)
	}
	reg, _ := json.Marshal(smart.RegistryFile{Clients: []smart.ClientEntry{entry}})
	s.registry = filepath.Join(s.dir, "clients.json")
	s.signingKey = filepath.Join(s.dir, "signing-key.pem")
	k, _ := smartclient.GenerateKey("ES384")
	kp, _ := smartclient.MarshalPrivateKey(k)
	s.cert, s.key, s.caFile = filepath.Join(s.dir, "cert.pem"), filepath.Join(s.dir, "key.pem"), filepath.Join(s.dir, "ca.pem")
	for path, data := range map[string][]byte{s.registry: reg, s.signingKey: kp, s.caFile: s.ca.pem} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s.ca.issue(t, 100, s.cert, s.key)
	return s
}

func (s *smartSetup) env() []string {
	return []string{"FHIRBUCKET_AUTH=smart", "FHIRBUCKET_AUTH_SMART_CLIENTS=" + s.registry, "FHIRBUCKET_AUTH_SMART_SIGNING_KEY=" + s.signingKey,
		"FHIRBUCKET_TLS_CERT=" + s.cert, "FHIRBUCKET_TLS_KEY=" + s.key}
}

// rawToken gets an access token with a plain HTTP client: an assertion
// signed with the client's key, POSTed as a form.
func rawToken(t *testing.T, hc *http.Client, base, keyFile, scope string) (int, map[string]any) {
	t.Helper()
	key, _, err := smartclient.LoadPrivateKey(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	a, err := smartclient.Assertion(key, "", "bulk-client", base+"/auth/token", time.Now(), 4*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return postToken(t, hc, base, a, scope)
}

func postToken(t *testing.T, hc *http.Client, base, assertion, scope string) (int, map[string]any) {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}, "client_assertion_type": {smart.AssertionType}, "client_assertion": {assertion}, "scope": {scope}}
	resp, err := hc.PostForm(base+"/auth/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&doc)
	return resp.StatusCode, doc
}

func getWith(t *testing.T, hc *http.Client, u, tenant, tok string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("X-Tenant-ID", tenant)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

// TestServeSmartOverTLS: serve with auth smart over HTTPS; the load CLI
// authenticates with --client-id/--private-key (token endpoint discovered
// from the smart-configuration), and a plain HTTP client does the same by
// hand; tokens work for the client's tenant only; TLS below 1.2 is
// refused.
func TestServeSmartOverTLS(t *testing.T) {
	s := newSmartSetup(t, "acme", "system/*.*")
	p := startInProcess(t, nil, append(s.env(), "FHIRBUCKET_BACKEND=memory"))
	base := "https://" + p.addr
	hc := s.ca.client()
	if !strings.Contains(p.logs.String(), `"scheme":"https"`) || !strings.Contains(p.logs.String(), `"auth":"smart"`) {
		t.Errorf("the listening line: %s", p.logs.String())
	}
	if st, _ := getWith(t, hc, base+"/Patient", "acme", ""); st != 401 {
		t.Errorf("GET /Patient without a token: %d", st)
	}

	data := filepath.Join(s.dir, "patients.ndjson")
	var nd strings.Builder
	for i := range 25 {
		fmt.Fprintf(&nd, `{"resourceType":"Patient","id":"p%d","name":[{"family":"F%d"}]}`+"\n", i, i)
	}
	if err := os.WriteFile(data, []byte(nd.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code := run(t.Context(), []string{"load", "--url", base, "--tenant", "acme", "--client-id", "bulk-client", "--private-key", s.clientKey,
		"--ca-cert", s.caFile, "--batch-size", "10", "--progress", "never", data}, nil, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "entries: 25 ok, 0 failed") {
		t.Fatalf("load over HTTPS with backend services (exit %d): %s %s", code, out.String(), errOut.String())
	}

	st, tr := rawToken(t, hc, base, s.clientKey, "system/Patient.cruds system/Observation.rs")
	if st != 200 || tr["token_type"] != "bearer" || tr["scope"] != "system/Patient.cruds system/Observation.rs" {
		t.Fatalf("token: %d %v", st, tr)
	}
	tok := tr["access_token"].(string)
	// What load wrote is there.
	if st, _ := getWith(t, hc, base+"/Patient/p7", "acme", tok); st != 200 {
		t.Errorf("GET /Patient/p7 after load: %d", st)
	}
	req, _ := http.NewRequest("PUT", base+"/Patient/x1", strings.NewReader(`{"resourceType":"Patient","id":"x1"}`))
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("X-Tenant-ID", "acme")
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Errorf("PUT with the token: %d", resp.StatusCode)
	}
	if st, body := getWith(t, hc, base+"/Patient/x1", "acme", tok); st != 200 {
		t.Errorf("GET with the token: %d %s", st, body)
	}
	if st, _ := getWith(t, hc, base+"/Patient/x1", "other", tok); st != 403 {
		t.Errorf("GET in another tenant: %d, want 403", st)
	}
	if st, _ := getWith(t, hc, base+"/Encounter", "acme", tok); st != 403 {
		t.Errorf("GET of a type outside the scopes: %d, want 403", st)
	}
	if st, doc := rawToken(t, hc, base, s.clientKey, "system/bulk-submit"); st != 400 || doc["error"] != "invalid_scope" {
		t.Errorf("a scope the client may not have: %d %v", st, doc)
	}

	old := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.ca.pool, MaxVersion: tls.VersionTLS11}}}
	if _, err := old.Get(base + "/healthz"); err == nil {
		t.Error("a TLS 1.1 handshake succeeded")
	}
	if strings.Contains(p.logs.String(), tok) {
		t.Error("the access token appears in the log")
	}
}

// TestSmartReplayAcrossReplicasMinIO: two servers on one MinIO bucket
// with one signing key: a token of one is accepted by the other, and an
// assertion used at one is refused at the other.
func TestSmartReplayAcrossReplicasMinIO(t *testing.T) {
	srv := s3test.MinIO(t)
	_, bucket := srv.NewBucket(t)
	s := newSmartSetup(t, "acme", "system/*.rs")
	// The servers run in this process: the AWS SDK reads the credentials
	// from its environment.
	var env []string
	for _, kv := range srv.Env(bucket) {
		if k, val, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "AWS_") {
			t.Setenv(k, val)
		} else {
			env = append(env, kv)
		}
	}
	env = append(append(env, "FHIRBUCKET_BACKEND=s3", "FHIRBUCKET_S3_PREFIX=smart"), s.env()...)
	p1, p2 := startInProcess(t, nil, env), startInProcess(t, nil, env)
	b1, b2 := "https://"+p1.addr, "https://"+p2.addr
	hc := s.ca.client()
	key, _, _ := smartclient.LoadPrivateKey(s.clientKey)
	// Both replicas are one service behind one address: give them one
	// token URL, as a configured base URL does; here each takes it from
	// the Host header, so the assertion names the one it is sent to.
	a1, _ := smartclient.Assertion(key, "", "bulk-client", b1+"/auth/token", time.Now(), 4*time.Minute)
	st, tr := postToken(t, hc, b1, a1, "system/*.rs")
	if st != 200 {
		t.Fatalf("token at replica 1: %d %v", st, tr)
	}
	if st, body := getWith(t, hc, b2+"/Patient", "acme", tr["access_token"].(string)); st != 200 {
		t.Errorf("replica 2 with replica 1's token: %d %s", st, body)
	}
	// The same jti, at replica 2 (re-signed for its URL: same client, same
	// jti, still a replay).
	var c struct {
		Jti string `json:"jti"`
	}
	parts := strings.Split(a1, ".")
	raw, _ := base64URL(parts[1])
	_ = json.Unmarshal(raw, &c)
	a2 := assertionWithJTI(t, key, b2+"/auth/token", c.Jti)
	if st, doc := postToken(t, hc, b2, a2, "system/*.rs"); st != 401 || doc["error"] != "invalid_client" || !strings.Contains(fmt.Sprint(doc["error_description"]), "jti") {
		t.Errorf("replayed jti at replica 2: %d %v", st, doc)
	}
}

// TestCertificateReload: a new certificate is served after SIGHUP and
// after the files change, while requests keep flowing on open and new
// connections without one failing.
func TestCertificateReload(t *testing.T) {
	old := certPollInterval
	certPollInterval = 100 * time.Millisecond
	t.Cleanup(func() { certPollInterval = old })
	s := newSmartSetup(t, "acme", "system/*.rs")
	p := startInProcess(t, []string{"--auth", "none"}, []string{"FHIRBUCKET_BACKEND=memory", "FHIRBUCKET_TLS_CERT=" + s.cert, "FHIRBUCKET_TLS_KEY=" + s.key})
	base := "https://" + p.addr

	var failures, done atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, keepAlive := range []bool{true, false} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tr := http.DefaultTransport.(*http.Transport).Clone()
			tr.TLSClientConfig = &tls.Config{RootCAs: s.ca.pool}
			tr.DisableKeepAlives = !keepAlive
			hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := hc.Get(base + "/healthz")
				if err != nil || resp.StatusCode != 200 {
					failures.Add(1)
				}
				if resp != nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				done.Add(1)
			}
		}()
	}
	serial := func() int64 {
		conn, err := tls.Dial("tcp", p.addr, &tls.Config{RootCAs: s.ca.pool})
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
	}
	waitSerial := func(want int64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if serial() == want {
				return
			}
		}
		t.Errorf("the server still serves certificate %d, want %d: %s", serial(), want, p.logs.String())
	}
	if got := serial(); got != 100 {
		t.Fatalf("serial %d", got)
	}
	// A file change.
	s.ca.issue(t, 101, s.cert, s.key)
	waitSerial(101)
	// SIGHUP (the poll may see the change first; either reloads).
	s.ca.issue(t, 102, s.cert, s.key)
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitSerial(102)
	// A broken pair keeps the old certificate.
	if err := os.WriteFile(s.cert, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got := serial(); got != 102 {
		t.Errorf("after a broken file: serial %d, want 102", got)
	}
	close(stop)
	wg.Wait()
	if failures.Load() != 0 || done.Load() < 10 {
		t.Errorf("%d of %d requests failed during the reloads", failures.Load(), done.Load())
	}
	if !strings.Contains(p.logs.String(), `"reason":"file changed"`) || !strings.Contains(p.logs.String(), "not reloaded") {
		t.Errorf("the reloads are not logged: %s", p.logs.String())
	}
}

// TestPlainHTTPRefused: auth token or smart on plain HTTP on an address
// other hosts reach does not start unless explicitly allowed; loopback
// addresses and auth none do.
func TestPlainHTTPRefused(t *testing.T) {
	tokFile := writeTokenFile(t, `{"tokens":[{"name":"a","sha256":"`+strings.Repeat("a", 64)+`","tenant":"a","scopes":["system/*.read"]}]}`)
	token := []string{"FHIRBUCKET_AUTH=token", "FHIRBUCKET_AUTH_TOKEN_FILE=" + tokFile}
	s := newSmartSetup(t, "acme", "system/*.rs")
	for _, c := range []struct {
		name string
		addr string
		env  []string
		want string // "" = starts
	}{
		{"token on all interfaces", ":8080", token, "FHIRBUCKET_ALLOW_PLAIN_HTTP"},
		{"token on 0.0.0.0", "0.0.0.0:8080", token, "FHIRBUCKET_TLS_CERT"},
		{"smart on a host name", "fhir.example.org:8080", []string{"FHIRBUCKET_AUTH=smart", "FHIRBUCKET_AUTH_SMART_CLIENTS=" + s.registry}, "FHIRBUCKET_ALLOW_PLAIN_HTTP"},
		{"token on loopback", "127.0.0.1:8080", token, ""},
		{"token on localhost", "localhost:8080", token, ""},
		{"token on ::1", "[::1]:8080", token, ""},
		{"token behind a proxy", ":8080", append([]string{"FHIRBUCKET_ALLOW_PLAIN_HTTP=true"}, token...), ""},
		{"none on all interfaces", ":8080", nil, ""},
		{"token over TLS", ":8080", append([]string{"FHIRBUCKET_TLS_CERT=" + s.cert, "FHIRBUCKET_TLS_KEY=" + s.key}, token...), ""},
		{"cert without key", ":8080", []string{"FHIRBUCKET_TLS_CERT=" + s.cert}, "FHIRBUCKET_TLS_KEY"},
		{"key without cert", ":8080", []string{"FHIRBUCKET_TLS_KEY=" + s.key}, "FHIRBUCKET_TLS_CERT"},
		{"TLS and plain", ":8080", []string{"FHIRBUCKET_TLS_CERT=" + s.cert, "FHIRBUCKET_TLS_KEY=" + s.key, "FHIRBUCKET_ALLOW_PLAIN_HTTP=true"}, "contradict"},
		{"unreadable cert", ":8080", []string{"FHIRBUCKET_TLS_CERT=" + s.registry, "FHIRBUCKET_TLS_KEY=" + s.key}, "FHIRBUCKET_TLS_CERT"},
	} {
		fs, v := newFlagSet("serve", "", io.Discard, serveSettings, storeSettings)
		if err := v.parse(fs, []string{"--addr", c.addr}, c.env); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		cfg, _, err := serverConfig(v, testenv.QuietLogger())
		if err == nil {
			_, err = tlsSettings(v, v.str("addr"), authModeOf(cfg.Auth), testenv.QuietLogger())
		}
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want an error naming %s", c.name, err, c.want)
		}
	}
}

// TestSmartSettings: the auth smart settings give a working service or
// fail start-up naming the setting.
func TestSmartSettings(t *testing.T) {
	s := newSmartSetup(t, "acme", "system/*.rs")
	tokFile := writeTokenFile(t, `{"tokens":[{"name":"a","sha256":"`+strings.Repeat("a", 64)+`","tenant":"a","scopes":["system/*.read"]}]}`)
	badKey := filepath.Join(s.dir, "bad.pem")
	_ = os.WriteFile(badKey, []byte("not a key"), 0o600)
	clients := "FHIRBUCKET_AUTH_SMART_CLIENTS=" + s.registry
	for _, c := range []struct {
		name string
		env  []string
		want string
	}{
		{"smart", []string{"FHIRBUCKET_AUTH=smart", clients}, ""},
		{"smart with everything", []string{"FHIRBUCKET_AUTH=smart", clients, "FHIRBUCKET_AUTH_SMART_SIGNING_KEY=" + s.signingKey, "FHIRBUCKET_AUTH_SMART_TOKEN_LIFETIME=2m", "FHIRBUCKET_AUTH_SMART_JWKS_TIMEOUT=1s"}, ""},
		{"smart without clients", []string{"FHIRBUCKET_AUTH=smart"}, "FHIRBUCKET_AUTH_SMART_CLIENTS"},
		{"clients without smart", []string{clients}, "FHIRBUCKET_AUTH_SMART_CLIENTS"},
		{"clients in token mode", []string{"FHIRBUCKET_AUTH=token", "FHIRBUCKET_AUTH_TOKEN_FILE=" + tokFile, clients}, "FHIRBUCKET_AUTH_SMART_CLIENTS"},
		{"token file in smart mode", []string{"FHIRBUCKET_AUTH=smart", clients, "FHIRBUCKET_AUTH_TOKEN_FILE=" + tokFile}, "FHIRBUCKET_AUTH_TOKEN_FILE"},
		{"lifetime too long", []string{"FHIRBUCKET_AUTH=smart", clients, "FHIRBUCKET_AUTH_SMART_TOKEN_LIFETIME=10m"}, "FHIRBUCKET_AUTH_SMART_TOKEN_LIFETIME"},
		{"bad signing key", []string{"FHIRBUCKET_AUTH=smart", clients, "FHIRBUCKET_AUTH_SMART_SIGNING_KEY=" + badKey}, "FHIRBUCKET_AUTH_SMART_SIGNING_KEY"},
		{"registry is no registry", []string{"FHIRBUCKET_AUTH=smart", "FHIRBUCKET_AUTH_SMART_CLIENTS=" + tokFile}, "FHIRBUCKET_AUTH_SMART_CLIENTS"},
	} {
		fs, v := newFlagSet("serve", "", io.Discard, serveSettings, storeSettings)
		if err := v.parse(fs, nil, c.env); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		cfg, replay, err := serverConfig(v, testenv.QuietLogger())
		if c.want != "" {
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: %v, want an error naming %s", c.name, err, c.want)
			}
			continue
		}
		if err != nil || authModeOf(cfg.Auth) != "smart" || replay == nil {
			t.Errorf("%s: %v (mode %s)", c.name, err, authModeOf(cfg.Auth))
		}
	}
}

// TestClientRegister: the private key file is private and never
// overwritten; the printed entry is a registry entry the server accepts.
func TestClientRegister(t *testing.T) {
	dir := t.TempDir()
	kf := filepath.Join(dir, "k.pem")
	for _, alg := range []string{"ES384", "RS384"} {
		_ = os.Remove(kf)
		var out, errOut bytes.Buffer
		if code := run(t.Context(), []string{"client", "register", "--id", "c1", "--tenant", "*", "--alg", alg, "--scopes", "system/*.rs system/bulk-submit", "--key-out", kf}, nil, &out, &errOut); code != exitOK {
			t.Fatalf("%s: exit %d: %s", alg, code, errOut.String())
		}
		if fi, err := os.Stat(kf); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: key file %v %v", alg, fi.Mode(), err)
		}
		doc := `{"clients":[` + out.String() + `]}`
		reg, err := smart.ParseRegistry(strings.NewReader(doc))
		if err != nil || reg.Client("c1") == nil || !strings.Contains(out.String(), `"alg": "`+alg+`"`) {
			t.Errorf("%s: entry %s: %v", alg, out.String(), err)
		}
		key, _, err := smartclient.LoadPrivateKey(kf)
		if err != nil {
			t.Fatal(err)
		}
		kid, _ := smartclient.KeyID(key)
		if !strings.Contains(out.String(), kid) {
			t.Errorf("%s: the entry's kid is not the key's thumbprint %s", alg, kid)
		}
	}
	var errOut bytes.Buffer
	if code := run(t.Context(), []string{"client", "register", "--id", "c1", "--tenant", "a", "--key-out", kf}, nil, io.Discard, &errOut); code == exitOK {
		t.Error("an existing key file was overwritten")
	}
	for _, args := range [][]string{
		{"client", "register", "--tenant", "a", "--key-out", kf + "2"},
		{"client", "register", "--id", "c", "--tenant", "_system", "--key-out", kf + "3"},
		{"client", "register", "--id", "c", "--tenant", "a", "--scopes", "patient/*.read", "--key-out", kf + "4"},
		{"client", "register", "--id", "c", "--tenant", "a", "--alg", "HS256", "--key-out", kf + "5"},
		{"client", "list"},
	} {
		if code := run(t.Context(), args, nil, io.Discard, io.Discard); code != exitError {
			t.Errorf("%v: exit %d", args, code)
		}
	}
}

// TestLoadAuthFlags: --client-id and --private-key go together, not with
// --token, in load and export alike.
func TestLoadAuthFlags(t *testing.T) {
	s := newSmartSetup(t, "acme", "system/*.rs")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--client-id", "x"}, "--private-key"},
		{[]string{"--private-key", s.clientKey}, "--client-id"},
		{[]string{"--client-id", "x", "--private-key", s.registry}, "--private-key"},
		{[]string{"--client-id", "x", "--private-key", s.clientKey, "--token", "t"}, "not both"},
		{[]string{"--token-url", "https://x/auth/token"}, "--client-id"},
		{[]string{"--ca-cert", s.registry}, "--ca-cert"},
	} {
		for _, cmd := range [][]string{
			append(append([]string{"load"}, c.args...), "x.ndjson"),
			append(append([]string{"export"}, c.args...), "--out", t.TempDir()),
		} {
			var errOut bytes.Buffer
			if code := run(t.Context(), cmd, nil, io.Discard, &errOut); code != exitError || !strings.Contains(errOut.String(), c.want) {
				t.Errorf("%v: exit %d %s, want an error naming %s", cmd, code, errOut.String(), c.want)
			}
		}
	}
}

func base64URL(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }

// assertionWithJTI signs an assertion of bulk-client with a given jti.
func assertionWithJTI(t *testing.T, key crypto.Signer, aud, jti string) string {
	t.Helper()
	kid, _ := smartclient.KeyID(key)
	alg, _ := smartclient.Algorithm(key)
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := jwt.Signed(sig).Claims(jwt.Claims{Issuer: "bulk-client", Subject: "bulk-client", Audience: jwt.Audience{aud}, ID: jti,
		Expiry: jwt.NewNumericDate(time.Now().Add(4 * time.Minute))}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

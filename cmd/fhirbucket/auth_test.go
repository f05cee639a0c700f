package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fhirbucket/auth"
	"fhirbucket/internal/testenv"
)

func writeTokenFile(t *testing.T, doc string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokens.json")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestAuthSettings: the access-control settings either give a working
// authenticator or fail start-up naming the setting at fault.
func TestAuthSettings(t *testing.T) {
	good := writeTokenFile(t, `{"tokens":[{"name":"a","sha256":"`+auth.HashToken("tok")+`","tenant":"a","scopes":["system/*.read"]}]}`)
	bad := writeTokenFile(t, `{"tokens":[{"name":"a","sha256":"nothex","tenant":"a","scopes":["system/*.read"]}]}`)
	cases := []struct {
		name    string
		args    []string
		env     []string
		enabled bool
		errWant string // "" = no error
	}{
		{"default is none", nil, nil, false, ""},
		{"explicit none", nil, []string{"FHIRBUCKET_AUTH=none"}, false, ""},
		{"token", nil, []string{"FHIRBUCKET_AUTH=token", "FHIRBUCKET_AUTH_TOKEN_FILE=" + good}, true, ""},
		{"token by flags", []string{"--auth", "token", "--auth-token-file", good}, nil, true, ""},
		{"unknown mode", nil, []string{"FHIRBUCKET_AUTH=basic"}, false, "FHIRBUCKET_AUTH"},
		{"token without file", []string{"--auth", "token"}, nil, false, "FHIRBUCKET_AUTH_TOKEN_FILE"},
		{"file without token mode", nil, []string{"FHIRBUCKET_AUTH_TOKEN_FILE=" + good}, false, "FHIRBUCKET_AUTH_TOKEN_FILE"},
		{"missing file", nil, []string{"FHIRBUCKET_AUTH=token", "FHIRBUCKET_AUTH_TOKEN_FILE=/nonexistent/tokens.json"}, false, "FHIRBUCKET_AUTH_TOKEN_FILE"},
		{"malformed file", nil, []string{"FHIRBUCKET_AUTH=token", "FHIRBUCKET_AUTH_TOKEN_FILE=" + bad}, false, "sha256"},
	}
	for _, c := range cases {
		fs, v := newFlagSet("serve", "", io.Discard, serveSettings, storeSettings)
		if err := v.parse(fs, c.args, c.env); err != nil {
			t.Fatalf("%s: parse: %v", c.name, err)
		}
		cfg, _, err := serverConfig(v, testenv.QuietLogger())
		if c.errWant != "" {
			if err == nil || !strings.Contains(err.Error(), c.errWant) {
				t.Errorf("%s: error %v, want one naming %s", c.name, err, c.errWant)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if (cfg.Auth != nil) != c.enabled {
			t.Errorf("%s: auth enabled = %v, want %v", c.name, cfg.Auth != nil, c.enabled)
		}
	}
}

// TestServeWithTokenAuth starts serve with FHIRBUCKET_AUTH=token and checks
// that the setting reaches the handler: 401 without a token, 200 with one,
// public endpoints open.
func TestServeWithTokenAuth(t *testing.T) {
	file := writeTokenFile(t, `{"tokens":[{"name":"a","sha256":"`+auth.HashToken("tok-a")+`","tenant":"default","scopes":["system/*.*"]}]}`)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	logs := &testenv.LockedBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0"},
			[]string{"FHIRBUCKET_BACKEND=memory", "FHIRBUCKET_LOG_FORMAT=json", "FHIRBUCKET_AUTH=token", "FHIRBUCKET_AUTH_TOKEN_FILE=" + file}, io.Discard, logs)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	var addr string
	for deadline := time.Now().Add(30 * time.Second); addr == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		addr = listenAddr(logs.String())
	}
	if addr == "" {
		t.Fatalf("serve did not log its address: %s", logs.String())
	}
	if !strings.Contains(logs.String(), `"auth":"token"`) {
		t.Errorf("the listening line does not report the auth mode: %s", logs.String())
	}
	get := func(path, tok string) int {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	for _, c := range []struct {
		path, tok string
		want      int
	}{
		{"/healthz", "", 200},
		{"/metadata", "", 200},
		{"/metrics", "", 200}, // public by decision: see docs/guarantees.md
		{"/Patient", "", 401},
		{"/Patient", "wrong", 401},
		{"/Patient", "tok-a", 200},
	} {
		if got := get(c.path, c.tok); got != c.want {
			t.Errorf("GET %s with token %q: %d, want %d", c.path, c.tok, got, c.want)
		}
	}
	if bytes.Contains([]byte(logs.String()), []byte("tok-a")) {
		t.Error("the token appears in the log")
	}
}

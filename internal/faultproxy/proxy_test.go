package faultproxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestFaults sends one request through the proxy with each fault at rate 1
// and checks both sides: what the client sees, and whether the request
// reached the server (DropResponse and Hang must forward; SlowDown and
// DropRequest must not).
func TestFaults(t *testing.T) {
	var hits atomic.Int64
	var lastHost atomic.Value
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		lastHost.Store(r.Host)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("ETag", `"abc"`)
		_, _ = w.Write(append([]byte("echo:"), body...))
	}))
	t.Cleanup(backend.Close)

	tests := []struct {
		name       string
		rates      Rates
		method     string
		wantErr    bool // the client gets no HTTP answer
		wantStatus int
		wantBody   string
		wantHits   int64
		wantFault  Fault
	}{
		{"pass", Rates{}, http.MethodPut, false, 200, "echo:x", 1, Pass},
		{"delay", Rates{Delay: 1, MaxDelay: 5 * time.Millisecond}, http.MethodPut, false, 200, "echo:x", 1, Delay},
		{"slowdown", Rates{SlowDown: 1}, http.MethodPut, false, 503, "<Code>SlowDown</Code>", 0, SlowDown},
		{"drop request", Rates{DropRequest: 1}, http.MethodPut, true, 0, "", 0, DropRequest},
		{"drop response", Rates{DropResponse: 1}, http.MethodPut, true, 0, "", 1, DropResponse},
		{"hang", Rates{Hang: 1, HangFor: 20 * time.Millisecond}, http.MethodPut, true, 0, "", 1, Hang},
		{"method filter", Rates{DropRequest: 1, Methods: []string{http.MethodPut}}, http.MethodGet, false, 200, "echo:", 1, Pass},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := New(backend.URL, 1)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = p.Close() })
			p.SetRates(tc.rates)
			hits.Store(0)
			var body io.Reader
			if tc.method == http.MethodPut {
				body = strings.NewReader("x")
			}
			req, _ := http.NewRequestWithContext(t.Context(), tc.method, p.URL()+"/bucket/key", body)
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			resp, err := client.Do(req)
			if tc.wantErr {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("got %s, want a cut connection", resp.Status)
				}
			} else {
				if err != nil {
					t.Fatalf("request: %v", err)
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.wantStatus || !strings.Contains(string(got), tc.wantBody) {
					t.Fatalf("got %d %q, want %d containing %q", resp.StatusCode, got, tc.wantStatus, tc.wantBody)
				}
			}
			// The proxy may still be finishing its side (Hang after the cut).
			deadline := time.Now().Add(2 * time.Second)
			for hits.Load() != tc.wantHits && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if got := hits.Load(); got != tc.wantHits {
				t.Errorf("the server saw %d requests, want %d", got, tc.wantHits)
			}
			if tc.wantHits > 0 {
				if h, _ := lastHost.Load().(string); h != strings.TrimPrefix(p.URL(), "http://") {
					t.Errorf("forwarded Host %q, want the proxy's own %q (SigV4 signs it)", h, p.URL())
				}
			}
			if n := p.Counts()[tc.wantFault]; n != 1 {
				t.Errorf("Counts()[%s] = %d, want 1 (all: %v)", tc.wantFault, n, p.Counts())
			}
		})
	}
}

// TestUpstreamDown checks that a server that is not reachable answers 502,
// an error S3 clients retry, and is counted.
func TestUpstreamDown(t *testing.T) {
	backend := httptest.NewServer(http.NotFoundHandler())
	url := backend.URL
	backend.Close()
	p, err := New(url, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	resp, err := http.Get(p.URL() + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway || p.UpstreamErrors() != 1 {
		t.Fatalf("got %s and %d upstream errors, want 502 and 1", resp.Status, p.UpstreamErrors())
	}
}

func TestNewRejectsNonHTTP(t *testing.T) {
	for _, target := range []string{"", "https://127.0.0.1:1", "127.0.0.1:9000"} {
		if p, err := New(target, 1); err == nil {
			_ = p.Close()
			t.Errorf("New(%q) succeeded, want an error", target)
		}
	}
}

package bulkclient

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// renewing is a token source that hands out tok1 until Invalidate, then
// tok2.
type renewing struct {
	mu          sync.Mutex
	invalidated int
}

func (r *renewing) Token(context.Context) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.invalidated > 0 {
		return "tok2", nil
	}
	return "tok1", nil
}

func (r *renewing) Invalidate() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.invalidated++
}

// TestTokensRenewedAfter401: a request answered 401 is sent once more
// with a new token from Config.Tokens; a second 401 is the answer.
func TestTokensRenewedAfter401(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer tok2" || r.URL.Path == "/never" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	src := &renewing{}
	c := &client{cfg: Config{Tokens: src, HTTP: srv.Client()}, stats: &Stats{}}
	resp, body, err := c.do(t.Context(), srv.URL+"/x", nil, true)
	if err != nil || resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("after a 401: %v %v %q", resp, err, body)
	}
	resp, _, err = c.do(t.Context(), srv.URL+"/never", nil, true)
	if err != nil || resp.StatusCode != 401 {
		t.Fatalf("two 401s: %v %v", resp, err)
	}
	want := []string{"Bearer tok1", "Bearer tok2", "Bearer tok2", "Bearer tok2"}
	if len(seen) != len(want) || src.invalidated != 2 {
		t.Fatalf("requests %v, %d invalidations; want %v and 2", seen, src.invalidated, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Errorf("request %d: %s, want %s", i, seen[i], want[i])
		}
	}
}

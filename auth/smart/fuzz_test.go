package smart_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"fhirbucket/auth"
	"fhirbucket/auth/smart"
)

// FuzzTokenForm: any body POSTed to the token endpoint answers an OAuth
// 2.0 JSON error (or, for the one valid seed, a token) with a status the
// error code allows, and never panics.
func FuzzTokenForm(f *testing.F) {
	fx := newFixture(f)
	s := fx.replica()
	good := form(fx.assertion("es", fx.good("es")), "system/*.read").Encode()
	for _, seed := range []string{good, "", "grant_type=client_credentials", "a=%zz", "scope=system%2F*.read&scope=x",
		"grant_type=client_credentials&client_assertion_type=" + smart.AssertionType + "&client_assertion=a.b.c&scope=system/*.rs"} {
		f.Add(seed)
	}
	statuses := map[string][]int{
		"invalid_request": {400, 405}, "invalid_client": {401}, "invalid_scope": {400},
		"unsupported_grant_type": {400}, "server_error": {500, 503},
	}
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", tokenURL, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		s.ServeToken(w, req, tokenURL)
		var doc map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
			t.Fatalf("answer is not JSON: %d %q", w.Code, w.Body)
		}
		if w.Code == 200 {
			if doc["access_token"] == nil {
				t.Fatalf("200 without a token: %s", w.Body)
			}
			return
		}
		code, _ := doc["error"].(string)
		ok := false
		for _, st := range statuses[code] {
			ok = ok || st == w.Code
		}
		if !ok {
			t.Fatalf("status %d with error %q", w.Code, code)
		}
	})
}

// FuzzAssertion: any string as client_assertion, and any string as a
// bearer token, is refused (invalid_client; 401) unless it is a genuine
// signed assertion or access token, and never panics.
func FuzzAssertion(f *testing.F) {
	fx := newFixture(f)
	s := fx.replica()
	a := fx.assertion("es", fx.good("es"))
	parts := strings.Split(a, ".")
	for _, seed := range []string{a, "", ".", "..", "a.b.c", parts[0] + "." + parts[1] + ".", parts[0] + ".e30." + parts[2],
		"eyJhbGciOiJub25lIn0.e30.", strings.Repeat("A", 100) + "." + parts[1] + "." + parts[2]} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, assertion string) {
		if assertion == a {
			return // the one genuine seed: used once, then a replay
		}
		_, err := s.Token(t.Context(), tokenURL, form(assertion, "system/*.read"))
		var oe *smart.Error
		if !errors.As(err, &oe) || (oe.Code != "invalid_client" && oe.Code != "invalid_request") {
			t.Fatalf("assertion %q: %v", assertion, err)
		}
		if _, err := s.Authenticate(http.Header{"Authorization": {"Bearer " + assertion}}); !errors.Is(err, auth.ErrUnauthenticated) {
			t.Fatalf("bearer %q: %v", assertion, err)
		}
	})
}

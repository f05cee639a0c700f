package auth

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// FuzzParseScope: any string either parses into a scope that spells back
// to a scope granting the same, or fails with ErrInvalidConfig.
func FuzzParseScope(f *testing.F) {
	for _, s := range []string{"system/*.read", "system/Patient.cruds", "system/bulk-submit", "patient/*.read",
		"system/Observation.rs?category=x", "system/Patient.sr", "system/*.*", "system/.", "system/*.write"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sc, err := ParseScope(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("ParseScope(%q): error %v does not wrap ErrInvalidConfig", s, err)
			}
			return
		}
		again, err := ParseScope(sc.String())
		if err != nil || again != sc {
			t.Fatalf("ParseScope(%q) = %+v, but its spelling %q parses to %+v, %v", s, sc, sc.String(), again, err)
		}
	})
}

// FuzzBearerToken: the extracted token is always a non-empty b64token and
// never carries the scheme or spaces.
func FuzzBearerToken(f *testing.F) {
	for _, s := range []string{"Bearer abc", "bearer a.b~c==", "Basic xyz", "Bearer", "Bearer  x y", "Bearer =x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		h := http.Header{}
		h.Set("Authorization", v)
		tok, err := BearerToken(h)
		if err != nil {
			if !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("BearerToken(%q): %v", v, err)
			}
			return
		}
		if !validB64Token(tok) || strings.ContainsAny(tok, " \t") {
			t.Fatalf("BearerToken(%q) = %q", v, tok)
		}
	})
}

// FuzzParseTokenFile: Parse never panics, and every error wraps
// ErrInvalidConfig.
func FuzzParseTokenFile(f *testing.F) {
	f.Add(tokenFile(TokenEntry{Name: "a", SHA256: HashToken("x"), Tenant: "a", Scopes: []string{"system/*.read"}}))
	f.Add(`{"tokens":[]}`)
	f.Add(`{"tokens":[{"name":"a","sha256":"00","tenant":"*","scopes":["system/*.*"]}]}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, doc string) {
		a, err := Parse(strings.NewReader(doc))
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("Parse: %v does not wrap ErrInvalidConfig", err)
			}
			return
		}
		if len(a.entries) == 0 {
			t.Fatal("Parse accepted a file without tokens")
		}
	})
}

package auth

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseScope(t *testing.T) {
	cases := []struct {
		in    string
		want  Scope
		valid bool
	}{
		{"system/*.read", Scope{Type: "*", Perm: PermRead | PermSearch}, true},
		{"system/*.write", Scope{Type: "*", Perm: PermCreate | PermUpdate | PermDelete}, true},
		{"system/*.*", Scope{Type: "*", Perm: PermAll}, true},
		{"system/Patient.read", Scope{Type: "Patient", Perm: PermRead | PermSearch}, true},
		{"system/Patient.*", Scope{Type: "Patient", Perm: PermAll}, true},
		{"system/Observation.write", Scope{Type: "Observation", Perm: PermCreate | PermUpdate | PermDelete}, true},
		{"system/*.rs", Scope{Type: "*", Perm: PermRead | PermSearch}, true},
		{"system/Patient.cruds", Scope{Type: "Patient", Perm: PermAll}, true},
		{"system/Patient.cud", Scope{Type: "Patient", Perm: PermCreate | PermUpdate | PermDelete}, true},
		{"system/Patient.r", Scope{Type: "Patient", Perm: PermRead}, true},
		{"system/Patient.s", Scope{Type: "Patient", Perm: PermSearch}, true},
		{"system/bulk-submit", Scope{Named: "bulk-submit"}, true},
		{"system/Patient.sr", Scope{}, false},   // v2 letters out of order
		{"system/Patient.rr", Scope{}, false},   // repeated letter
		{"system/Patient.x", Scope{}, false},    // unknown letter
		{"system/Patient.", Scope{}, false},     // empty permission
		{"system/patient.read", Scope{}, false}, // types are case-sensitive
		{"system/Foo.read", Scope{}, false},     // unknown type
		{"system/Patient", Scope{}, false},      // no permission
		{"patient/*.read", Scope{}, false},      // not system-level
		{"user/Patient.read", Scope{}, false},   // not system-level
		{"*.read", Scope{}, false},              // no context
		{"system/Observation.rs?category=x", Scope{}, false},
		{"system/bulk-export", Scope{}, false}, // unknown named scope
		{"", Scope{}, false},
	}
	for _, c := range cases {
		got, err := ParseScope(c.in)
		if c.valid {
			if err != nil || got != c.want {
				t.Errorf("ParseScope(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
			}
			continue
		}
		if !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("ParseScope(%q) = %+v, %v; want an ErrInvalidConfig", c.in, got, err)
		}
	}
}

// tokenFile builds a token file from name -> (token, tenant, scopes).
func tokenFile(entries ...TokenEntry) string {
	var b strings.Builder
	b.WriteString(`{"tokens":[`)
	for i, e := range entries {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"name":"` + e.Name + `","sha256":"` + e.SHA256 + `","tenant":"` + e.Tenant + `","scopes":["` + strings.Join(e.Scopes, `","`) + `"]}`)
	}
	b.WriteString(`]}`)
	return b.String()
}

func bearer(tok string) http.Header {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	return h
}

func TestParseTokenFileErrors(t *testing.T) {
	good := TokenEntry{Name: "a", SHA256: HashToken("tok-a"), Tenant: "a", Scopes: []string{"system/*.read"}}
	with := func(f func(*TokenEntry)) TokenEntry { e := good; f(&e); return e }
	cases := map[string]string{
		"not JSON":          `{"tokens":`,
		"no tokens":         `{"tokens":[]}`,
		"unknown field":     `{"tokens":[],"extra":1}`,
		"trailing data":     tokenFile(good) + `{}`,
		"unknown entry key": strings.Replace(tokenFile(good), `"name"`, `"token":"x","name"`, 1),
		"no name":           tokenFile(with(func(e *TokenEntry) { e.Name = "" })),
		"short digest":      tokenFile(with(func(e *TokenEntry) { e.SHA256 = "abcd" })),
		"non-hex digest":    tokenFile(with(func(e *TokenEntry) { e.SHA256 = strings.Repeat("z", 64) })),
		"bad tenant":        tokenFile(with(func(e *TokenEntry) { e.Tenant = "../x" })),
		"reserved tenant":   tokenFile(with(func(e *TokenEntry) { e.Tenant = "resources" })),
		"empty tenant":      tokenFile(with(func(e *TokenEntry) { e.Tenant = "" })),
		"bad scope":         tokenFile(with(func(e *TokenEntry) { e.Scopes = []string{"patient/*.read"} })),
		"no scopes":         `{"tokens":[{"name":"a","sha256":"` + HashToken("x") + `","tenant":"a","scopes":[]}]}`,
		"duplicate name":    tokenFile(good, with(func(e *TokenEntry) { e.SHA256 = HashToken("other") })),
		"duplicate digest":  tokenFile(good, with(func(e *TokenEntry) { e.Name = "b" })),
	}
	for name, doc := range cases {
		if _, err := Parse(strings.NewReader(doc)); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Parse = %v, want ErrInvalidConfig", name, err)
		}
	}
	if _, err := Parse(strings.NewReader(tokenFile(good))); err != nil {
		t.Fatalf("good file: %v", err)
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "tokens.json")
	doc := tokenFile(TokenEntry{Name: "ops", SHA256: HashToken("s3cr3t"), Tenant: "*", Scopes: []string{"system/*.*"}})
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Authenticate(bearer("s3cr3t"))
	if err != nil || p.Name != "ops" || !p.AllowsTenant("anything") {
		t.Fatalf("Authenticate = %+v, %v", p, err)
	}
	if _, err := LoadFile(filepath.Join(dir, "missing.json")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, make([]byte, maxTokenFileBytes+10), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadFile(big); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("oversized file: %v", err)
	}
}

func TestBearerToken(t *testing.T) {
	cases := []struct {
		header []string
		want   string // "" = error
	}{
		{[]string{"Bearer abc"}, "abc"},
		{[]string{"bearer abc"}, "abc"},
		{[]string{"BEARER  a.b-c_d~e+f/g=="}, "a.b-c_d~e+f/g=="},
		{nil, ""},
		{[]string{"Bearer abc", "Bearer abc"}, ""},
		{[]string{"Basic YWxhZGRpbjpvcGVuc2VzYW1l"}, ""},
		{[]string{"Bearer"}, ""},
		{[]string{"Bearer "}, ""},
		{[]string{"Bearer a b"}, ""},
		{[]string{"Bearer =abc"}, ""},
		{[]string{"Bearer ab=c"}, ""},
		{[]string{"Bearer a\x00b"}, ""},
		{[]string{"Bearer é"}, ""},
		{[]string{"Bearer " + strings.Repeat("a", 4097)}, ""},
	}
	for _, c := range cases {
		h := http.Header{}
		for _, v := range c.header {
			h.Add("Authorization", v)
		}
		got, err := BearerToken(h)
		if c.want == "" {
			if !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("BearerToken(%q) = %q, %v; want ErrUnauthenticated", c.header, got, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("BearerToken(%q) = %q, %v; want %q", c.header, got, err, c.want)
		}
	}
}

func TestAuthenticate(t *testing.T) {
	a, err := Parse(strings.NewReader(tokenFile(
		TokenEntry{Name: "a", SHA256: HashToken("token-a"), Tenant: "a", Scopes: []string{"system/*.read"}},
		TokenEntry{Name: "b", SHA256: HashToken("token-b"), Tenant: "b", Scopes: []string{"system/Patient.write"}},
	)))
	if err != nil {
		t.Fatal(err)
	}
	for tok, name := range map[string]string{"token-a": "a", "token-b": "b"} {
		p, err := a.Authenticate(bearer(tok))
		if err != nil || p.Name != name {
			t.Errorf("Authenticate(%q) = %+v, %v; want %q", tok, p, err, name)
		}
	}
	for _, tok := range []string{"token-c", "token-a2", "token-", HashToken("token-a")} {
		if p, err := a.Authenticate(bearer(tok)); !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("Authenticate(%q) = %+v, %v; want ErrUnauthenticated", tok, p, err)
		}
	}
}

func TestAuthorize(t *testing.T) {
	principal := func(tenant string, scopes ...string) *Principal {
		p := &Principal{Name: "t", Tenant: tenant}
		for _, s := range scopes {
			sc, err := ParseScope(s)
			if err != nil {
				t.Fatal(err)
			}
			p.Scopes = append(p.Scopes, sc)
		}
		return p
	}
	cases := []struct {
		p      *Principal
		tenant string
		in     Interaction
		typ    string
		ok     bool
	}{
		{principal("a", "system/*.read"), "a", Read, "Patient", true},
		{principal("a", "system/*.read"), "b", Read, "Patient", false},
		{principal("*", "system/*.read"), "b", Read, "Patient", true},
		{principal("a", "system/*.read"), "a", Update, "Patient", false},
		{principal("a", "system/*.read"), "a", HistorySystem, "", true},
		{principal("a", "system/*.read"), "a", SearchSystem, "", true},
		{principal("a", "system/Patient.read"), "a", Read, "Patient", true},
		{principal("a", "system/Patient.read"), "a", VRead, "Patient", true},
		{principal("a", "system/Patient.read"), "a", HistoryInstance, "Patient", true},
		{principal("a", "system/Patient.read"), "a", HistoryType, "Patient", true},
		{principal("a", "system/Patient.read"), "a", SearchType, "Patient", true},
		{principal("a", "system/Patient.read"), "a", Read, "Observation", false},
		{principal("a", "system/Patient.read"), "a", HistorySystem, "", false},
		{principal("a", "system/Patient.*"), "a", Create, "Patient", true},
		{principal("a", "system/Patient.*"), "a", Operation, "Patient", true},
		{principal("a", "system/Patient.*"), "a", Batch, "", false},
		{principal("a", "system/*.*"), "a", Batch, "", true},
		{principal("a", "system/*.read", "system/*.write"), "a", Batch, "", true},
		{principal("a", "system/Patient.write"), "a", Create, "Patient", true},
		{principal("a", "system/Patient.write"), "a", Update, "Patient", true},
		{principal("a", "system/Patient.write"), "a", Delete, "Patient", true},
		{principal("a", "system/Patient.write"), "a", Read, "Patient", false},
		{principal("a", "system/Patient.r"), "a", Read, "Patient", true},
		{principal("a", "system/Patient.r"), "a", SearchType, "Patient", false},
		{principal("a", "system/Patient.s"), "a", SearchType, "Patient", true},
		{principal("a", "system/Patient.s"), "a", Read, "Patient", false},
		{principal("a", "system/Patient.c"), "a", Update, "Patient", false},
		{principal("a", "system/Patient.cu"), "a", Update, "Patient", true},
		{principal("a", "system/*.d"), "a", Delete, "Observation", true},
		{principal("a", "system/*.*"), "a", Read, "$export", true},
		{principal("a", "system/Patient.*"), "a", Read, "$export", false},
		{principal("a", "system/*.read"), "a", BulkSubmit, "", false},
		{principal("a", "system/bulk-submit"), "a", BulkSubmit, "", true},
		{principal("a", "system/bulk-submit"), "b", BulkSubmit, "", false},
		{principal("a", "system/bulk-submit"), "a", Read, "Patient", false},
		{principal("a", "system/*.*"), "a", Interaction("made-up"), "Patient", false},
		{principal("a", "system/Patient.read"), "a", Capabilities, "", true},
		{principal("a", "system/Patient.read"), "b", Capabilities, "", false},
	}
	for _, c := range cases {
		err := c.p.Authorize(c.tenant, c.in, c.typ)
		if c.ok && err != nil {
			t.Errorf("%v in %q: %s on %q: %v, want allowed", c.p.Scopes, c.tenant, c.in, c.typ, err)
		}
		if !c.ok && !errors.Is(err, ErrForbidden) {
			t.Errorf("%v in %q: %s on %q: %v, want ErrForbidden", c.p.Scopes, c.tenant, c.in, c.typ, err)
		}
	}
}

func TestInteractionsKnown(t *testing.T) {
	for in := range requirements {
		r := in.Need()
		if !r.Public && r.Named == "" && r.Perm == 0 {
			t.Errorf("%s needs nothing but is not public", in)
		}
	}
	if Interaction("nope").Known() || !Read.Known() {
		t.Error("Known is wrong")
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"none", "token"} {
		if m, err := ParseMode(s); err != nil || string(m) != s {
			t.Errorf("ParseMode(%q) = %q, %v", s, m, err)
		}
	}
	for _, s := range []string{"", "Token", "basic"} {
		if _, err := ParseMode(s); err == nil {
			t.Errorf("ParseMode(%q) accepted", s)
		}
	}
}

func TestPermString(t *testing.T) {
	if got := (PermRead | PermSearch).String(); got != "rs" {
		t.Errorf("got %q", got)
	}
	if got := Perm(0).String(); got != "none" {
		t.Errorf("got %q", got)
	}
	for _, s := range []string{"system/*.read", "system/Patient.write", "system/Patient.*", "system/Patient.cr", "system/bulk-submit"} {
		sc, err := ParseScope(s)
		if err != nil {
			t.Fatal(err)
		}
		if sc.String() != s {
			t.Errorf("String of %q = %q", s, sc.String())
		}
	}
}

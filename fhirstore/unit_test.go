package fhirstore

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
)

func TestValidTenant(t *testing.T) {
	tests := []struct {
		tenant string
		ok     bool
	}{
		{"acme", true}, {"a", true}, {"A1._-z", true}, {strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false}, {"", false}, {"-a", false}, {".a", false}, {"_a", false},
		{"a/b", false}, {"a b", false}, {"résumé", false},
		{"resources", false}, {"history", false}, {"bulk", false}, {"tenants", false}, {"_system", false},
		{"Resources", true}, // reserved words are case-sensitive, like keys
	}
	for _, tt := range tests {
		err := ValidTenant(tt.tenant)
		if (err == nil) != tt.ok {
			t.Errorf("ValidTenant(%q) = %v, want ok=%v", tt.tenant, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidTenant) {
			t.Errorf("ValidTenant(%q) = %v, does not wrap ErrInvalidTenant", tt.tenant, err)
		}
	}
}

func TestParseIfMatch(t *testing.T) {
	tests := []struct {
		in   string
		want *Match
	}{
		{`W/"3"`, &Match{Versions: []int{3}}},
		{`"3"`, &Match{Versions: []int{3}}},
		{`*`, &Match{Any: true}},
		{` * `, &Match{Any: true}},
		{`W/"3", W/"4"`, &Match{Versions: []int{3, 4}}},
		{`W/"3","4" ,W/"3"`, &Match{Versions: []int{3, 4}}},
		{`W/"12345"`, &Match{Versions: []int{12345}}},
		{``, nil}, {`  `, nil}, {`3`, nil}, {`W/3`, nil}, {`W/"x"`, nil}, {`W/"0"`, nil}, {`W/"-1"`, nil},
		{`W/"03"`, nil}, {`W/"3",`, nil}, {`,W/"3"`, nil}, {`*, W/"3"`, nil}, {`w/"3"`, nil}, {`"3`, nil},
		{`W/""`, nil}, {`W/"99999999999999999999999"`, nil},
	}
	for _, tt := range tests {
		got, err := ParseIfMatch(tt.in)
		if tt.want == nil {
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), strconv.Quote(tt.in)) {
				t.Errorf("ParseIfMatch(%q) = %+v, %v; want an ErrInvalid quoting the value", tt.in, got, err)
			}
			continue
		}
		if err != nil || got.Any != tt.want.Any || !slices.Equal(got.Versions, tt.want.Versions) {
			t.Errorf("ParseIfMatch(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

func FuzzParseIfMatch(f *testing.F) {
	for _, s := range []string{`W/"3"`, `"3"`, `*`, `W/"3", W/"4"`, ``, `W/"x"`, `,`, `W/"`, "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseIfMatch(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if m.Any == (len(m.Versions) > 0) {
			t.Fatalf("%q parsed to %+v: exactly one of Any and Versions must be set", s, m)
		}
		// The rendering parses back to the same precondition.
		m2, err := ParseIfMatch(m.String())
		if err != nil || m2.Any != m.Any || !slices.Equal(m2.Versions, m.Versions) {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, m, m.String(), m2, err)
		}
		for _, v := range m.Versions {
			if v < 1 {
				t.Fatalf("%q parsed to version %d", s, v)
			}
		}
	})
}

func TestEventKeys(t *testing.T) {
	ts := time.Date(2026, 11, 26, 13, 40, 1, 123_456_789, time.UTC)
	sum := sha256.Sum256([]byte("acme\x00Patient\x00p-1.x\x0012"))
	suffix := hex.EncodeToString(sum[:16])
	if got := eventSuffix("acme", "Patient", "p-1.x", 12); got != suffix {
		t.Fatalf("suffix = %s, want %s", got, suffix)
	}
	wantType := "history/type/Patient/" + "1795700401123" + "_p-1.x_12_" + suffix + ".json"
	if got := typeEventKey("acme", "Patient", "p-1.x", 12, ts); got != wantType {
		t.Errorf("type event key = %s, want %s", got, wantType)
	}
	wantSys := "history/system/1795700401123_Patient_p-1.x_12_" + suffix + ".json"
	if got := systemEventKey("acme", "Patient", "p-1.x", 12, ts); got != wantSys {
		t.Errorf("system event key = %s, want %s", got, wantSys)
	}
	if got := padTS(42); got != "0000000000042" {
		t.Errorf("padTS(42) = %s", got)
	}
	r, ok := parseEventName(strings.TrimPrefix(wantSys, systemEventPrefix), true)
	if !ok || r.ts != 1795700401123 || r.typ != "Patient" || r.id != "p-1.x" || r.version != 12 || r.suffix != suffix {
		t.Errorf("parseEventName = %+v, %v", r, ok)
	}
	for _, bad := range []string{"x.json", "1795700401123_p_1_abc.json", "179570040112_p_1_" + suffix + ".json",
		"1795700401123_p_01_" + suffix + ".json", "1795700401123_p_1_" + suffix, "1795700401123_p_q_1_" + suffix + ".json"} {
		if _, ok := parseEventName(bad, false); ok {
			t.Errorf("parseEventName(%q) accepted", bad)
		}
	}
	// Tenants are part of the suffix: the same version in two tenants has
	// two different keys.
	if eventSuffix("a", "Patient", "p", 1) == eventSuffix("b", "Patient", "p", 1) {
		t.Error("suffix ignores the tenant")
	}
}

func TestNewConfig(t *testing.T) {
	v := testValidator(t)
	m1, m2 := memstore.New(), memstore.New()
	tests := []struct {
		name string
		cfg  Config
		want string // substring of the error; "" = ok
	}{
		{"prefix ok", Config{Bucket: m1, Validator: v}, ""},
		{"no validator", Config{Bucket: m1}, "Validator"},
		{"prefix no bucket", Config{Validator: v}, "Bucket"},
		{"prefix with map", Config{Bucket: m1, Validator: v, TenantBuckets: map[string]storage.Bucket{"a": m2}}, "TenantBuckets"},
		{"bucket ok", Config{Mode: TenancyBucket, Validator: v, TenantBuckets: map[string]storage.Bucket{"a": m1, "b": m2}}, ""},
		{"bucket shared", Config{Mode: TenancyBucket, Validator: v, TenantBuckets: map[string]storage.Bucket{"a": m1, "b": m1}}, "same bucket"},
		{"bucket bad tenant", Config{Mode: TenancyBucket, Validator: v, TenantBuckets: map[string]storage.Bucket{"bulk": m1}}, "reserved"},
		{"bucket empty", Config{Mode: TenancyBucket, Validator: v}, "TenantBuckets"},
		{"bucket with Bucket", Config{Mode: TenancyBucket, Validator: v, Bucket: m1, TenantBuckets: map[string]storage.Bucket{"a": m2}}, "Config.Bucket"},
		{"bad prefix", Config{Bucket: m1, Validator: v, Prefix: "a//b"}, "Prefix"},
		{"trimmed prefix", Config{Bucket: m1, Validator: v, Prefix: "/g/"}, ""},
		{"bad mode", Config{Mode: 7, Bucket: m1, Validator: v}, "Mode"},
	}
	for _, tt := range tests {
		_, err := New(tt.cfg)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("%s: New = %v, want error containing %q", tt.name, err, tt.want)
		}
	}
}

func TestMatch(t *testing.T) {
	live := &Resource{Version: 3}
	dead := &Resource{Version: 4, DeletedAt: new(time.Time)}
	tests := []struct {
		m    Match
		cur  *Resource
		want bool
	}{
		{Match{Any: true}, live, true},
		{Match{Any: true}, dead, false},
		{Match{Any: true}, nil, false},
		{Match{Versions: []int{3}}, live, true},
		{Match{Versions: []int{2, 3}}, live, true},
		{Match{Versions: []int{2}}, live, false},
		{Match{Versions: []int{4}}, dead, true},
		{Match{Versions: []int{1}}, nil, false},
	}
	for i, tt := range tests {
		if got := tt.m.matches(tt.cur); got != tt.want {
			t.Errorf("%d: %+v matches %+v = %v, want %v", i, tt.m, tt.cur, got, tt.want)
		}
	}
}

// FuzzCursors feeds arbitrary cursors (they come from clients) to History
// and List: the answer is a page or ErrInvalid, never a panic or another
// error.
func FuzzCursors(f *testing.F) {
	s := newStore(f, memstore.New())
	ctx := f.Context()
	for i := range 3 {
		if _, _, err := s.Update(ctx, "acme", "Patient", "p"+strconv.Itoa(i), patient("p"+strconv.Itoa(i), "x"), WriteOptions{}); err != nil {
			f.Fatal(err)
		}
	}
	for _, q := range []HistoryQuery{{Count: 1}, {Type: "Patient", Count: 1}, {Type: "Patient", ID: "p1", Count: 1}} {
		p, err := s.History(ctx, "acme", q)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(p.Next)
	}
	lp, err := s.List(ctx, "acme", "Patient", ListQuery{Count: 1})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(lp.Next)
	f.Add("")
	f.Add("ZTE6MDox")
	f.Fuzz(func(t *testing.T, cursor string) {
		for _, q := range []HistoryQuery{{Cursor: cursor}, {Type: "Patient", Cursor: cursor}, {Type: "Patient", ID: "p1", Cursor: cursor}} {
			if _, err := s.History(ctx, "acme", q); err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrNotFound) {
				t.Fatalf("History cursor %q: %v", cursor, err)
			}
		}
		if _, err := s.List(ctx, "acme", "Patient", ListQuery{Cursor: cursor}); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("List cursor %q: %v", cursor, err)
		}
	})
}

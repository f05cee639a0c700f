package layout

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestKeys pins every key to the text of docs/object-layout.md.
func TestKeys(t *testing.T) {
	ts := time.Date(2026, 11, 26, 13, 40, 1, 123_456_789, time.UTC)
	sum := sha256.Sum256([]byte("acme\x00Patient\x00p-1.x\x0012"))
	suffix := hex.EncodeToString(sum[:16])
	for _, tc := range []struct{ got, want string }{
		{TypePrefix("Patient"), "resources/Patient/"},
		{ResourcePrefix("Patient", "p1"), "resources/Patient/p1/"},
		{CurrentKey("Patient", "p1"), "resources/Patient/p1/current.json"},
		{VersionsPrefix("Patient", "p1"), "resources/Patient/p1/_history/"},
		{VersionKey("Patient", "p1", 10), "resources/Patient/p1/_history/10.json"},
		{TypeEventPrefix("Patient"), "history/type/Patient/"},
		{EventSuffix("acme", "Patient", "p-1.x", 12), suffix},
		{TypeEventKey("acme", "Patient", "p-1.x", 12, ts), "history/type/Patient/1795700401123_p-1.x_12_" + suffix + ".json"},
		{SystemEventKey("acme", "Patient", "p-1.x", 12, ts), "history/system/1795700401123_Patient_p-1.x_12_" + suffix + ".json"},
		{FormatTS(42), "0000000000042"},
		{FormatTS(MaxTS), "9999999999999"},
		{ExportStateKey("j1"), "bulk/export/jobs/j1/state.json"},
		{ExportProgressKey("j1", "Patient"), "bulk/export/jobs/j1/progress/Patient.json"},
		{ExportPartKey("j1", "OperationOutcome", 3), "bulk/export/jobs/j1/output/OperationOutcome/part-3.ndjson"},
		{ExportManifestKey("j/1"), "bulk/export/jobs/j%2F1/manifest.json"},
		{ExportDeletedPartKey("j1", "Patient", 2), "bulk/export/jobs/j1/deleted/Patient/part-2.ndjson"},
		{SubmissionStateKey("http://x.org|a b", "s1"), "bulk/submit/http%3A%2F%2Fx.org%7Ca%20b/s1/state.json"},
		{SubmitManifestKey("sys|v", "s1", "m1"), "bulk/submit/sys%7Cv/s1/manifests/m1.json"},
		{SubmitRawLineKey("sys|v", "s1", "m1", 7), "bulk/submit/sys%7Cv/s1/raw/m1/line-7.ndjson"},
		{SubmitResultKey("sys|v", "s1", "m1", 7), "bulk/submit/sys%7Cv/s1/results/m1/line-7.json"},
		{SubmitChangeKey("sys|v", "..", "c1"), "bulk/submit/sys%7Cv/%2E%2E/changes/c1.json"},
		{TransactionKey("tx-1"), "transactions/tx-1.json"},
		{ClientJTIPrefix("bulk/acme"), "auth/jti/bulk%2Facme/"},
		{JTIKey("c1", "abc"), "auth/jti/c1/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.json"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %s, want %s", tc.got, tc.want)
		}
	}
	// Tenants are part of the suffix: the same version in two tenants has
	// two different keys.
	if EventSuffix("a", "Patient", "p", 1) == EventSuffix("b", "Patient", "p", 1) {
		t.Error("suffix ignores the tenant")
	}
}

func TestParseEventName(t *testing.T) {
	ts := time.UnixMilli(1795700401123)
	sys := strings.TrimPrefix(SystemEventKey("acme", "Patient", "p-1.x", 12, ts), SystemEventsPrefix)
	e, ok := ParseEventName(sys, true)
	want := Event{TS: 1795700401123, Type: "Patient", ID: "p-1.x", Version: 12, Suffix: EventSuffix("acme", "Patient", "p-1.x", 12)}
	if !ok || e != want {
		t.Errorf("ParseEventName(%q) = %+v, %v", sys, e, ok)
	}
	typ := strings.TrimPrefix(TypeEventKey("acme", "Patient", "p-1.x", 12, ts), TypeEventPrefix("Patient"))
	want.Type = ""
	if e, ok := ParseEventName(typ, false); !ok || e != want {
		t.Errorf("ParseEventName(%q) = %+v, %v", typ, e, ok)
	}
	suffix := want.Suffix
	for _, bad := range []string{"x.json", "1795700401123_p_1_abc.json", "179570040112_p_1_" + suffix + ".json",
		"1795700401123_p_01_" + suffix + ".json", "1795700401123_p_1_" + suffix, "1795700401123_p_q_1_" + suffix + ".json",
		"1795700401123__1_" + suffix + ".json", "-795700401123_p_1_" + suffix + ".json", "1795700401123_p_0_" + suffix + ".json"} {
		if _, ok := ParseEventName(bad, false); ok {
			t.Errorf("ParseEventName(%q) accepted", bad)
		}
	}
	if _, ok := ParseEventName(typ, true); ok {
		t.Errorf("a type event parsed as a system event")
	}
	if _, ok := ParseEventName(sys, false); ok {
		t.Errorf("a system event parsed as a type event")
	}
}

func TestParseResourceKey(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want ResourceKey
		ok   bool
	}{
		{CurrentKey("Patient", "p1"), ResourceKey{"Patient", "p1", 0}, true},
		{VersionKey("Patient", "p1", 12), ResourceKey{"Patient", "p1", 12}, true},
		{"resources/Patient/p1/_history/012.json", ResourceKey{}, false},
		{"resources/Patient/p1/_history/0.json", ResourceKey{}, false},
		{"resources/Patient/p1/_history/1", ResourceKey{}, false},
		{"resources/Patient/p1/other.json", ResourceKey{}, false},
		{"resources/Patient/p1/history/1.json", ResourceKey{}, false},
		{"resources/Patient//current.json", ResourceKey{}, false},
		{"resources/Patient/p1/_history/1.json/x", ResourceKey{}, false},
		{"history/Patient/p1/current.json", ResourceKey{}, false},
	} {
		got, ok := ParseResourceKey(tc.key)
		if ok != tc.ok || ok && got != tc.want {
			t.Errorf("ParseResourceKey(%q) = %+v, %v", tc.key, got, ok)
		}
	}
	if v, ok := ParseVersion("7.json"); !ok || v != 7 {
		t.Errorf("ParseVersion(7.json) = %d, %v", v, ok)
	}
}

func TestTransactionKey(t *testing.T) {
	for _, id := range []string{"tx-1", "a/b", "..", "ü"} {
		got, ok := ParseTransactionKey(TransactionKey(id))
		if !ok || got != id {
			t.Errorf("ParseTransactionKey(TransactionKey(%q)) = %q, %v", id, got, ok)
		}
	}
	for _, bad := range []string{"transactions/.json", "transactions/a", "transactions/a%2f.json", "tx/a.json", "transactions/a b.json"} {
		if _, ok := ParseTransactionKey(bad); ok {
			t.Errorf("ParseTransactionKey(%q) accepted", bad)
		}
	}
}

func TestValidTenant(t *testing.T) {
	for _, tt := range []struct {
		tenant string
		ok     bool
	}{
		{"acme", true}, {"A", true}, {"a.b_c-d", true}, {strings.Repeat("a", 64), true},
		{"", false}, {strings.Repeat("a", 65), false}, {".a", false}, {"_a", false}, {"a/b", false},
		{"a b", false}, {"ä", false}, {"resources", false}, {"history", false}, {"bulk", false},
		{"tenants", false}, {"_system", false},
	} {
		err := ValidTenant(tt.tenant)
		if (err == nil) != tt.ok {
			t.Errorf("ValidTenant(%q) = %v, want ok=%v", tt.tenant, err, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), `"`+tt.tenant+`"`) {
			t.Errorf("ValidTenant(%q) = %v, does not quote the tenant", tt.tenant, err)
		}
	}
}

func TestSegment(t *testing.T) {
	for _, tc := range []struct{ in, enc string }{
		{"abc-XYZ_0.9", "abc-XYZ_0.9"},
		{"a/b", "a%2Fb"},
		{"http://loinc.org|1234-5", "http%3A%2F%2Floinc.org%7C1234-5"},
		{"%", "%25"},
		{"ü", "%C3%BC"},
		{"\x00\xff", "%00%FF"},
		{".", "%2E"},
		{"..", "%2E%2E"},
		{"...", "..."},
		{"", ""},
	} {
		if got := EncodeSegment(tc.in); got != tc.enc {
			t.Errorf("EncodeSegment(%q) = %q, want %q", tc.in, got, tc.enc)
		}
		if got, err := DecodeSegment(tc.enc); err != nil || got != tc.in {
			t.Errorf("DecodeSegment(%q) = %q, %v", tc.enc, got, err)
		}
	}
	for _, bad := range []string{"a%2fb", "%41", "%2", "%", "%G0", "a b", "a/b", ".", "..", "a%2E", "ü"} {
		if got, err := DecodeSegment(bad); !errors.Is(err, ErrBadSegment) {
			t.Errorf("DecodeSegment(%q) = %q, %v; want ErrBadSegment", bad, got, err)
		}
	}
}

// FuzzSegment: decoding inverts encoding, an encoded value is one safe
// key segment, and a segment that decodes is the encoding of its value
// (so no two values share a segment).
func FuzzSegment(f *testing.F) {
	for _, s := range []string{"", "a", ".", "..", "a/b", "sys|v", "%", "%2F", "%2f", "ü", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		enc := EncodeSegment(s)
		dec, err := DecodeSegment(enc)
		if err != nil || dec != s {
			t.Fatalf("DecodeSegment(EncodeSegment(%q) = %q) = %q, %v", s, enc, dec, err)
		}
		if enc == "." || enc == ".." || strings.ContainsAny(enc, "/\\ ") {
			t.Fatalf("EncodeSegment(%q) = %q is not a safe segment", s, enc)
		}
		for i := 0; i < len(enc); i++ {
			if !plain(enc[i]) && enc[i] != '%' {
				t.Fatalf("EncodeSegment(%q) = %q holds %q", s, enc, enc[i])
			}
		}
		if v, err := DecodeSegment(s); err == nil && EncodeSegment(v) != s {
			t.Fatalf("DecodeSegment(%q) = %q, which encodes to %q", s, v, EncodeSegment(v))
		}
	})
}

package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var testInstant = time.Date(2026, 11, 26, 13, 40, 1, 123456789, time.FixedZone("x", 3600))

func TestFormatInstant(t *testing.T) {
	tests := []struct {
		in   time.Time
		want string
	}{
		{testInstant, "2026-11-26T12:40:01.123Z"},
		{time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "2026-01-02T03:04:05.000Z"},
		{time.Date(2026, 1, 2, 3, 4, 5, 999999999, time.UTC), "2026-01-02T03:04:05.999Z"},
	}
	for _, tt := range tests {
		if got := FormatInstant(tt.in); got != tt.want {
			t.Errorf("FormatInstant(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseInstant(t *testing.T) {
	utc := func(y, mo, d, h, mi, s, ns int) time.Time {
		return time.Date(y, time.Month(mo), d, h, mi, s, ns, time.UTC)
	}
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2026", utc(2026, 1, 1, 0, 0, 0, 0), true},
		{"2026-11", utc(2026, 11, 1, 0, 0, 0, 0), true},
		{"2026-11-26", utc(2026, 11, 26, 0, 0, 0, 0), true},
		{"2026-11-26T13:40:01Z", utc(2026, 11, 26, 13, 40, 1, 0), true},
		{"2026-11-26T13:40:01.123Z", utc(2026, 11, 26, 13, 40, 1, 123000000), true},
		{"2026-11-26T13:40:01.1234567891Z", utc(2026, 11, 26, 13, 40, 1, 123456789), true},
		{"2026-11-26T13:40:01+01:00", utc(2026, 11, 26, 12, 40, 1, 0), true},
		{"2026-11-26T00:40:01.5-05:30", utc(2026, 11, 26, 6, 10, 1, 500000000), true},
		{"2024-02-29", utc(2024, 2, 29, 0, 0, 0, 0), true},
		{"", time.Time{}, false},
		{"0000", time.Time{}, false},
		{"26", time.Time{}, false},
		{"2026-13", time.Time{}, false},
		{"2026-1", time.Time{}, false},
		{"2025-02-29", time.Time{}, false},
		{"2026-11-26T13:40:01", time.Time{}, false}, // time without zone
		{"2026-11-26T13:40Z", time.Time{}, false},
		{"2026-11-26T24:00:00Z", time.Time{}, false},
		{"2026-11-26T13:40:60Z", time.Time{}, false},
		{"2026-11-26T13:40:01.Z", time.Time{}, false},
		{"2026-11-26T13:40:01+15:00", time.Time{}, false},
		{"2026-11-26T13:40:01+0100", time.Time{}, false},
		{"2026-11-26 13:40:01Z", time.Time{}, false},
		{"2026-11-26T13:40:01Zjunk", time.Time{}, false},
	}
	for _, tt := range tests {
		got, err := ParseInstant(tt.in)
		if !tt.ok {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseInstant(%q) = %v, %v; want ErrInvalid", tt.in, got, err)
			}
			continue
		}
		if err != nil || !got.Equal(tt.want) || got.Location() != time.UTC {
			t.Errorf("ParseInstant(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseInstantRoundTrip(t *testing.T) {
	s := FormatInstant(testInstant)
	got, err := ParseInstant(s)
	if err != nil {
		t.Fatal(err)
	}
	if FormatInstant(got) != s {
		t.Errorf("round trip %q -> %q", s, FormatInstant(got))
	}
}

func TestPeek(t *testing.T) {
	tests := []struct {
		in       string
		typ, id  string
		wantFail bool
	}{
		{`{"resourceType":"Patient","id":"p1"}`, "Patient", "p1", false},
		{` { "id" : "p1" , "x":[1,{"id":"no"}], "resourceType" : "Observation" } `, "Observation", "p1", false},
		{`{"resourceType":"Patient"}`, "Patient", "", false},
		{`{"resourceType":"Pat\u0069ent","\u0069d":"a"}`, "Patient", "a", false},
		{`{"resourceType":"Nope"}`, "Nope", "", false}, // not Peek's business
		{`{"id":"p1"}`, "", "", true},
		{`{"resourceType":1}`, "", "", true},
		{`{"resourceType":"Patient","id":7}`, "", "", true},
		{`{"resourceType":"Patient","resourceType":"Patient"}`, "", "", true},
		{`{"resourceType":"Patient","id":"a","id":"b"}`, "", "", true},
		{`{"resourceType":"Patient"} x`, "", "", true},
		{`{"resourceType":"Patient",}`, "", "", true},
		{`{"resourceType":"Patient","a":[1,2}`, "", "", true},
		{`[]`, "", "", true},
		{`"x"`, "", "", true},
		{`null`, "", "", true},
		{``, "", "", true},
		{`{"resourceType":"Patient","a":01}`, "", "", true},
	}
	for _, tt := range tests {
		typ, id, err := Peek([]byte(tt.in))
		if tt.wantFail {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Peek(%s) = %q, %q, %v; want ErrInvalid", tt.in, typ, id, err)
			}
			continue
		}
		if err != nil || typ != tt.typ || id != tt.id {
			t.Errorf("Peek(%s) = %q, %q, %v; want %q, %q", tt.in, typ, id, err, tt.typ, tt.id)
		}
	}
}

func TestSetMeta(t *testing.T) {
	const lu = `"lastUpdated":"2026-11-26T12:40:01.123Z"`
	tests := []struct {
		name, in, want string
	}{
		{"bare",
			`{"resourceType":"Patient","active":true}`,
			`{"resourceType":"Patient","id":"p1","meta":{"versionId":"2",` + lu + `},"active":true}`},
		{"id replaced in place, meta after id",
			`{"resourceType":"Patient","x":1.50,"id":"old","active":true}`,
			`{"resourceType":"Patient","x":1.50,"id":"p1","meta":{"versionId":"2",` + lu + `},"active":true}`},
		{"meta kept in order",
			`{"resourceType":"Observation","id":"old","meta":{"profile":["http://x/p"],"versionId":"1","tag":[{"code":"t"}],"lastUpdated":"2020-01-01T00:00:00Z","source":"s"},"valueQuantity":{"value":1.50e0}}`,
			`{"resourceType":"Observation","id":"p1","meta":{"profile":["http://x/p"],"versionId":"2","tag":[{"code":"t"}],` + lu + `,"source":"s"},"valueQuantity":{"value":1.50e0}}`},
		{"meta lastUpdated before versionId",
			`{"resourceType":"Patient","meta":{"lastUpdated":"x","versionId":"y"}}`,
			`{"resourceType":"Patient","id":"p1","meta":{` + lu + `,"versionId":"2"}}`},
		{"meta without version members",
			`{"resourceType":"Patient","meta":{"security":[]},"id":"z"}`,
			`{"resourceType":"Patient","meta":{"security":[],"versionId":"2",` + lu + `},"id":"p1"}`},
		{"empty meta",
			`{"resourceType":"Patient","id":"p1","meta":{ }}`,
			`{"resourceType":"Patient","id":"p1","meta":{"versionId":"2",` + lu + ` }}`},
		{"meta before resourceType",
			`{"meta":{"versionId":"9"},"resourceType":"Patient"}`,
			`{"meta":{"versionId":"2",` + lu + `},"resourceType":"Patient","id":"p1"}`},
		{"no resourceType",
			`{"active":false}`,
			`{"id":"p1","meta":{"versionId":"2",` + lu + `},"active":false}`},
		{"empty object",
			` {} `,
			` {"id":"p1","meta":{"versionId":"2",` + lu + `}} `},
		{"pretty printed, unicode and escapes kept",
			"{\n  \"resourceType\": \"Patient\",\n  \"name\": [{\"text\": \"Jos\\u00e9 \xc3\xa9\"}]\n}\n",
			"{\n  \"resourceType\": \"Patient\",\"id\":\"p1\",\"meta\":{\"versionId\":\"2\"," + lu + "},\n  \"name\": [{\"text\": \"Jos\\u00e9 \xc3\xa9\"}]\n}\n"},
		{"escaped key names are recognised",
			`{"resourceType":"Patient","\u0069d":"old"}`,
			`{"resourceType":"Patient","\u0069d":"p1","meta":{"versionId":"2",` + lu + `}}`},
		{"nested id and meta untouched",
			`{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"in","meta":{"versionId":"7"}}}]}`,
			`{"resourceType":"Bundle","id":"p1","meta":{"versionId":"2",` + lu + `},"entry":[{"resource":{"resourceType":"Patient","id":"in","meta":{"versionId":"7"}}}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SetMeta([]byte(tt.in), "p1", "2", testInstant)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("SetMeta:\n got %s\nwant %s", got, tt.want)
			}
			if !json.Valid(got) {
				t.Errorf("output is not valid JSON")
			}
		})
	}
}

func TestSetMetaErrors(t *testing.T) {
	tests := []struct {
		name, in, id, vid string
	}{
		{"not an object", `[]`, "a", "1"},
		{"trailing garbage", `{"resourceType":"Patient"}{}`, "a", "1"},
		{"malformed", `{"resourceType":"Patient",}`, "a", "1"},
		{"meta not an object", `{"resourceType":"Patient","meta":[]}`, "a", "1"},
		{"meta null", `{"resourceType":"Patient","meta":null}`, "a", "1"},
		{"duplicate id", `{"id":"a","id":"b"}`, "a", "1"},
		{"duplicate meta", `{"meta":{},"meta":{}}`, "a", "1"},
		{"duplicate versionId", `{"meta":{"versionId":"1","versionId":"2"}}`, "a", "1"},
		{"bad id", `{}`, "../x", "1"},
		{"empty id", `{}`, "", "1"},
		{"bad version", `{}`, "a", "1 2"},
		{"empty", ``, "a", "1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SetMeta([]byte(tt.in), tt.id, tt.vid, testInstant)
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("SetMeta = %s, %v; want ErrInvalid", got, err)
			}
		})
	}
}

// TestSetMetaExamples runs SetMeta over every official example and checks
// that only id and meta changed: decoding both with UseNumber and
// comparing gives the same document once id and meta are aligned.
func TestSetMetaExamples(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "r4", "examples", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out, err := SetMeta(data, "new-id", "3", testInstant)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		typ, id, err := Peek(out)
		if err != nil || id != "new-id" {
			t.Errorf("%s: Peek after SetMeta = %q, %q, %v", f, typ, id, err)
		}
		before, after := decodeNumbers(t, data), decodeNumbers(t, out)
		meta, _ := after["meta"].(map[string]any)
		if meta["versionId"] != "3" || meta["lastUpdated"] != "2026-11-26T12:40:01.123Z" {
			t.Errorf("%s: meta = %v", f, meta)
		}
		if m, ok := before["meta"].(map[string]any); ok {
			for k, v := range m {
				if k != "versionId" && k != "lastUpdated" && !jsonEqual(v, meta[k]) {
					t.Errorf("%s: meta.%s changed", f, k)
				}
			}
		}
		delete(before, "meta")
		delete(after, "meta")
		before["id"] = "new-id"
		if !jsonEqual(before, after) {
			t.Errorf("%s: content other than id and meta changed", f)
		}
		// Everything before the first edit is byte-identical.
		// The first edit is the id value, or the id inserted after
		// resourceType, or meta when it comes first.
		first, rtEnd, haveID := -1, -1, false
		if _, _, err := topLevelObject(data, func(m member) error {
			switch {
			case m.keyIs(data, "resourceType"):
				rtEnd = m.valEnd
			case m.keyIs(data, "id"):
				haveID = true
				if first < 0 {
					first = m.valStart
				}
			case m.keyIs(data, "meta"):
				if first < 0 {
					first = m.valStart
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if !haveID && (first < 0 || rtEnd < first) {
			first = rtEnd
		}
		if first <= 0 || !bytes.HasPrefix(out, data[:first]) {
			t.Errorf("%s: bytes before id changed", f)
		}
	}
}

func decodeNumbers(t *testing.T, data []byte) map[string]any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func BenchmarkSetMeta(b *testing.B) {
	data, err := os.ReadFile(filepath.Join("..", "testdata", "r4", "examples", "patient-example.json"))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := SetMeta(data, "example", "12", testInstant); err != nil {
			b.Fatal(err)
		}
	}
}

package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fuzzSeedExamples are official examples small enough to keep the fuzzer
// fast, covering nested arrays, decimals, escapes and contained resources.
var fuzzSeedExamples = []string{
	"patient-example.json",
	"observation-example.json",
	"bundle-request-simplesummary.json",
	"parameters-example.json",
	"medicationrequestexample1.json",
}

func addExampleSeeds(f *testing.F) {
	f.Helper()
	for _, name := range fuzzSeedExamples {
		data, err := os.ReadFile(filepath.Join("..", "testdata", "r4", "examples", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		`{}`, `[]`, `null`, `{"resourceType":"Patient","id":"a","meta":{}}`,
		`{"resourceType":"Patient","meta":{"versionId":"1","lastUpdated":"x"},"id":"a"}`,
		`{"a":[[[[{"b":1.50e-3}]]]]}`, `{"\u0069d":"x"}`, "{\"a\":\"\xff\"}",
		`{"resourceType":"Patient"} x`, `{"a":1,}`, `{"a" 1}`, `{"a":"\u12"}`,
	} {
		f.Add([]byte(s))
	}
}

func FuzzPeek(f *testing.F) {
	addExampleSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, id, err := Peek(data)
		if err != nil {
			return
		}
		// Anything Peek accepts is one well-formed JSON value.
		if !json.Valid(data) {
			t.Fatalf("Peek accepted invalid JSON %q (type %q id %q)", data, typ, id)
		}
	})
}

func FuzzSetMeta(f *testing.F) {
	addExampleSeeds(f)
	at := time.Date(2026, 11, 26, 13, 40, 1, 0, time.UTC)
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := SetMeta(data, "fz-1", "7", at)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("SetMeta output is not valid JSON:\n in %q\nout %q", data, out)
		}
		_, id, err := Peek(out)
		if err != nil && bytes.Contains(data, []byte("resourceType")) {
			// Peek may fail on a missing or non-string resourceType; id must still be right.
			return
		}
		if err == nil && id != "fz-1" {
			t.Fatalf("id after SetMeta = %q", id)
		}
		// Idempotent: a second SetMeta changes nothing.
		again, err := SetMeta(out, "fz-1", "7", at)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("SetMeta not idempotent: %v\n%q\n%q", err, out, again)
		}
	})
}

func FuzzParseInstant(f *testing.F) {
	for _, s := range []string{
		"2026", "2026-11", "2026-11-26", "2026-11-26T13:40:01Z",
		"2026-11-26T13:40:01.123Z", "2026-11-26T13:40:01.123456789+14:00",
		"2026-02-30", "2026-11-26T13:40:01", "", "x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ts, err := ParseInstant(s)
		if err != nil {
			return
		}
		// Every accepted value formats and parses back to the same instant
		// at millisecond precision.
		back, err := ParseInstant(FormatInstant(ts))
		if err != nil {
			t.Fatalf("ParseInstant(FormatInstant(%v)) from %q: %v", ts, s, err)
		}
		if !back.Equal(ts.Truncate(time.Millisecond)) {
			t.Fatalf("round trip of %q: %v != %v", s, back, ts)
		}
	})
}

func FuzzValidate(f *testing.F) {
	addExampleSeeds(f)
	for _, s := range []string{
		`{"resourceType":"Patient","active":"yes"}`,
		`{"resourceType":"Patient","name":[{"family":"a","family":"b"}]}`,
		`{"resourceType":"Patient","contained":[{"resourceType":"Organization","name":"x"}]}`,
		`{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50}}`,
		`[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[`,
	} {
		f.Add([]byte(s))
	}
	v, err := NewValidator(ValidatorOptions{MaxBytes: 1 << 20})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := v.Validate(data)
		if err != nil {
			var verr *ValidationError
			if errors.As(err, &verr) && len(verr.Issues) == 0 {
				t.Fatalf("ValidationError without issues for %q", data)
			}
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("unexpected error kind %v", err)
			}
			return
		}
		// Whatever Validate accepts is well-formed JSON that Peek reads the
		// same way, and SetMeta can stamp.
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		typ, id, err := Peek(data)
		if err != nil || typ != info.Type || id != info.ID {
			t.Fatalf("Peek = %q %q %v, Validate = %+v", typ, id, err, info)
		}
		if !IsResourceType(info.Type) || info.ID != "" && !ValidID(info.ID) {
			t.Fatalf("accepted bad envelope %+v", info)
		}
		out, err := SetMeta(data, "x", "1", time.Unix(0, 0))
		if err != nil {
			t.Fatalf("SetMeta on a valid resource: %v", err)
		}
		if _, err := v.Validate(out); err != nil {
			t.Fatalf("resource invalid after SetMeta: %v\n%s", err, out)
		}
	})
}

func FuzzNDJSONReader(f *testing.F) {
	f.Add([]byte("{\"a\":1}\n{\"b\":2}\n"), 16)
	f.Add([]byte("\xef\xbb\xbf\r\n\n  \n{}\r\n"+strings.Repeat("x", 40)+"\n{}"), 8)
	f.Add([]byte(""), 1)
	f.Fuzz(func(t *testing.T, data []byte, maxLine int) {
		maxLine = maxLine%64 + 1
		if maxLine <= 0 {
			maxLine += 64
		}
		r := NewNDJSONReader(bytes.NewReader(data), maxLine)
		prev := 0
		for {
			l, no, err := r.Next()
			if err == io.EOF {
				break
			}
			if no <= prev {
				t.Fatalf("line numbers not increasing: %d after %d", no, prev)
			}
			prev = no
			if err != nil {
				if !errors.Is(err, ErrTooLarge) {
					t.Fatalf("unexpected error %v", err)
				}
				continue
			}
			if len(l) > maxLine || len(bytes.TrimSpace(l)) == 0 || bytes.ContainsAny(l, "\n") {
				t.Fatalf("bad line %q (max %d)", l, maxLine)
			}
		}
		if lines := bytes.Count(data, []byte{'\n'}) + 1; prev > lines {
			t.Fatalf("line %d of %d", prev, lines)
		}
	})
}

func FuzzParseBundle(f *testing.F) {
	addExampleSeeds(f)
	f.Add([]byte(`{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"x"}},{"resource":{}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := ParseBundle(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		for i, e := range b.Entry {
			if len(e.Resource) > 0 && !json.Valid(e.Resource) {
				t.Fatalf("entry %d resource not JSON", i)
			}
		}
		if _, err := Marshal(b); err != nil {
			t.Fatalf("Marshal parsed bundle: %v", err)
		}
	})
}

func FuzzParseParameters(f *testing.F) {
	addExampleSeeds(f)
	f.Add([]byte(`{"resourceType":"Parameters","parameter":[{"name":"a","valueCoding":{"code":"x"},"part":[{"name":"b","valueDecimal":1.50}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseParameters(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			return
		}
		out, err := Marshal(p)
		if err != nil {
			t.Fatalf("Marshal parsed parameters: %v", err)
		}
		if _, err := ParseParameters(out); err != nil {
			t.Fatalf("re-parse: %v\n%s", err, out)
		}
	})
}

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
	"testing/iotest"
	"time"
)

func readExample(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "r4", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestEmittedDocumentsValidate builds the documents the server sends and
// checks them with the Validator: what fhirbucket emits is valid R4.
func TestEmittedDocumentsValidate(t *testing.T) {
	v := newTestValidator(t, ValidatorOptions{})
	patient := readExample(t, "patient-example.json")
	stamped, err := SetMeta(patient, "example", "2", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	at := FormatInstant(time.Now())
	total := 2
	literal, err := SetMeta([]byte(`{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">a &amp; b</div>"},"active":true}`), "lit", "1", time.Now())
	if err != nil {
		t.Fatal(err)
	}

	verr := &ValidationError{Issues: []Issue{
		{Code: "structure", Path: "Patient.name[0].`a b`", Message: `unknown element "a b"`},
		{Code: "value", Path: "Patient.birthDate", Message: `"1980-13-45" is not a valid FHIR date`},
		{Code: "structure", Message: "not valid UTF-8 at offset 3"},
	}}
	outcome, err := Marshal(NewValidationOutcome(verr))
	if err != nil {
		t.Fatal(err)
	}
	simple, err := Marshal(NewOutcome(SeverityError, "not-found", "Patient/x is not known"))
	if err != nil {
		t.Fatal(err)
	}

	history := &Bundle{
		ResourceType: "Bundle", ID: "h1", Meta: &Meta{LastUpdated: at}, Type: BundleHistory, Total: &total,
		Link: []BundleLink{{Relation: "self", URL: "http://localhost/Patient/example/_history"}},
		Entry: []BundleEntry{
			{FullURL: "http://localhost/Patient/example", Resource: stamped,
				Request:  &BundleEntryRequest{Method: "PUT", URL: "Patient/example"},
				Response: &BundleEntryResponse{Status: "200 OK", Etag: `W/"2"`, LastModified: at}},
			{FullURL: "http://localhost/Patient/lit", Resource: literal,
				Request:  &BundleEntryRequest{Method: "POST", URL: "Patient"},
				Response: &BundleEntryResponse{Status: "201 Created", Etag: `W/"1"`, LastModified: at}},
			{FullURL: "http://localhost/Patient/example",
				Request:  &BundleEntryRequest{Method: "DELETE", URL: "Patient/example"},
				Response: &BundleEntryResponse{Status: "410 Gone", Etag: `W/"3"`, LastModified: at}},
		},
	}
	searchset := &Bundle{
		ResourceType: "Bundle", ID: "s1", Meta: &Meta{LastUpdated: at}, Type: BundleSearchset, Total: &total,
		Link: []BundleLink{{Relation: "self", URL: "http://localhost/Patient?_count=1"}, {Relation: "next", URL: "http://localhost/Patient?_count=1&_cursor=abc"}},
		Entry: []BundleEntry{
			{FullURL: "http://localhost/Patient/example", Resource: stamped, Search: &BundleEntrySearch{Mode: "match"}},
			{Resource: outcome, Search: &BundleEntrySearch{Mode: "outcome"}},
		},
	}
	batchResponse := &Bundle{
		ResourceType: "Bundle", Type: BundleBatchResponse,
		Entry: []BundleEntry{
			{Response: &BundleEntryResponse{Status: "201 Created", Location: "Patient/example/_history/2", Etag: `W/"2"`, LastModified: at}},
			{Response: &BundleEntryResponse{Status: "400 Bad Request", Outcome: outcome}},
		},
	}
	params := &Parameters{ResourceType: "Parameters", Parameter: []Parameter{
		{Name: "return", Resource: outcome},
		{Name: "flag", ValueBoolean: new(false)},
		{Name: "group", Part: []Parameter{{Name: "n", ValueDecimal: "1.50"}, {Name: "t", ValueInstant: at}}},
	}}
	docs := map[string]any{"history": history, "searchset": searchset, "batch-response": batchResponse, "parameters": params}
	raws := map[string][]byte{"validation outcome": outcome, "simple outcome": simple}
	for name, d := range docs {
		b, err := Marshal(d)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		raws[name] = b
	}
	for name, b := range raws {
		if _, err := v.Validate(b); err != nil {
			t.Errorf("%s does not validate: %v\n%s", name, err, b)
		}
	}
	// Embedded resources are carried verbatim: the narrative's <div> is not
	// escaped and decimals keep their text.
	if !bytes.Contains(raws["history"], []byte(`"<div xmlns=\"http://www.w3.org/1999/xhtml\">a &amp; b</div>"`)) ||
		!bytes.Contains(raws["history"], []byte(`\u003cdiv xmlns`)) {
		t.Errorf("history bundle escaped the narrative")
	}
	if !bytes.Contains(raws["parameters"], []byte(`"valueDecimal":1.50`)) {
		t.Errorf("parameters lost decimal text: %s", raws["parameters"])
	}
	// The validation outcome carries one issue per validation issue.
	var oo OperationOutcome
	if err := json.Unmarshal(outcome, &oo); err != nil {
		t.Fatal(err)
	}
	if len(oo.Issue) != 3 || oo.Issue[0].Expression[0] != "Patient.name[0].`a b`" || oo.Issue[1].Code != "value" || oo.Issue[2].Expression != nil {
		t.Errorf("validation outcome = %+v", oo)
	}
}

func TestParseBundle(t *testing.T) {
	data := readExample(t, "bundle-request-medsallergies.json")
	b, err := ParseBundle(data)
	if err != nil {
		t.Fatal(err)
	}
	if b.Type != BundleBatch || len(b.Entry) == 0 {
		t.Fatalf("bundle = %s with %d entries", b.Type, len(b.Entry))
	}
	for i, e := range b.Entry {
		if e.Request == nil || e.Request.Method == "" || e.Request.URL == "" {
			t.Errorf("entry %d: request %+v", i, e.Request)
		}
	}
	// A resource comes back byte for byte as it was in the document.
	tx := `{"resourceType":"Bundle","type":"transaction","entry":[` +
		`{"fullUrl":"urn:uuid:1","resource":{ "resourceType" : "Observation", "valueQuantity": {"value": 1.50}},"request":{"method":"POST","url":"Observation","ifNoneExist":"identifier=x"}}]}`
	b, err = ParseBundle([]byte(tx))
	if err != nil {
		t.Fatal(err)
	}
	want := `{ "resourceType" : "Observation", "valueQuantity": {"value": 1.50}}`
	if string(b.Entry[0].Resource) != want || b.Entry[0].Request.IfNoneExist != "identifier=x" || b.Entry[0].FullURL != "urn:uuid:1" {
		t.Errorf("entry = %s %+v", b.Entry[0].Resource, b.Entry[0].Request)
	}

	bad := []struct {
		name, in, want string
	}{
		{"not object", `[]`, "not a JSON object"},
		{"trailing", `{"resourceType":"Bundle","type":"batch"} }`, "data after"},
		{"wrong type", `{"resourceType":"Patient","type":"batch"}`, `resourceType is "Patient"`},
		{"no type", `{"resourceType":"Bundle"}`, "Bundle.type is missing"},
		{"entry not object", `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"x"}},7]}`, "Bundle.entry[1]"},
		{"resource not object", `{"resourceType":"Bundle","type":"batch","entry":[{},{"resource":[]}]}`, "Bundle.entry[1].resource: not a JSON object"},
		{"bad method", `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET","url":"a"}},{"request":{"method":"FETCH","url":"a"}}]}`, `Bundle.entry[1].request.method "FETCH"`},
		{"no url", `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":"GET"}}]}`, "Bundle.entry[0].request.url is missing"},
		{"wrong field type", `{"resourceType":"Bundle","type":"batch","entry":[{"request":{"method":1,"url":"a"}}]}`, "Bundle.entry[0]"},
		{"too deep", `{"resourceType":"Bundle","type":"batch","x":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`, "nested deeper"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseBundle([]byte(tt.in))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseBundle = %v, want ErrInvalid with %q", err, tt.want)
			}
		})
	}
}

func TestParseParameters(t *testing.T) {
	in := `{"resourceType":"Parameters","parameter":[` +
		`{"name":"_type","valueString":"Patient,Observation"},` +
		`{"name":"_since","valueInstant":"2026-11-26T13:40:01Z"},` +
		`{"name":"exact","valueBoolean":false},` +
		`{"name":"n","valueDecimal":1.50},` +
		`{"name":"coding","valueCoding":{"system":"http://x","code":"y"},"extension":[{"url":"u","valueString":"s"}]},` +
		`{"name":"resource","resource":{"resourceType":"Patient", "id":"p"}},` +
		`{"name":"g","part":[{"name":"a","valueInteger":3},{"name":"b","part":[{"name":"c","valueCode":"x"}]}]}]}`
	p, err := ParseParameters([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Get("_type"); got == nil || got.ValueString != "Patient,Observation" {
		t.Errorf("_type = %+v", got)
	}
	if got := p.Get("exact"); got == nil || got.ValueBoolean == nil || *got.ValueBoolean {
		t.Errorf("exact = %+v", got)
	}
	if got := p.Get("n"); got == nil || got.ValueDecimal != "1.50" {
		t.Errorf("n = %+v", got)
	}
	if got := p.Get("resource"); got == nil || string(got.Resource) != `{"resourceType":"Patient", "id":"p"}` {
		t.Errorf("resource = %+v", got)
	}
	if g := p.Get("g"); g == nil || len(g.Part) != 2 || *g.Part[0].ValueInteger != 3 || g.Part[1].Part[0].ValueCode != "x" {
		t.Errorf("g = %+v", g)
	}
	if p.Get("nope") != nil || len(p.All("n")) != 1 {
		t.Errorf("Get/All wrong")
	}
	// Members without fields survive a round trip, and the result is still
	// valid R4.
	out, err := Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"valueCoding":{"system":"http://x","code":"y"}`, `"extension":[{"url":"u","valueString":"s"}]`, `"valueDecimal":1.50`} {
		if !bytes.Contains(out, []byte(s)) {
			t.Errorf("round trip lost %s: %s", s, out)
		}
	}
	v := newTestValidator(t, ValidatorOptions{})
	if _, err := v.Validate(out); err != nil {
		t.Errorf("round-tripped Parameters invalid: %v", err)
	}
	if _, err := v.Validate([]byte(in)); err != nil {
		t.Errorf("input Parameters invalid: %v", err)
	}

	bad := []struct{ name, in, want string }{
		{"not parameters", `{"resourceType":"Patient"}`, `resourceType is "Patient"`},
		{"missing name", `{"resourceType":"Parameters","parameter":[{"name":"a"},{"valueString":"x"}]}`, "Parameters.parameter[1].name is missing"},
		{"missing nested name", `{"resourceType":"Parameters","parameter":[{"name":"a","part":[{"name":"b"},{"valueString":"x"}]}]}`, "Parameters.parameter[0].part[1].name is missing"},
		{"resource not object", `{"resourceType":"Parameters","parameter":[{"name":"a","resource":"x"}]}`, "Parameters.parameter[0].resource: not a JSON object"},
		{"wrong type", `{"resourceType":"Parameters","parameter":[{"name":"a","valueBoolean":"yes"}]}`, "valueBoolean"},
		{"garbage", `{"resourceType":"Parameters"}x`, "data after"},
		{"too deep", `{"resourceType":"Parameters","parameter":[` + strings.Repeat(`{"name":"a","part":[`, 120) + strings.Repeat("]}", 120) + `]}`, "nested deeper"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseParameters([]byte(tt.in))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ParseParameters = %v, want ErrInvalid with %q", err, tt.want)
			}
		})
	}
}

func TestNDJSONReader(t *testing.T) {
	type line struct {
		no   int
		text string
		err  error
	}
	tests := []struct {
		name    string
		in      string
		maxLine int
		want    []line
	}{
		{"simple", "{\"a\":1}\n{\"b\":2}\n", 100, []line{{1, `{"a":1}`, nil}, {2, `{"b":2}`, nil}}},
		{"no final newline", "{\"a\":1}\n{\"b\":2}", 100, []line{{1, `{"a":1}`, nil}, {2, `{"b":2}`, nil}}},
		{"crlf and blanks", "\r\n{\"a\":1}\r\n  \n\n{\"b\":2}\r\n\r\n", 100, []line{{2, `{"a":1}`, nil}, {5, `{"b":2}`, nil}}},
		{"bom", "\xef\xbb\xbf{\"a\":1}\n", 100, []line{{1, `{"a":1}`, nil}}},
		{"empty", "", 100, nil},
		{"too long then fine", "{\"a\":12345}\n" + strings.Repeat("x", 50) + "\n{\"c\":3}\n", 20,
			[]line{{1, `{"a":12345}`, nil}, {2, "", ErrTooLarge}, {3, `{"c":3}`, nil}}},
		{"exactly max", "0123456789\n01234567890\n", 10, []line{{1, "0123456789", nil}, {2, "", ErrTooLarge}}},
		{"long last line", "{}\n" + strings.Repeat("y", 100), 10, []line{{1, "{}", nil}, {2, "", ErrTooLarge}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// OneByteReader exercises lines split over many reads.
			r := NewNDJSONReader(iotest.OneByteReader(strings.NewReader(tt.in)), tt.maxLine)
			var got []line
			for {
				l, no, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil && !errors.Is(err, ErrTooLarge) {
					t.Fatalf("Next: %v", err)
				}
				var e error
				if err != nil {
					e = ErrTooLarge
					if !strings.Contains(err.Error(), "line "+itoaTest(no)) {
						t.Errorf("error %q does not name line %d", err, no)
					}
				}
				got = append(got, line{no, string(l), e})
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("line %d: got %+v, want %+v", i, got[i], tt.want[i])
				}
			}
			if _, _, err := r.Next(); err != io.EOF {
				t.Errorf("Next after EOF = %v", err)
			}
		})
	}
}

func itoaTest(i int) string { b, _ := json.Marshal(i); return string(b) }

type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n > 0 {
		f.n--
		return copy(p, "{}\n"), nil
	}
	return 0, errors.New("connection reset")
}

func TestNDJSONReaderError(t *testing.T) {
	r := NewNDJSONReader(&failingReader{n: 1}, 0)
	if l, no, err := r.Next(); err != nil || string(l) != "{}" || no != 1 {
		t.Fatalf("first line = %q %d %v", l, no, err)
	}
	if _, _, err := r.Next(); err == nil || err == io.EOF || !strings.Contains(err.Error(), "connection reset") {
		t.Fatalf("read error = %v", err)
	}
}

func TestNDJSONWriterRoundTrip(t *testing.T) {
	files := exampleFiles(t)[:30]
	var buf bytes.Buffer
	w := NewNDJSONWriter(&buf)
	var want [][]byte
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		var c bytes.Buffer
		if err := json.Compact(&c, data); err != nil {
			t.Fatal(err)
		}
		want = append(want, c.Bytes())
	}
	if err := w.Write([]byte(`{"resourceType":"Patient","x":1.50}`)); err != nil {
		t.Fatal(err)
	}
	want = append(want, []byte(`{"resourceType":"Patient","x":1.50}`))
	if err := w.Write([]byte("{\n")); !errors.Is(err, ErrInvalid) {
		t.Errorf("Write(broken) = %v, want ErrInvalid", err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if w.Lines() != int64(len(want)) || w.Bytes() != int64(buf.Len()) {
		t.Errorf("Lines %d Bytes %d, want %d %d", w.Lines(), w.Bytes(), len(want), buf.Len())
	}
	r := NewNDJSONReader(&buf, 1<<20)
	for i := 0; ; i++ {
		l, no, err := r.Next()
		if err == io.EOF {
			if i != len(want) {
				t.Errorf("read %d lines, want %d", i, len(want))
			}
			break
		}
		if err != nil || no != i+1 || !bytes.Equal(l, want[i]) {
			t.Fatalf("line %d: %v %d %.80s", i+1, err, no, l)
		}
	}
}

package bundle

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"fhirbucket/fhir"
)

// okEntry is a valid POST that precedes the bad entry in most cases, so
// the index the error names is 1.
const okEntry = `{"fullUrl":"urn:uuid:00000000-0000-4000-8000-000000000001","resource":{"resourceType":"Patient","active":true},"request":{"method":"POST","url":"Patient"}}`

func TestPlanBundleErrors(t *testing.T) {
	opts := testOptions(t)
	tooMany := opts
	tooMany.MaxEntries = 2
	cases := []struct {
		name string
		data string
		opts Options
		want error
	}{
		{"broken JSON", `{"resourceType":"Bundle","type":"batch",`, opts, ErrInvalid},
		{"not JSON", `hello`, opts, ErrInvalid},
		{"empty", ``, opts, ErrInvalid},
		{"array", `[{"resourceType":"Bundle"}]`, opts, ErrInvalid},
		{"data after the object", `{"resourceType":"Bundle","type":"batch"} {}`, opts, ErrInvalid},
		{"not a Bundle", `{"resourceType":"Patient","type":"batch"}`, opts, ErrInvalid},
		{"no resourceType", `{"type":"batch","entry":[]}`, opts, ErrInvalid},
		{"type missing", `{"resourceType":"Bundle","entry":[]}`, opts, ErrInvalid},
		{"type document", `{"resourceType":"Bundle","type":"document","entry":[]}`, opts, ErrInvalid},
		{"type searchset", `{"resourceType":"Bundle","type":"searchset","entry":[]}`, opts, ErrInvalid},
		{"type batch-response", `{"resourceType":"Bundle","type":"batch-response","entry":[]}`, opts, ErrInvalid},
		{"type not a string", `{"resourceType":"Bundle","type":1}`, opts, ErrInvalid},
		{"type twice", `{"resourceType":"Bundle","type":"batch","type":"transaction","entry":[]}`, opts, ErrInvalid},
		{"entry twice", `{"resourceType":"Bundle","type":"batch","entry":[],"entry":[]}`, opts, ErrInvalid},
		{"resourceType not a string", `{"resourceType":["Bundle"],"type":"batch"}`, opts, ErrInvalid},
		{"entry an object", `{"resourceType":"Bundle","type":"batch","entry":{}}`, opts, ErrInvalid},
		{"entry a string", `{"resourceType":"Bundle","type":"transaction","entry":"x"}`, opts, ErrInvalid},
		{"too many entries", string(bundleOf("transaction", okEntry, okEntry, okEntry)), tooMany, ErrTooMany},
		{"too many entries in a batch", string(bundleOf("batch", `{}`, `{}`, `{}`)), tooMany, ErrTooMany},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := NewPlan([]byte(c.data), c.opts)
			if !errors.Is(err, c.want) {
				t.Fatalf("NewPlan = %v, %v; want an error wrapping %v", p, err, c.want)
			}
			var ee *EntryError
			if errors.As(err, &ee) {
				t.Errorf("a Bundle-level error is an *EntryError: %v", err)
			}
		})
	}
}

func TestPlanOptionsErrors(t *testing.T) {
	for _, o := range []Options{
		{Base: "localhost:8080"}, {Base: "ftp://x/fhir"}, {Base: "http://x/fhir?a=b"},
		{Base: "http://x/fhir#f"}, {Base: "http:///fhir"}, {MaxEntries: -1},
	} {
		_, err := NewPlan(bundleOf("batch"), o)
		if err == nil || errors.Is(err, ErrInvalid) {
			t.Errorf("Options %+v: NewPlan error = %v, want a configuration error (not ErrInvalid)", o, err)
		}
	}
}

func TestPlanEmptyBundle(t *testing.T) {
	for _, data := range []string{
		`{"resourceType":"Bundle","type":"transaction"}`,
		`{"resourceType":"Bundle","type":"batch","entry":[]}`,
		`{"resourceType":"Bundle","type":"batch","entry":null}`,
	} {
		p, err := NewPlan([]byte(data), testOptions(t))
		if err != nil || len(p.Entries) != 0 {
			t.Errorf("%s: NewPlan = %+v, %v; want an empty plan", data, p, err)
		}
	}
}

// entryCases are bad entries. Each is checked in a transaction (the plan
// fails naming the entry) and, unless txOnly, in a batch (only that entry
// fails).
var entryCases = []struct {
	name    string
	entries []string
	index   int
	want    error
	txOnly  bool
	fullURL string
}{
	{name: "entry not an object", entries: []string{okEntry, `"Patient"`}, index: 1, want: ErrInvalid},
	{name: "request missing", entries: []string{okEntry, `{"fullUrl":"urn:uuid:2","resource":{"resourceType":"Patient"}}`}, index: 1, want: ErrInvalid, fullURL: "urn:uuid:2"},
	{name: "request twice", entries: []string{okEntry, `{"request":{"method":"GET","url":"Patient/1"},"request":{"method":"DELETE","url":"Patient/1"}}`}, index: 1, want: ErrInvalid},
	{name: "resource twice", entries: []string{okEntry, `{"resource":{"resourceType":"Patient"},"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}`}, index: 1, want: ErrInvalid},
	{name: "fullUrl not a string", entries: []string{okEntry, `{"fullUrl":1,"request":{"method":"GET","url":"Patient/1"}}`}, index: 1, want: ErrInvalid},
	{name: "request not an object", entries: []string{okEntry, `{"request":"GET Patient/1"}`}, index: 1, want: ErrInvalid},
	{name: "method missing", entries: []string{okEntry, `{"request":{"url":"Patient/1"}}`}, index: 1, want: ErrInvalid},
	{name: "method lower case", entries: []string{okEntry, `{"request":{"method":"get","url":"Patient/1"}}`}, index: 1, want: ErrInvalid},
	{name: "method unknown", entries: []string{okEntry, `{"request":{"method":"FETCH","url":"Patient/1"}}`}, index: 1, want: ErrInvalid},
	{name: "method PATCH", entries: []string{okEntry, `{"fullUrl":"http://localhost:8080/fhir/Patient/1","resource":{"resourceType":"Binary","contentType":"application/json-patch+json"},"request":{"method":"PATCH","url":"Patient/1"}}`}, index: 1, want: ErrNotSupported, fullURL: "http://localhost:8080/fhir/Patient/1"},
	{name: "method not a string", entries: []string{okEntry, `{"request":{"method":1,"url":"Patient/1"}}`}, index: 1, want: ErrInvalid},
	{name: "url missing", entries: []string{okEntry, `{"request":{"method":"GET"}}`}, index: 1, want: ErrInvalid},
	{name: "unknown type", entries: []string{okEntry, `{"request":{"method":"GET","url":"Patients/1"}}`}, index: 1, want: ErrInvalid},
	{name: "unknown type on POST", entries: []string{`{"resource":{"resourceType":"Foo"},"request":{"method":"POST","url":"Foo"}}`}, index: 0, want: ErrInvalid},
	{name: "bad id", entries: []string{okEntry, `{"request":{"method":"GET","url":"Patient/a_b"}}`}, index: 1, want: ErrInvalid},
	{name: "id too long", entries: []string{okEntry, `{"request":{"method":"GET","url":"Patient/` + strings.Repeat("a", 65) + `"}}`}, index: 1, want: ErrInvalid},
	{name: "dot dot", entries: []string{okEntry, `{"request":{"method":"GET","url":"Patient/.."}}`}, index: 1, want: ErrInvalid},
	{name: "dot dot escape", entries: []string{okEntry, `{"request":{"method":"GET","url":"Patient/../Observation/1"}}`}, index: 1, want: ErrInvalid},
	{name: "percent-encoded id", entries: []string{okEntry, `{"request":{"method":"GET","url":"Patient/%2E%2E"}}`}, index: 1, want: ErrInvalid},
	{name: "bad version id", entries: []string{okEntry, `{"request":{"method":"GET","url":"Patient/1/_history/a b"}}`}, index: 1, want: ErrInvalid},
	{name: "extra segment after vread", entries: []string{okEntry, `{"request":{"method":"GET","url":"Patient/1/_history/2/x"}}`}, index: 1, want: ErrInvalid},
	{name: "extra segment after id", entries: []string{okEntry, `{"request":{"method":"GET","url":"Patient/1/foo"}}`}, index: 1, want: ErrInvalid},
	{name: "extra segment after metadata", entries: []string{okEntry, `{"request":{"method":"GET","url":"metadata/x"}}`}, index: 1, want: ErrInvalid},
	{name: "empty segment", entries: []string{okEntry, `{"request":{"method":"GET","url":"Patient//1"}}`}, index: 1, want: ErrInvalid},
	{name: "trailing slash", entries: []string{okEntry, `{"request":{"method":"GET","url":"Patient/1/"}}`}, index: 1, want: ErrInvalid},
	{name: "double leading slash", entries: []string{okEntry, `{"request":{"method":"GET","url":"//Patient/1"}}`}, index: 1, want: ErrInvalid},
	{name: "fragment", entries: []string{okEntry, `{"request":{"method":"GET","url":"Patient/1#x"}}`}, index: 1, want: ErrInvalid},
	{name: "bad query escape", entries: []string{okEntry, `{"request":{"method":"GET","url":"Patient?name=%zz"}}`}, index: 1, want: ErrInvalid},
	{name: "base with GET", entries: []string{okEntry, `{"request":{"method":"GET","url":"/"}}`}, index: 1, want: ErrInvalid},
	{name: "another server's base", entries: []string{okEntry, `{"request":{"method":"GET","url":"http://other.example/fhir/Patient/1"}}`}, index: 1, want: ErrInvalid},
	{name: "base prefix but not the base", entries: []string{okEntry, `{"request":{"method":"GET","url":"http://localhost:8080/fhirx/Patient/1"}}`}, index: 1, want: ErrInvalid},
	{name: "urn as url", entries: []string{okEntry, `{"request":{"method":"DELETE","url":"urn:uuid:00000000-0000-4000-8000-000000000001"}}`}, index: 1, want: ErrInvalid},
	{name: "POST on an id", entries: []string{okEntry, `{"resource":{"resourceType":"Patient","id":"1"},"request":{"method":"POST","url":"Patient/1"}}`}, index: 1, want: ErrInvalid},
	{name: "PUT without id", entries: []string{okEntry, `{"resource":{"resourceType":"Patient"},"request":{"method":"PUT","url":"Patient"}}`}, index: 1, want: ErrInvalid},
	{name: "DELETE without id", entries: []string{okEntry, `{"request":{"method":"DELETE","url":"Patient"}}`}, index: 1, want: ErrInvalid},
	{name: "PUT on history", entries: []string{okEntry, `{"resource":{"resourceType":"Patient","id":"1"},"request":{"method":"PUT","url":"Patient/1/_history/1"}}`}, index: 1, want: ErrInvalid},
	{name: "DELETE on type history", entries: []string{okEntry, `{"request":{"method":"DELETE","url":"Patient/_history"}}`}, index: 1, want: ErrInvalid},
	{name: "POST metadata", entries: []string{okEntry, `{"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"metadata"}}`}, index: 1, want: ErrInvalid},
	{name: "query on POST", entries: []string{okEntry, `{"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient?name=x"}}`}, index: 1, want: ErrInvalid},
	{name: "query on PUT with id", entries: []string{okEntry, `{"resource":{"resourceType":"Patient","id":"1"},"request":{"method":"PUT","url":"Patient/1?name=x"}}`}, index: 1, want: ErrInvalid},
	{name: "ifNoneExist on PUT", entries: []string{okEntry, `{"resource":{"resourceType":"Patient","id":"1"},"request":{"method":"PUT","url":"Patient/1","ifNoneExist":"identifier=a|b"}}`}, index: 1, want: ErrInvalid},
	{name: "ifNoneExist blank", entries: []string{okEntry, `{"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient","ifNoneExist":" ?"}}`}, index: 1, want: ErrInvalid},
	{name: "operation", entries: []string{okEntry, `{"request":{"method":"GET","url":"Patient/1/$everything"}}`}, index: 1, want: ErrNotSupported},
	{name: "system operation", entries: []string{okEntry, `{"request":{"method":"POST","url":"$export"}}`}, index: 1, want: ErrNotSupported},
	{name: "_search", entries: []string{okEntry, `{"request":{"method":"POST","url":"Patient/_search"}}`}, index: 1, want: ErrNotSupported},
	{name: "POST without resource", entries: []string{okEntry, `{"request":{"method":"POST","url":"Patient"}}`}, index: 1, want: ErrInvalid},
	{name: "POST with null resource", entries: []string{okEntry, `{"resource":null,"request":{"method":"POST","url":"Patient"}}`}, index: 1, want: ErrInvalid},
	{name: "PUT without resource", entries: []string{okEntry, `{"request":{"method":"PUT","url":"Patient/1"}}`}, index: 1, want: ErrInvalid},
	{name: "resource not an object", entries: []string{okEntry, `{"resource":[1],"request":{"method":"POST","url":"Patient"}}`}, index: 1, want: ErrInvalid},
	{name: "resource without resourceType", entries: []string{okEntry, `{"resource":{"id":"1"},"request":{"method":"PUT","url":"Patient/1"}}`}, index: 1, want: ErrInvalid},
	{name: "resourceType differs from URL", entries: []string{okEntry, `{"resource":{"resourceType":"Observation"},"request":{"method":"POST","url":"Patient"}}`}, index: 1, want: ErrInvalid},
	{name: "PUT body id differs", entries: []string{okEntry, `{"resource":{"resourceType":"Patient","id":"2"},"request":{"method":"PUT","url":"Patient/1"}}`}, index: 1, want: ErrInvalid},
	{name: "PUT body without id", entries: []string{okEntry, `{"resource":{"resourceType":"Patient"},"request":{"method":"PUT","url":"Patient/1"}}`}, index: 1, want: ErrInvalid},
	{name: "schema validation", entries: []string{okEntry, `{"resource":{"resourceType":"Patient","gender":"robot"},"request":{"method":"POST","url":"Patient"}}`}, index: 1, want: ErrInvalid},
	{name: "duplicate key in resource", entries: []string{okEntry, `{"resource":{"resourceType":"Patient","active":true,"active":false},"request":{"method":"POST","url":"Patient"}}`}, index: 1, want: ErrInvalid},
	{name: "duplicate fullUrl", entries: []string{okEntry, `{"fullUrl":"urn:uuid:00000000-0000-4000-8000-000000000001","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}`}, index: 1, want: ErrInvalid, fullURL: "urn:uuid:00000000-0000-4000-8000-000000000001"},
	{name: "relative fullUrl", entries: []string{okEntry, `{"fullUrl":"Patient/1","resource":{"resourceType":"Patient","id":"1"},"request":{"method":"PUT","url":"Patient/1"}}`}, index: 1, want: ErrInvalid, fullURL: "Patient/1"},
	{name: "version-specific fullUrl", entries: []string{okEntry, `{"fullUrl":"http://localhost:8080/fhir/Patient/1/_history/2","resource":{"resourceType":"Patient","id":"1"},"request":{"method":"PUT","url":"Patient/1"}}`}, index: 1, want: ErrInvalid, fullURL: "http://localhost:8080/fhir/Patient/1/_history/2"},
	{name: "fullUrl on this server names another resource", entries: []string{okEntry, `{"fullUrl":"http://localhost:8080/fhir/Patient/2","resource":{"resourceType":"Patient","id":"1"},"request":{"method":"PUT","url":"Patient/1"}}`}, index: 1, want: ErrInvalid, fullURL: "http://localhost:8080/fhir/Patient/2"},
	{name: "ifModifiedSince not an instant", entries: []string{okEntry, `{"request":{"method":"GET","url":"Patient/1","ifModifiedSince":"yesterday"}}`}, index: 1, want: ErrInvalid},
	{name: "ifModifiedSince on PUT", entries: []string{okEntry, `{"resource":{"resourceType":"Patient","id":"1"},"request":{"method":"PUT","url":"Patient/1","ifModifiedSince":"2024-01-01T00:00:00Z"}}`}, index: 1, want: ErrInvalid},
	{name: "ifMatch on POST", entries: []string{okEntry, `{"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient","ifMatch":"W/\"1\""}}`}, index: 1, want: ErrInvalid},
	{name: "ifNoneMatch on DELETE", entries: []string{okEntry, `{"request":{"method":"DELETE","url":"Patient/1","ifNoneMatch":"W/\"1\""}}`}, index: 1, want: ErrInvalid},
	{name: "first bad entry is named", entries: []string{okEntry, `{"request":{"method":"GET","url":"Foo"}}`, `{"request":{"method":"GET","url":"Bar"}}`}, index: 1, want: ErrInvalid},
	{name: "a bad resource before a bad request is named first", entries: []string{`{"resource":{"resourceType":"Patient","gender":"robot"},"request":{"method":"POST","url":"Patient"}}`, `{"request":{"method":"GET","url":"Foo"}}`}, index: 0, want: ErrInvalid},
	{name: "same resource twice", entries: []string{okEntry, `{"resource":{"resourceType":"Patient","id":"1"},"request":{"method":"PUT","url":"Patient/1"}}`, `{"request":{"method":"DELETE","url":"Patient/1"}}`}, index: 2, want: ErrInvalid, txOnly: true},
	{name: "same resource PUT twice", entries: []string{`{"resource":{"resourceType":"Patient","id":"1"},"request":{"method":"PUT","url":"Patient/1"}}`, `{"resource":{"resourceType":"Patient","id":"1","active":true},"request":{"method":"PUT","url":"Patient/1"}}`}, index: 1, want: ErrInvalid, txOnly: true},
}

func TestPlanEntryErrorsTransaction(t *testing.T) {
	opts := testOptions(t)
	for _, c := range entryCases {
		t.Run(c.name, func(t *testing.T) {
			p, err := NewPlan(bundleOf("transaction", c.entries...), opts)
			if err == nil {
				t.Fatalf("NewPlan succeeded: %+v", p.Entries)
			}
			if p != nil {
				t.Errorf("NewPlan returned a plan with its error")
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v does not wrap %v", err, c.want)
			}
			if other := otherSentinel(c.want); errors.Is(err, other) {
				t.Errorf("error %v also wraps %v", err, other)
			}
			t.Log(err)
			ee := entryError(t, err)
			if ee.Index != c.index || ee.FullURL != c.fullURL {
				t.Errorf("EntryError names entry %d (fullUrl %q), want %d (%q): %v", ee.Index, ee.FullURL, c.index, c.fullURL, err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("Bundle.entry[%d]", c.index)) {
				t.Errorf("error text %q does not name the entry", err)
			}
		})
	}
}

func TestPlanEntryErrorsBatch(t *testing.T) {
	opts := testOptions(t)
	for _, c := range entryCases {
		if c.txOnly {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			p, err := NewPlan(bundleOf("batch", c.entries...), opts)
			if err != nil {
				t.Fatalf("NewPlan: %v", err)
			}
			if p.Transaction || p.ResponseType() != fhir.BundleBatchResponse {
				t.Errorf("Transaction = %v, ResponseType = %q", p.Transaction, p.ResponseType())
			}
			for i, e := range p.Entries {
				if i != c.index {
					if e.Err != nil && c.name != "first bad entry is named" && c.name != "a bad resource before a bad request is named first" {
						t.Errorf("entry %d: Err = %v, want nil", i, e.Err)
					}
					continue
				}
				if !errors.Is(e.Err, c.want) {
					t.Fatalf("entry %d: Err = %v, want %v", i, e.Err, c.want)
				}
				ee := entryError(t, e.Err)
				if ee.Index != c.index || ee.FullURL != c.fullURL {
					t.Errorf("EntryError names entry %d (%q), want %d (%q)", ee.Index, ee.FullURL, c.index, c.fullURL)
				}
				for _, ph := range p.Phases() {
					if slices.Contains(ph, e) {
						t.Errorf("failed entry %d is in a phase", i)
					}
				}
			}
		})
	}
}

func otherSentinel(s error) error {
	if s == ErrInvalid {
		return ErrNotSupported
	}
	return ErrInvalid
}

// TestPlanValidationErrorKept: a schema failure keeps the
// *fhir.ValidationError for the OperationOutcome.
func TestPlanValidationErrorKept(t *testing.T) {
	_, err := NewPlan(bundleOf("transaction", okEntry,
		`{"resource":{"resourceType":"Patient","gender":"robot","foo":1},"request":{"method":"POST","url":"Patient"}}`), testOptions(t))
	var verr *fhir.ValidationError
	if !errors.As(err, &verr) || !errors.Is(err, ErrInvalid) || !errors.Is(err, fhir.ErrInvalid) {
		t.Fatalf("error %v: want ErrInvalid wrapping a *fhir.ValidationError", err)
	}
	if len(verr.Issues) < 2 || !strings.HasPrefix(verr.Issues[0].Path, "Patient.") {
		t.Errorf("issues = %+v, want both problems with paths under Patient", verr.Issues)
	}
	if o := fhir.NewValidationOutcome(verr); len(o.Issue) != len(verr.Issues) {
		t.Errorf("outcome has %d issues, want %d", len(o.Issue), len(verr.Issues))
	}
}

func TestPlanURLForms(t *testing.T) {
	cases := []struct {
		method, url string
		want        Interaction
		typ, id     string
		version     string
		query       string // a query key that must be present
	}{
		{"GET", "Patient/1", Read, "Patient", "1", "", ""},
		{"HEAD", "Patient/1", Read, "Patient", "1", "", ""},
		{"GET", "/Patient/example", Read, "Patient", "example", "", ""},
		{"GET", "Patient/1?_summary=true", Read, "Patient", "1", "", "_summary"},
		{"GET", "Patient/1/_history/3", VRead, "Patient", "1", "3", ""},
		{"GET", "Patient/1/_history", HistoryInstance, "Patient", "1", "", ""},
		{"GET", "Patient/1/_history?_count=2", HistoryInstance, "Patient", "1", "", "_count"},
		{"GET", "Patient/_history", HistoryType, "Patient", "", "", ""},
		{"GET", "_history?_since=2024-01-01", HistorySystem, "", "", "", "_since"},
		{"GET", "metadata", Capabilities, "", "", "", ""},
		{"GET", "Patient", SearchType, "Patient", "", "", ""},
		{"GET", "Observation?patient=example&code=http://loinc.org|55284-4", SearchType, "Observation", "", "", "code"},
		{"GET", "?_type=Patient", SearchSystem, "", "", "", "_type"},
		{"GET", "http://localhost:8080/fhir/Patient/1", Read, "Patient", "1", "", ""},
		{"GET", "HTTP://LocalHost:8080/fhir/Patient/1", Read, "Patient", "1", "", ""},
		{"GET", "http://localhost:8080/fhir/metadata", Capabilities, "", "", "", ""},
		{"DELETE", "Patient/1", Delete, "Patient", "1", "", ""},
		{"DELETE", "http://localhost:8080/fhir/Patient/1", Delete, "Patient", "1", "", ""},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.url, func(t *testing.T) {
			p, err := NewPlan(bundleOf("batch", `{"request":{"method":"`+c.method+`","url":"`+c.url+`"}}`), testOptions(t))
			if err != nil {
				t.Fatal(err)
			}
			e := p.Entries[0]
			if e.Err != nil {
				t.Fatal(e.Err)
			}
			if e.Interaction != c.want || e.Type != c.typ || e.ID != c.id || e.VersionID != c.version || e.Method != c.method {
				t.Errorf("got %s %s %q/%q/%q, want %s %s %q/%q/%q", e.Method, e.Interaction, e.Type, e.ID, e.VersionID,
					c.method, c.want, c.typ, c.id, c.version)
			}
			if c.query != "" && !e.Query.Has(c.query) {
				t.Errorf("Query %v has no %q", e.Query, c.query)
			}
		})
	}
}

func TestPlanAbsoluteURLWithoutBase(t *testing.T) {
	opts := testOptions(t)
	opts.Base = ""
	p, err := NewPlan(bundleOf("batch",
		`{"request":{"method":"GET","url":"http://localhost:8080/fhir/Patient/1"}}`,
		`{"request":{"method":"GET","url":"Patient/1"}}`), opts)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(p.Entries[0].Err, ErrInvalid) || p.Entries[1].Err != nil {
		t.Errorf("errors = %v, %v; want ErrInvalid, nil", p.Entries[0].Err, p.Entries[1].Err)
	}
}

func TestPlanHeaders(t *testing.T) {
	p, err := NewPlan(bundleOf("transaction",
		`{"request":{"method":"GET","url":"Patient/1","ifNoneMatch":"W/\"3\"","ifModifiedSince":"2024-05-06T07:08:09.123+02:00"}}`,
		`{"resource":{"resourceType":"Patient","id":"2"},"request":{"method":"PUT","url":"Patient/2","ifMatch":"W/\"4\""}}`,
		`{"request":{"method":"DELETE","url":"Patient/3","ifMatch":"W/\"5\""}}`), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	e := p.Entries
	if e[0].IfNoneMatch != `W/"3"` || e[0].IfModifiedSince.UTC().Format("2006-01-02T15:04:05.000") != "2024-05-06T05:08:09.123" {
		t.Errorf("GET: ifNoneMatch %q, ifModifiedSince %v", e[0].IfNoneMatch, e[0].IfModifiedSince)
	}
	if e[1].IfMatch != `W/"4"` || e[2].IfMatch != `W/"5"` {
		t.Errorf("ifMatch: %q, %q", e[1].IfMatch, e[2].IfMatch)
	}
}

func TestPlanPhases(t *testing.T) {
	p, err := NewPlan(bundleOf("transaction",
		`{"request":{"method":"GET","url":"Patient/1"}}`,
		`{"resource":{"resourceType":"Patient","id":"2"},"request":{"method":"PUT","url":"Patient/2"}}`,
		`{"resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}`,
		`{"request":{"method":"DELETE","url":"Patient/3"}}`,
		`{"request":{"method":"HEAD","url":"Patient/4"}}`,
		`{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"}},"request":{"method":"POST","url":"Observation"}}`,
		`{"request":{"method":"DELETE","url":"Patient/5"}}`,
		`{"request":{"method":"GET","url":"Patient/2"}}`,
	), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	want := [][]int{PhaseDelete: {3, 6}, PhaseCreate: {2, 5}, PhaseUpdate: {1}, PhaseRead: {0, 4, 7}}
	phases := p.Phases()
	if len(phases) != len(want) {
		t.Fatalf("%d phases, want %d", len(phases), len(want))
	}
	for ph, entries := range phases {
		var got []int
		for _, e := range entries {
			got = append(got, e.Index)
			if Phase(ph) != e.Phase() {
				t.Errorf("entry %d in phase %d, its Phase() is %d", e.Index, ph, e.Phase())
			}
		}
		if !slices.Equal(got, want[ph]) {
			t.Errorf("phase %d: entries %v, want %v", ph, got, want[ph])
		}
	}
	for i, e := range p.Entries {
		if e.Index != i {
			t.Errorf("Entries[%d].Index = %d", i, e.Index)
		}
	}
	if !p.Transaction || p.ResponseType() != fhir.BundleTransactionResponse {
		t.Errorf("Transaction = %v, ResponseType = %q", p.Transaction, p.ResponseType())
	}
}

// TestPlanHistoryBundle: a posted history Bundle is a batch, may repeat a
// fullUrl (one per version), and may change a resource more than once.
func TestPlanHistoryBundle(t *testing.T) {
	const u = "http://old.example/fhir/Patient/7"
	p, err := NewPlan(bundleOf("history",
		`{"fullUrl":"`+u+`","request":{"method":"DELETE","url":"Patient/7"},"response":{"status":"204"}}`,
		`{"fullUrl":"`+u+`","resource":{"resourceType":"Patient","id":"7","meta":{"versionId":"2"},"active":false},"request":{"method":"PUT","url":"Patient/7"},"response":{"status":"200"}}`,
		`{"fullUrl":"`+u+`","resource":{"resourceType":"Patient","id":"7","meta":{"versionId":"1"}},"request":{"method":"POST","url":"Patient"},"response":{"status":"201"}}`,
	), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if p.Transaction || p.Type != "history" || p.ResponseType() != fhir.BundleBatchResponse {
		t.Errorf("Type %q Transaction %v ResponseType %q", p.Type, p.Transaction, p.ResponseType())
	}
	for _, e := range p.Entries {
		if e.Err != nil {
			t.Errorf("entry %d: %v", e.Index, e.Err)
		}
	}
	if id := p.Entries[2].ID; !isServerID(id) {
		t.Errorf("the POST got id %q", id)
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := newID()
		if !isServerID(id) || !fhir.ValidID(id) || seen[id] {
			t.Fatalf("newID() = %q (seen before: %v)", id, seen[id])
		}
		seen[id] = true
	}
}

// TestPlanConditional: conditional entries pass the plan, carrying their
// criteria and conditional references for the caller to resolve; the
// conditional PUT gets a placeholder id that references to its fullUrl
// name.
func TestPlanConditional(t *testing.T) {
	opts := testOptions(t)
	for _, typ := range []string{"batch", "transaction"} {
		p, err := NewPlan(bundleOf(typ,
			`{"fullUrl":"urn:uuid:00000000-0000-4000-8000-000000000003","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient","ifNoneExist":"?identifier=a|b"}}`,
			`{"fullUrl":"urn:uuid:00000000-0000-4000-8000-000000000004","resource":{"resourceType":"Patient"},"request":{"method":"PUT","url":"Patient?identifier=a|c"}}`,
			`{"request":{"method":"DELETE","url":"Patient?identifier=a|d"}}`,
			`{"request":{"method":"DELETE","url":"Patient?identifier=a|e"}}`,
			`{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"performer":[{"reference":"Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999"},{"reference":"http://localhost:8080/fhir/Practitioner?identifier=n|1"},{"reference":"Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999"}]},"request":{"method":"POST","url":"Observation"}}`,
		), opts)
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		for _, e := range p.Entries {
			if e.Err != nil {
				t.Fatalf("%s: entry %d: %v", typ, e.Index, e.Err)
			}
		}
		if e := p.Entries[0]; e.IfNoneExist != "identifier=a|b" || e.Interaction != Create {
			t.Errorf("%s: ifNoneExist entry: %q %s", typ, e.IfNoneExist, e.Interaction)
		}
		if e := p.Entries[1]; e.Interaction != ConditionalUpdate || e.Query.Get("identifier") != "a|c" || len(e.ID) != 32 {
			t.Errorf("%s: conditional PUT: %s %v %q", typ, e.Interaction, e.Query, e.ID)
		}
		if e := p.Entries[2]; e.Interaction != ConditionalDelete || e.ID != "" {
			t.Errorf("%s: conditional DELETE: %s %q", typ, e.Interaction, e.ID)
		}
		want := []CondRef{{Ref: "Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|9999", Type: "Practitioner", Query: "identifier=http://hl7.org/fhir/sid/us-npi|9999"},
			{Ref: "http://localhost:8080/fhir/Practitioner?identifier=n|1", Type: "Practitioner", Query: "identifier=n|1"}}
		if got := p.Entries[4].CondRefs; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: CondRefs %v, want %v", typ, got, want)
		}
		if typ == "transaction" {
			// Unresolved, Commit refuses them.
			if _, err := newChange(p.Entries[1]); !errors.Is(err, ErrNotSupported) {
				t.Errorf("newChange of an unresolved conditional PUT: %v", err)
			}
			if _, err := newChange(p.Entries[0]); !errors.Is(err, ErrNotSupported) {
				t.Errorf("newChange of an unresolved ifNoneExist: %v", err)
			}
		}
	}
}

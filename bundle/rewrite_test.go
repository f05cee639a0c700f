package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"fhirbucket/fhir"
)

// TestPlanKeepsNumbers: decimals, exponents and escapes come out byte for
// byte, and white space goes.
func TestPlanKeepsNumbers(t *testing.T) {
	const in = `{ "resourceType" : "Observation",
	  "status": "final", "code": {"text": "x \u00e9 \"q\" <b>&amp;"},
	  "subject": {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"},
	  "valueQuantity": {"value": 1.50, "unit": "mg"},
	  "referenceRange": [ {"low": {"value": 0.10}, "high": {"value": 1E+2}} ],
	  "component": [ {"code": {"text": "y"}, "valueInteger": -0} ,
	                 {"code": {"text": "z"}, "valueQuantity": {"value": 12345678901234567890.000000000000000001}} ] }`
	p, err := NewPlan(bundleOf("transaction",
		`{"fullUrl":"urn:uuid:11111111-1111-4111-8111-111111111111","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}}`,
		`{"resource":`+in+`,"request":{"method":"POST","url":"Observation"}}`), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"resourceType":"Observation","id":"` + p.Entries[1].ID + `","status":"final","code":{"text":"x \u00e9 \"q\" <b>&amp;"},` +
		`"subject":{"reference":"Patient/` + p.Entries[0].ID + `"},"valueQuantity":{"value":1.50,"unit":"mg"},` +
		`"referenceRange":[{"low":{"value":0.10},"high":{"value":1E+2}}],` +
		`"component":[{"code":{"text":"y"},"valueInteger":-0},{"code":{"text":"z"},"valueQuantity":{"value":12345678901234567890.000000000000000001}}]}`
	if got := string(p.Entries[1].Resource); got != want {
		t.Errorf("resource\n got %s\nwant %s", got, want)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, p.Entries[1].Resource); err != nil || buf.String() != want {
		t.Errorf("output is not compact JSON: %v", err)
	}
}

// TestPlanRewritesEverywhere: references at any depth, uri and url
// values, and narrative links, for each kind of fullUrl.
func TestPlanRewritesEverywhere(t *testing.T) {
	const (
		pat   = "urn:uuid:aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
		oid   = "urn:oid:1.2.3.4"
		prac  = "urn:uuid:bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
		org   = testBase + "/Organization/tmp"
		dev   = "http://other.example/fhir/Device/9"
		putAb = testBase + "/Location/loc1" // a PUT's absolute fullUrl: an address, kept
		none  = "urn:uuid:cccccccc-cccc-4ccc-8ccc-cccccccccccc"
	)
	obs := func(patRef, oidRef, pracRef, orgRef, devRef string) string {
		return `{"resourceType":"Observation",` +
			`"text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"` + patRef + `\">patient</a> <img src='` + pracRef + `'/> <a href=\"` + none + `\">x</a> src=\"` + pat + `\"</div>"},` +
			`"contained":[{"resourceType":"Provenance","id":"prov","target":[{"reference":"` + patRef + `"}],"recorded":"2024-01-01T00:00:00Z","agent":[{"who":{"reference":"` + orgRef + `"}}]}],` +
			`"extension":[{"url":"http://example.org/ext","valueUri":"` + patRef + `"},{"url":"http://example.org/ext2","valueUrl":"` + oidRef + `"},` +
			`{"url":"http://example.org/ext3","valueUuid":"` + pat + `"},{"url":"http://example.org/ext4","extension":[{"url":"deep","valueReference":{"reference":"` + pracRef + `"}}]}],` +
			`"status":"final","code":{"text":"x"},"subject":{"reference":"` + patRef + `","display":"` + pat + ` (display)"},` +
			`"focus":[{"reference":"Patient/123"},{"reference":"#prov"},{"reference":"` + none + `"},{"reference":"` + putAb + `"}],` +
			`"performer":[{"reference":"` + pracRef + `"},{"reference":"` + orgRef + `"}],"device":{"reference":"` + devRef + `"},` +
			`"derivedFrom":[{"reference":"` + oidRef + `"}]}`
	}
	entries := []string{
		`{"fullUrl":"` + pat + `","resource":{"resourceType":"Patient","id":"client-chosen"},"request":{"method":"POST","url":"Patient"}}`,
		`{"fullUrl":"` + oid + `","resource":{"resourceType":"Observation","status":"final","code":{"text":"y"}},"request":{"method":"POST","url":"Observation"}}`,
		`{"fullUrl":"` + prac + `","resource":{"resourceType":"Practitioner","id":"p1"},"request":{"method":"PUT","url":"Practitioner/p1"}}`,
		`{"fullUrl":"` + org + `","resource":{"resourceType":"Organization"},"request":{"method":"POST","url":"Organization"}}`,
		`{"fullUrl":"` + dev + `","resource":{"resourceType":"Device"},"request":{"method":"POST","url":"Device"}}`,
		`{"fullUrl":"` + putAb + `","resource":{"resourceType":"Location","id":"loc1"},"request":{"method":"PUT","url":"Location/loc1"}}`,
		`{"resource":` + obs(pat, oid, prac, org, dev) + `,"request":{"method":"POST","url":"Observation"}}`,
	}
	p, err := NewPlan(bundleOf("transaction", entries...), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	e := p.Entries
	if got, _, _ := fhir.Peek(e[0].Resource); got != "Patient" || !strings.Contains(string(e[0].Resource), `"id":"`+e[0].ID+`"`) || strings.Contains(string(e[0].Resource), "client-chosen") {
		t.Errorf("the POST's id is not the server's: %s", e[0].Resource)
	}
	want := obs("Patient/"+e[0].ID, "Observation/"+e[1].ID, "Practitioner/p1", "Organization/"+e[3].ID, "Device/"+e[4].ID)
	// The planned resource also gets its own id, right after resourceType.
	want = strings.Replace(want, `"resourceType":"Observation",`, `"resourceType":"Observation","id":"`+e[6].ID+`",`, 1)
	if got := string(e[6].Resource); got != want {
		t.Errorf("resource\n got %s\nwant %s", got, want)
	}
}

// TestPlanBatchDoesNotLink: batch entries must not depend on each other.
func TestPlanBatchDoesNotLink(t *testing.T) {
	const a, b = "urn:uuid:aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "urn:uuid:bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"
	p, err := NewPlan(bundleOf("batch",
		`{"fullUrl":"`+a+`","resource":{"resourceType":"Patient","extension":[{"url":"http://example.org/self","valueUri":"`+a+`"}]},"request":{"method":"POST","url":"Patient"}}`,
		`{"fullUrl":"`+b+`","resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"`+a+`"}},"request":{"method":"POST","url":"Observation"}}`,
		`{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:cccccccc-cccc-4ccc-8ccc-cccccccccccc"}},"request":{"method":"POST","url":"Observation"}}`,
	), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	e := p.Entries
	if e[0].Err != nil || !strings.Contains(string(e[0].Resource), `"valueUri":"Patient/`+e[0].ID+`"`) {
		t.Errorf("entry 0 (a self reference): Err %v, resource %s", e[0].Err, e[0].Resource)
	}
	if !errors.Is(e[1].Err, ErrInvalid) || entryError(t, e[1].Err).Index != 1 {
		t.Errorf("entry 1 (refers to entry 0): Err = %v, want ErrInvalid", e[1].Err)
	}
	if e[2].Err != nil || !strings.Contains(string(e[2].Resource), "urn:uuid:cccccccc") {
		t.Errorf("entry 2 (refers to no entry): Err %v, resource %s", e[2].Err, e[2].Resource)
	}
	if got := p.Phases()[PhaseCreate]; len(got) != 2 || got[0] != e[0] || got[1] != e[2] {
		t.Errorf("create phase = %v", got)
	}
}

func TestPlanPutURNFullURL(t *testing.T) {
	p, err := NewPlan(bundleOf("transaction",
		`{"fullUrl":"urn:uuid:aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa","resource":{"resourceType":"Patient","id":"p1"},"request":{"method":"PUT","url":"Patient/p1"}}`,
		`{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"}},"request":{"method":"POST","url":"Observation"}}`,
	), testOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(p.Entries[1].Resource), `"reference":"Patient/p1"`) {
		t.Errorf("resource %s", p.Entries[1].Resource)
	}
	if string(p.Entries[0].Resource) != `{"resourceType":"Patient","id":"p1"}` {
		t.Errorf("the PUT's resource changed: %s", p.Entries[0].Resource)
	}
}

// TestPlanIDInsertion: a POST's id goes where SetMeta would put it.
func TestPlanIDInsertion(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"resourceType":"Patient"}`, `{"resourceType":"Patient","id":"%s"}`},
		{`{"resourceType":"Patient","active":true}`, `{"resourceType":"Patient","id":"%s","active":true}`},
		{`{"active":true,"resourceType":"Patient"}`, `{"active":true,"resourceType":"Patient","id":"%s"}`},
		{`{"resourceType":"Patient","id":"x","active":true}`, `{"resourceType":"Patient","id":"%s","active":true}`},
		{`{"id":"x","resourceType":"Patient"}`, `{"id":"%s","resourceType":"Patient"}`},
		{`{"resourceType":"Patient","contained":[{"resourceType":"Patient","id":"c"}]}`, `{"resourceType":"Patient","id":"%s","contained":[{"resourceType":"Patient","id":"c"}]}`},
	} {
		p, err := NewPlan(bundleOf("transaction", `{"resource":`+c.in+`,"request":{"method":"POST","url":"Patient"}}`), testOptions(t))
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if got, want := string(p.Entries[0].Resource), fmt.Sprintf(c.want, p.Entries[0].ID); got != want {
			t.Errorf("%s: got %s, want %s", c.in, got, want)
		}
	}
}

func TestRewriteLinks(t *testing.T) {
	sub := &entrySub{p: &planner{transaction: true, refs: map[string]string{"urn:uuid:1": "Patient/x", "http://a/b?c=1&d=2": "Device/y"}}, e: &Entry{}}
	for _, c := range []struct{ in, want string }{
		{`<a href="urn:uuid:1">`, `<a href="Patient/x">`},
		{`<a href = 'urn:uuid:1'>`, `<a href = 'Patient/x'>`},
		{`<img src="urn:uuid:1"/><a href="urn:uuid:1"/>`, `<img src="Patient/x"/><a href="Patient/x"/>`},
		{`<a href="http://a/b?c=1&amp;d=2">`, `<a href="Device/y">`},
		{`<a xhref="urn:uuid:1">`, `<a xhref="urn:uuid:1">`},
		{`href="urn:uuid:1"`, `href="urn:uuid:1"`}, // not an attribute
		{`<p>x = "urn:uuid:1"</p>`, `<p>x = "urn:uuid:1"</p>`},
		{`<a href="urn:uuid:2">`, `<a href="urn:uuid:2">`},
		{`<a href="urn:uuid:1`, `<a href="urn:uuid:1`},
		{`<!-- <a href="urn:uuid:1"> --><a title="a>b" href="urn:uuid:1">`, `<!-- <a href="urn:uuid:1"> --><a title="a>b" href="Patient/x">`},
		{`</a href="urn:uuid:1"><p>src="urn:uuid:1"</p>`, `</a href="urn:uuid:1"><p>src="urn:uuid:1"</p>`},
		{`<a checked href="urn:uuid:1">`, `<a checked href="Patient/x">`},
		{`<a href=urn:uuid:1>`, `<a href=urn:uuid:1>`},
	} {
		got, _, err := rewriteLinks(c.in, sub)
		if err != nil || got != c.want {
			t.Errorf("rewriteLinks(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"b\s`, "<&>", "ctl\x00\x1f\n\r\t", "é✓"} {
		var back string
		enc := appendString(nil, s)
		if err := json.Unmarshal(enc, &back); err != nil || back != s {
			t.Errorf("appendString(%q) = %s: round trip %q, %v", s, enc, back, err)
		}
	}
}

// expectRewritten returns v with every string equal to a key of refs
// replaced, as the planner should have done.
func expectRewritten(v any, refs map[string]string) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, c := range v {
			out[k] = expectRewritten(c, refs)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, c := range v {
			out[i] = expectRewritten(c, refs)
		}
		return out
	case string:
		if r, ok := refs[v]; ok {
			return r
		}
	}
	return v
}

func countStrings(v any, match func(string) bool) int {
	switch v := v.(type) {
	case map[string]any:
		n := 0
		for _, c := range v {
			n += countStrings(c, match)
		}
		return n
	case []any:
		n := 0
		for _, c := range v {
			n += countStrings(c, match)
		}
		return n
	case string:
		if match(v) {
			return 1
		}
	}
	return 0
}

// TestPlanSynthea: the five Synthea records plan as they are: every POST
// gets an id, every reference to an entry now names that entry's new
// Type/id, nothing else changes, and no urn:uuid: is left.
func TestPlanSynthea(t *testing.T) {
	opts := testOptions(t)
	for _, f := range syntheaFiles(t) {
		t.Run(strings.TrimSuffix(f[strings.LastIndexByte(f, '/')+1:], ".json.gz"), func(t *testing.T) {
			data := readGzip(t, f)
			p, err := NewPlan(data, opts)
			if err != nil {
				t.Fatal(err)
			}
			var src struct {
				Entry []struct {
					FullURL  string          `json:"fullUrl"`
					Resource json.RawMessage `json:"resource"`
				} `json:"entry"`
			}
			if err := json.Unmarshal(data, &src); err != nil {
				t.Fatal(err)
			}
			if len(p.Entries) != len(src.Entry) || !p.Transaction {
				t.Fatalf("%d entries planned, the bundle has %d", len(p.Entries), len(src.Entry))
			}
			refs := map[string]string{}
			ids := map[string]bool{}
			wantTypes, gotTypes := map[string]int{}, map[string]int{}
			for i, e := range p.Entries {
				if e.Err != nil || e.Method != "POST" || e.Interaction != Create {
					t.Fatalf("entry %d: %s %s, Err %v", i, e.Method, e.Interaction, e.Err)
				}
				if !isServerID(e.ID) || ids[e.ID] {
					t.Fatalf("entry %d: id %q is not a new server id", i, e.ID)
				}
				ids[e.ID] = true
				refs[src.Entry[i].FullURL] = e.Type + "/" + e.ID
				rt, _, _ := fhir.Peek(src.Entry[i].Resource)
				wantTypes[rt]++
				gotType, gotID, err := fhir.Peek(e.Resource)
				if err != nil || gotType != e.Type || gotID != e.ID {
					t.Fatalf("entry %d: planned resource is %q/%q (%v), want %s", i, gotType, gotID, err, e.Reference())
				}
				gotTypes[gotType]++
			}
			if !reflect.DeepEqual(gotTypes, wantTypes) {
				t.Errorf("types planned %v, in the bundle %v", gotTypes, wantTypes)
			}
			if got := p.Phases()[PhaseCreate]; len(got) != len(p.Entries) {
				t.Errorf("create phase has %d entries, want %d", len(got), len(p.Entries))
			}
			var rewritten, urnRefs int
			for i, e := range p.Entries {
				if bytes.Contains(e.Resource, []byte("urn:uuid:")) {
					t.Errorf("entry %d still holds a urn:uuid: %s", i, e.Resource)
				}
				orig := decode(t, src.Entry[i].Resource).(map[string]any)
				urnRefs += countStrings(orig, func(s string) bool { _, ok := refs[s]; return ok })
				want := expectRewritten(orig, refs).(map[string]any)
				want["id"] = e.ID
				got := decode(t, e.Resource)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("entry %d: planned resource differs from the expected rewrite\n got %s", i, e.Resource)
				}
				rewritten += countStrings(got, func(s string) bool {
					typ, id, ok := strings.Cut(s, "/")
					return ok && ids[id] && fhir.IsResourceType(typ)
				})
			}
			if rewritten != urnRefs || urnRefs == 0 {
				t.Errorf("%d strings name a new id, %d named a fullUrl", rewritten, urnRefs)
			}
			t.Logf("%d entries, %d references rewritten", len(p.Entries), rewritten)
		})
	}
}

// TestPlanOfficialExamples: the R4 request examples plan with the
// expected outcome per entry.
func TestPlanOfficialExamples(t *testing.T) {
	opts := testOptions(t)
	type want struct {
		interaction Interaction
		typ, id     string
		query       map[string]string
	}
	batches := map[string][]want{
		"bundle-request-medsallergies.json": {
			{Read, "Patient", "example", nil},
			{SearchType, "MedicationStatement", "", map[string]string{"patient": "example", "_list": "$current-medications"}},
			{SearchType, "AllergyIntolerance", "", map[string]string{"patient": "example", "_list": "$current-allergies"}},
			{SearchType, "Condition", "", map[string]string{"patient": "example", "_list": "$current-problems"}},
			{SearchType, "MedicationStatement", "", map[string]string{"patient": "example", "notgiven:not": "true"}},
		},
		"bundle-request-simplesummary.json": {
			{Read, "Patient", "example", nil},
			{SearchType, "Condition", "", map[string]string{"patient": "example"}},
			{SearchType, "MedicationStatement", "", map[string]string{"patient": "example"}},
			{SearchType, "Observation", "", map[string]string{"patient": "example", "code": "http://loinc.org|55284-4", "date": "ge2015-01-01"}},
		},
	}
	for name, wants := range batches {
		t.Run(name, func(t *testing.T) {
			p, err := NewPlan(readExample(t, name), opts)
			if err != nil {
				t.Fatal(err)
			}
			if p.Type != "batch" || len(p.Entries) != len(wants) {
				t.Fatalf("type %q, %d entries; want batch, %d", p.Type, len(p.Entries), len(wants))
			}
			for i, w := range wants {
				e := p.Entries[i]
				if e.Err != nil || e.Method != "GET" || e.Interaction != w.interaction || e.Type != w.typ || e.ID != w.id {
					t.Errorf("entry %d: %s %s %s/%s (Err %v), want GET %s %s/%s", i, e.Method, e.Interaction, e.Type, e.ID, e.Err, w.interaction, w.typ, w.id)
				}
				for k, v := range w.query {
					if got := e.Query.Get(k); got != v {
						t.Errorf("entry %d: query %s = %q, want %q", i, k, got, v)
					}
				}
			}
			if got := p.Phases()[PhaseRead]; len(got) != len(wants) {
				t.Errorf("read phase has %d entries", len(got))
			}
		})
	}
	t.Run("diagnosticreport-hla-genetics-results-example.json", func(t *testing.T) {
		// A transaction of 22 POSTs linked by urn:uuid.
		p, err := NewPlan(readExample(t, "diagnosticreport-hla-genetics-results-example.json"), opts)
		if err != nil {
			t.Fatal(err)
		}
		if !p.Transaction || len(p.Entries) != 22 {
			t.Fatalf("Transaction %v, %d entries", p.Transaction, len(p.Entries))
		}
		for _, e := range p.Entries {
			if !isServerID(e.ID) || bytes.Contains(e.Resource, []byte("urn:uuid:")) {
				t.Errorf("entry %d: id %q, resource %s", e.Index, e.ID, e.Resource)
			}
		}
	})
	for _, name := range []string{"bundle-response.json", "bundle-response-medsallergies.json", "bundle-response-simplesummary.json", "bundle-example.json"} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewPlan(readExample(t, name), opts); !errors.Is(err, ErrInvalid) {
				t.Errorf("NewPlan = %v, want ErrInvalid (not a batch, transaction or history)", err)
			}
		})
	}
}

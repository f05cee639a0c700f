package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"fhirbucket/fhir"
)

// FuzzPlan: NewPlan never panics on any input, fails only with its
// sentinels, and every plan it returns is well formed: known types, valid
// ids, server ids on POSTs, compact resources whose type and id match the
// entry, and phases that hold each usable entry once.
func FuzzPlan(f *testing.F) {
	for _, name := range []string{
		"bundle-request-medsallergies.json", "bundle-request-simplesummary.json",
		"bundle-response.json", "bundle-example.json",
		"diagnosticreport-hla-genetics-results-example.json",
	} {
		f.Add(readExample(f, name))
	}
	// The Synthea records are 0.4–0.9 MB: too big for the fuzzing engine
	// to mutate and minimise at a useful rate (TestPlanSynthea plans them
	// whole). Their first entries keep their shape and links.
	for _, path := range syntheaFiles(f) {
		f.Add(syntheaSlice(f, readGzip(f, path), 6))
	}
	for _, c := range entryCases {
		f.Add(bundleOf("transaction", c.entries...))
		f.Add(bundleOf("batch", c.entries...))
	}
	f.Add(bundleOf("history", okEntry, `{"fullUrl":"urn:uuid:1","request":{"method":"DELETE","url":"Patient/1"}}`))
	f.Add(bundleOf("transaction",
		`{"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"urn:uuid:1\">me</a></div>"}},"request":{"method":"POST","url":"Patient"}}`,
		`{"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:1"},"valueQuantity":{"value":1.50}},"request":{"method":"POST","url":"Observation"}}`))
	opts := Options{Base: testBase, Validator: validator(f), MaxEntries: 300}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := NewPlan(data, opts)
		if err != nil {
			if p != nil {
				t.Fatalf("NewPlan returned a plan and error %v", err)
			}
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrNotSupported) && !errors.Is(err, ErrTooMany) && !errors.Is(err, fhir.ErrTooLarge) {
				t.Fatalf("error %v wraps none of the sentinels", err)
			}
			return
		}
		inPhase := map[*Entry]int{}
		for ph, entries := range p.Phases() {
			for _, e := range entries {
				if _, dup := inPhase[e]; dup || e.Phase() != Phase(ph) {
					t.Fatalf("entry %d in phase %d twice or wrongly", e.Index, ph)
				}
				inPhase[e] = ph
			}
		}
		for i, e := range p.Entries {
			if e.Index != i {
				t.Fatalf("Entries[%d].Index = %d", i, e.Index)
			}
			if e.Err != nil {
				if p.Transaction {
					t.Fatalf("a transaction plan has a failed entry %d: %v", i, e.Err)
				}
				var ee *EntryError
				if !errors.As(e.Err, &ee) || ee.Index != i {
					t.Fatalf("entry %d: Err %v is not its *EntryError", i, e.Err)
				}
				if _, ok := inPhase[e]; ok {
					t.Fatalf("failed entry %d is in a phase", i)
				}
				continue
			}
			if _, ok := inPhase[e]; !ok {
				t.Fatalf("entry %d is in no phase", i)
			}
			checkEntry(t, e)
		}
	})
}

func checkEntry(t *testing.T, e *Entry) {
	t.Helper()
	switch e.Method {
	case "GET", "HEAD", "POST", "PUT", "DELETE":
	default:
		t.Fatalf("entry %d: method %q", e.Index, e.Method)
	}
	if e.Interaction == "" {
		t.Fatalf("entry %d: no interaction", e.Index)
	}
	if e.Type != "" && !fhir.IsResourceType(e.Type) {
		t.Fatalf("entry %d: type %q", e.Index, e.Type)
	}
	if e.ID != "" && (!fhir.ValidID(e.ID) || e.Type == "") {
		t.Fatalf("entry %d: id %q (type %q)", e.Index, e.ID, e.Type)
	}
	if e.VersionID != "" && !fhir.ValidID(e.VersionID) {
		t.Fatalf("entry %d: version %q", e.Index, e.VersionID)
	}
	switch e.Method {
	case "POST", "PUT":
		if e.Type == "" || e.ID == "" || e.Method == "POST" && !isServerID(e.ID) {
			t.Fatalf("entry %d: %s %s/%s", e.Index, e.Method, e.Type, e.ID)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, e.Resource); err != nil || !bytes.Equal(buf.Bytes(), e.Resource) {
			t.Fatalf("entry %d: resource is not compact JSON (%v): %s", e.Index, err, e.Resource)
		}
		typ, id, err := fhir.Peek(e.Resource)
		if err != nil || typ != e.Type || id != e.ID {
			t.Fatalf("entry %d: resource is %q/%q (%v), entry %s", e.Index, typ, id, err, e.Reference())
		}
	default:
		if e.Resource != nil {
			t.Fatalf("entry %d: %s has a resource", e.Index, e.Method)
		}
	}
}

// syntheaSlice returns a transaction of the first n entries of a Synthea
// record, compact.
func syntheaSlice(t testing.TB, data []byte, n int) []byte {
	t.Helper()
	var b struct {
		Entry []json.RawMessage `json:"entry"`
	}
	if err := json.Unmarshal(data, &b); err != nil || len(b.Entry) < n {
		t.Fatalf("Synthea bundle: %v", err)
	}
	var buf bytes.Buffer
	for i, e := range b.Entry[:n] {
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := json.Compact(&buf, e); err != nil {
			t.Fatal(err)
		}
	}
	return bundleOf("transaction", buf.String())
}

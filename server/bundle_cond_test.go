package server

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"

	"fhirbucket/fhirstore"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage"
)

// newCondBundleEnv starts a server with the identifier index and batch
// and transaction Bundles on base (nil: a new memstore).
func newCondBundleEnv(t testing.TB, base storage.Bucket) *env {
	t.Helper()
	return startEnv(t, base, []envOpt{withIndexer}, func(st *fhirstore.Store, cfg *Config) {
		cfg.Index = newIndex(t, st)
		cfg.Bundles = &BundleConfig{Transactions: newTransactor(t, st), Validator: testenv.Validator(t)}
	})
}

const npi = "http://hl7.org/fhir/sid/us-npi"

func practitioner(value string) string {
	return fmt.Sprintf(`{"resourceType":"Practitioner","identifier":[{"system":%q,"value":%q}]}`, npi, value)
}

// encounter is an Encounter of subject performed by individual.
func encounter(subject, individual string) string {
	return fmt.Sprintf(`{"resourceType":"Encounter","status":"finished","class":{"system":"http://terminology.hl7.org/CodeSystem/v3-ActCode","code":"AMB"},"subject":{"reference":%q},"participant":[{"individual":{"reference":%q}}]}`, subject, individual)
}

func entryJSON(fullURL, resource, method, url, extra string) string {
	var parts []string
	if fullURL != "" {
		parts = append(parts, fmt.Sprintf(`"fullUrl":%q`, fullURL))
	}
	if resource != "" {
		parts = append(parts, `"resource":`+resource)
	}
	req := fmt.Sprintf(`"method":%q,"url":%q`, method, url)
	if extra != "" {
		req += "," + extra
	}
	parts = append(parts, `"request":{`+req+`}`)
	return "{" + strings.Join(parts, ",") + "}"
}

func bundleJSON(typ string, entries ...string) string {
	return fmt.Sprintf(`{"resourceType":"Bundle","type":%q,"entry":[%s]}`, typ, strings.Join(entries, ","))
}

// locID is the id in a response entry's location Type/id/_history/v.
func locID(t testing.TB, loc string) string {
	t.Helper()
	parts := strings.Split(loc, "/")
	if len(parts) < 2 {
		t.Fatalf("location %q names no resource", loc)
	}
	return parts[1]
}

// referencesOf reads typ/id and returns its subject and first
// participant's individual references.
func (e *env) encounterRefs(t testing.TB, id string) (subject, individual string) {
	t.Helper()
	r := e.do("GET", "/Encounter/"+id, "", nil)
	mustStatus(t, "read Encounter", r, 200)
	var enc struct {
		Subject     struct{ Reference string }
		Participant []struct{ Individual struct{ Reference string } }
	}
	if err := json.Unmarshal(r.body, &enc); err != nil || len(enc.Participant) == 0 {
		t.Fatalf("Encounter %s: %v", r.body, err)
	}
	return enc.Subject.Reference, enc.Participant[0].Individual.Reference
}

func (e *env) countMatches(t testing.TB, typ, ident string) int {
	t.Helper()
	r := e.do("GET", "/"+typ+"?identifier="+ident+"&_summary=count", "", nil)
	mustStatus(t, "count", r, 200)
	var b struct{ Total int }
	if err := json.Unmarshal(r.body, &b); err != nil {
		t.Fatal(err)
	}
	return b.Total
}

// TestTransactionConditionalSynthea: a Synthea-like patient transaction
// whose Patient is an ifNoneExist create and whose Practitioner
// references are Practitioner?identifier=… resolved against stored
// Practitioners. Sent twice, the second finds the Patient (200, nothing
// created) and its Encounter refers to the existing Patient.
func TestTransactionConditionalSynthea(t *testing.T) {
	testenv.EachBackend(t, func(t *testing.T, bk testenv.Backend) {
		e := newCondBundleEnv(t, bk.Open(t))
		r := e.do("POST", "/Practitioner", practitioner("9999"), jsonCT)
		mustStatus(t, "seed Practitioner", r, 201)
		prac := idOf(t, r)
		const pat = "urn:uuid:6f0e3d5e-0000-4000-8000-000000000001"
		tx := bundleJSON("transaction",
			entryJSON(pat, identifiedPatient("", "http://example.org/mrn|s1"), "POST", "Patient", `"ifNoneExist":"identifier=http://example.org/mrn|s1"`),
			entryJSON("urn:uuid:6f0e3d5e-0000-4000-8000-000000000002", encounter(pat, "Practitioner?identifier="+npi+"|9999"), "POST", "Encounter", ""),
		)
		r, br := e.postBundle(tx)
		mustStatus(t, "first transaction", r, 200)
		if got := br.Entry[0].Response.Status; got != "201 Created" {
			t.Fatalf("Patient entry: %s", got)
		}
		patID := locID(t, br.Entry[0].Response.Location)
		subject, individual := e.encounterRefs(t, locID(t, br.Entry[1].Response.Location))
		if subject != "Patient/"+patID || individual != "Practitioner/"+prac {
			t.Fatalf("Encounter refers to %s and %s, want Patient/%s and Practitioner/%s", subject, individual, patID, prac)
		}

		r, br = e.postBundle(tx)
		mustStatus(t, "second transaction", r, 200)
		if got := br.Entry[0].Response.Status; got != "200 OK" || locID(t, br.Entry[0].Response.Location) != patID {
			t.Fatalf("Patient entry of the repeat: %s at %s, want 200 OK at Patient/%s", got, br.Entry[0].Response.Location, patID)
		}
		subject, _ = e.encounterRefs(t, locID(t, br.Entry[1].Response.Location))
		if subject != "Patient/"+patID {
			t.Fatalf("the repeat's Encounter refers to %s, want the existing Patient/%s", subject, patID)
		}
		if n := e.countMatches(t, "Patient", "http://example.org/mrn|s1"); n != 1 {
			t.Fatalf("%d Patients with the identifier, want 1", n)
		}
	})
}

// TestTransactionConditionalFailures: a conditional reference matching
// no or several resources, and an ifNoneExist, conditional PUT or DELETE
// matching several, fail the transaction with 412 naming the entry, and
// nothing is written.
func TestTransactionConditionalFailures(t *testing.T) {
	e := newCondBundleEnv(t, nil)
	for range 2 {
		mustStatus(t, "seed", e.do("POST", "/Practitioner", practitioner("dup"), jsonCT), 201)
		mustStatus(t, "seed", e.do("POST", "/Patient", identifiedPatient("", "http://example.org/mrn|dup"), jsonCT), 201)
	}
	const pat = "urn:uuid:6f0e3d5e-0000-4000-8000-000000000011"
	okPatient := entryJSON(pat, identifiedPatient("", "http://example.org/mrn|new"), "POST", "Patient", "")
	cases := []struct{ name, body, want string }{
		{"reference matching none", bundleJSON("transaction", okPatient,
			entryJSON("", encounter(pat, "Practitioner?identifier="+npi+"|none"), "POST", "Encounter", "")), "entry[1]"},
		{"reference matching two", bundleJSON("transaction", okPatient,
			entryJSON("", encounter(pat, "Practitioner?identifier="+npi+"|dup"), "POST", "Encounter", "")), "entry[1]"},
		{"ifNoneExist matching two", bundleJSON("transaction", okPatient,
			entryJSON("", identifiedPatient("", "http://example.org/mrn|dup"), "POST", "Patient", `"ifNoneExist":"identifier=http://example.org/mrn|dup"`)), "entry[1]"},
		{"conditional PUT matching two", bundleJSON("transaction", okPatient,
			entryJSON("", identifiedPatient("", "http://example.org/mrn|dup"), "PUT", "Patient?identifier=http://example.org/mrn|dup", "")), "entry[1]"},
		{"conditional DELETE matching two", bundleJSON("transaction", okPatient,
			entryJSON("", "", "DELETE", "Patient?identifier=http://example.org/mrn|dup", "")), "entry[1]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := bucketState(t, e.bucket)
			r := e.do("POST", "/", c.body, jsonCT)
			mustStatus(t, c.name, r, 412)
			if !strings.Contains(string(r.body), c.want) {
				t.Errorf("the outcome does not name %s: %s", c.want, r.body)
			}
			// Claims are lease documents outside the resources; no
			// resource, version or index object may change.
			after := bucketState(t, e.bucket)
			for k := range after {
				if !strings.Contains(k, "claim") && after[k] != before[k] {
					t.Errorf("%s changed", k)
				}
			}
		})
	}
	t.Run("criteria not supported", func(t *testing.T) {
		r := e.do("POST", "/", bundleJSON("transaction", entryJSON("", "", "DELETE", "Patient?name=x", "")), jsonCT)
		mustStatus(t, "unsupported criteria", r, 501)
	})
}

// TestTransactionConditionalUpdateDelete: conditional PUT creates (no
// match) then updates its match, conditional DELETE deletes its match
// then is a no-op; an ifNoneExist in the same transaction as plain
// writes.
func TestTransactionConditionalUpdateDelete(t *testing.T) {
	e := newCondBundleEnv(t, nil)
	const q = "Patient?identifier=http://example.org/mrn|u1"
	put := func(active bool) string {
		body := fmt.Sprintf(`{"resourceType":"Patient","active":%v,"identifier":[{"system":"http://example.org/mrn","value":"u1"}]}`, active)
		return bundleJSON("transaction", entryJSON("", body, "PUT", q, ""))
	}
	r, br := e.postBundle(put(true))
	mustStatus(t, "conditional PUT (create)", r, 200)
	if br.Entry[0].Response.Status != "201 Created" {
		t.Fatalf("conditional PUT with no match: %s", br.Entry[0].Response.Status)
	}
	id := locID(t, br.Entry[0].Response.Location)
	r, br = e.postBundle(put(false))
	mustStatus(t, "conditional PUT (update)", r, 200)
	if br.Entry[0].Response.Status != "200 OK" || locID(t, br.Entry[0].Response.Location) != id {
		t.Fatalf("conditional PUT with a match: %s at %s, want 200 at %s", br.Entry[0].Response.Status, br.Entry[0].Response.Location, id)
	}
	if r := e.do("GET", "/Patient/"+id, "", nil); !strings.Contains(string(r.body), `"active":false`) {
		t.Fatalf("not updated: %s", r.body)
	}
	bad := bundleJSON("transaction", entryJSON("", `{"resourceType":"Patient","id":"other","identifier":[{"system":"http://example.org/mrn","value":"u1"}]}`, "PUT", q, ""))
	mustStatus(t, "body id differs from the match", e.do("POST", "/", bad, jsonCT), 400)

	del := bundleJSON("transaction", entryJSON("", "", "DELETE", q, ""))
	r, br = e.postBundle(del)
	mustStatus(t, "conditional DELETE", r, 200)
	if br.Entry[0].Response.Status != "204 No Content" {
		t.Fatalf("conditional DELETE: %s", br.Entry[0].Response.Status)
	}
	mustStatus(t, "read deleted", e.do("GET", "/Patient/"+id, "", nil), 410)
	before := bucketState(t, e.bucket)
	r, br = e.postBundle(del)
	mustStatus(t, "conditional DELETE of nothing", r, 200)
	if br.Entry[0].Response.Status != "204 No Content" {
		t.Fatalf("conditional DELETE of nothing: %s", br.Entry[0].Response.Status)
	}
	if after := bucketState(t, e.bucket); !maps.Equal(before, after) {
		t.Errorf("a conditional DELETE of nothing wrote")
	}
}

// TestBatchConditional: in a batch each conditional entry is its single
// interaction: ifNoneExist 201 then 200, conditional PUT and DELETE, a
// conditional reference resolved, and one matching nothing failing only
// its entry.
func TestBatchConditional(t *testing.T) {
	e := newCondBundleEnv(t, nil)
	r := e.do("POST", "/Practitioner", practitioner("b1"), jsonCT)
	mustStatus(t, "seed", r, 201)
	prac := idOf(t, r)
	mustStatus(t, "seed", e.do("PUT", "/Patient/pb", identifiedPatient("pb", "http://example.org/mrn|pb"), jsonCT), 201)
	batch := bundleJSON("batch",
		entryJSON("", identifiedPatient("", "http://example.org/mrn|b1"), "POST", "Patient", `"ifNoneExist":"identifier=http://example.org/mrn|b1"`),
		entryJSON("", identifiedPatient("", "http://example.org/mrn|b2"), "PUT", "Patient?identifier=http://example.org/mrn|b2", ""),
		entryJSON("", "", "DELETE", "Patient?identifier=http://example.org/mrn|nothing", ""),
		entryJSON("", encounter("Patient?identifier=http://example.org/mrn|pb", "Practitioner?identifier="+npi+"|b1"), "POST", "Encounter", ""),
		entryJSON("", encounter("Patient?identifier=http://example.org/mrn|pb", "Practitioner?identifier="+npi+"|none"), "POST", "Encounter", ""),
	)
	r, br := e.postBundle(batch)
	mustStatus(t, "batch", r, 200)
	want := []string{"201 Created", "201 Created", "204 No Content", "201 Created", "412 Precondition Failed"}
	for i, w := range want {
		if got := br.Entry[i].Response.Status; got != w {
			t.Errorf("entry %d: %s, want %s (%s)", i, got, w, br.Entry[i].Response.Outcome)
		}
	}
	subject, individual := e.encounterRefs(t, locID(t, br.Entry[3].Response.Location))
	if subject != "Patient/pb" || individual != "Practitioner/"+prac {
		t.Errorf("Encounter refers to %s and %s", subject, individual)
	}
	r, br = e.postBundle(batch)
	mustStatus(t, "batch again", r, 200)
	if got := br.Entry[0].Response.Status; got != "200 OK" {
		t.Errorf("ifNoneExist again: %s", got)
	}
	if got := br.Entry[1].Response.Status; got != "200 OK" {
		t.Errorf("conditional PUT again: %s", got)
	}
	if loc := br.Entry[1].Response.Location; !strings.HasPrefix(loc, "Patient/") || !strings.HasSuffix(loc, "/_history/2") || br.Entry[1].Resource != nil {
		t.Errorf("conditional PUT again: location %q, resource %s (want the updated version's location, no resource)", loc, br.Entry[1].Resource)
	}
	for _, v := range []string{"b1", "b2"} {
		if n := e.countMatches(t, "Patient", "http://example.org/mrn|"+v); n != 1 {
			t.Errorf("%d Patients %s, want 1", n, v)
		}
	}
}

// TestTransactionConditionalCreateRace: transactions with an ifNoneExist
// and single conditional creates of one identifier, all at once: exactly
// one resource, and every answer names it.
func TestTransactionConditionalCreateRace(t *testing.T) {
	testenv.EachBackend(t, func(t *testing.T, bk testenv.Backend) {
		e := newCondBundleEnv(t, bk.Open(t))
		n := 12
		if bk.S3 {
			n = 8
		}
		for round := range 3 {
			ident := fmt.Sprintf("http://example.org/mrn|race%d", round)
			tx := bundleJSON("transaction",
				entryJSON("urn:uuid:6f0e3d5e-0000-4000-8000-000000000021", identifiedPatient("", ident), "POST", "Patient", `"ifNoneExist":"identifier=`+ident+`"`),
				entryJSON("", encounter("urn:uuid:6f0e3d5e-0000-4000-8000-000000000021", "Practitioner/x"), "POST", "Encounter", ""))
			ids := make([]string, 2*n)
			var wg sync.WaitGroup
			for i := range 2 * n {
				wg.Go(func() {
					if i%2 == 0 {
						r := e.do("POST", "/", tx, jsonCT)
						if r.status != 200 {
							t.Errorf("transaction: %d %s", r.status, r.body)
							return
						}
						var br bundleResponse
						_ = json.Unmarshal(r.body, &br)
						ids[i] = locID(t, br.Entry[0].Response.Location)
						return
					}
					r := e.do("POST", "/Patient", identifiedPatient("", ident), hdr("Content-Type: application/fhir+json", "If-None-Exist: identifier="+ident))
					if r.status != 200 && r.status != 201 {
						t.Errorf("conditional create: %d %s", r.status, r.body)
						return
					}
					ids[i] = idOf(t, r)
				})
			}
			wg.Wait()
			if c := e.countMatches(t, "Patient", ident); c != 1 {
				t.Fatalf("round %d: %d Patients, want 1", round, c)
			}
			for i, id := range ids {
				if id != ids[0] {
					t.Fatalf("round %d: answer %d names %s, answer 0 %s", round, i, id, ids[0])
				}
			}
		}
	})
}

// TestTransactionConditionalPutReferences: references to the fullUrl of
// a conditional PUT name the resource it resolved to — the match, or the
// body's id when it creates.
func TestTransactionConditionalPutReferences(t *testing.T) {
	e := newCondBundleEnv(t, nil)
	mustStatus(t, "seed", e.do("PUT", "/Patient/known", identifiedPatient("known", "http://example.org/mrn|r1"), jsonCT), 201)
	const u1, u2 = "urn:uuid:6f0e3d5e-0000-4000-8000-000000000031", "urn:uuid:6f0e3d5e-0000-4000-8000-000000000032"
	tx := bundleJSON("transaction",
		entryJSON(u1, identifiedPatient("", "http://example.org/mrn|r1"), "PUT", "Patient?identifier=http://example.org/mrn|r1", ""),
		entryJSON(u2, identifiedPatient("chosen", "http://example.org/mrn|r2"), "PUT", "Patient?identifier=http://example.org/mrn|r2", ""),
		entryJSON("", encounter(u1, "Practitioner/x"), "POST", "Encounter", ""),
		entryJSON("", encounter(u2, "Practitioner/x"), "POST", "Encounter", ""),
	)
	r, br := e.postBundle(tx)
	mustStatus(t, "transaction", r, 200)
	if s, loc := br.Entry[0].Response.Status, br.Entry[0].Response.Location; s != "200 OK" || locID(t, loc) != "known" {
		t.Errorf("conditional PUT with a match: %s at %s, want 200 at Patient/known", s, loc)
	}
	if s, loc := br.Entry[1].Response.Status, br.Entry[1].Response.Location; s != "201 Created" || locID(t, loc) != "chosen" {
		t.Errorf("conditional PUT creating with its body id: %s at %s, want 201 at Patient/chosen", s, loc)
	}
	for i, want := range []string{"Patient/known", "Patient/chosen"} {
		if subject, _ := e.encounterRefs(t, locID(t, br.Entry[2+i].Response.Location)); subject != want {
			t.Errorf("Encounter %d refers to %s, want %s", i, subject, want)
		}
	}
}

// TestBundleConditionalWithoutIndex: a server without the identifier
// index answers conditional batch entries 501 each, and fails a
// transaction with one 501 naming the entry, writing nothing.
func TestBundleConditionalWithoutIndex(t *testing.T) {
	e := newBundleEnv(t, nil)
	entries := []string{
		entryJSON("", identifiedPatient("", "http://example.org/mrn|n1"), "POST", "Patient", `"ifNoneExist":"identifier=http://example.org/mrn|n1"`),
		entryJSON("", identifiedPatient("", "http://example.org/mrn|n2"), "PUT", "Patient?identifier=http://example.org/mrn|n2", ""),
		entryJSON("", "", "DELETE", "Patient?identifier=http://example.org/mrn|n3", ""),
		entryJSON("", encounter("Patient?identifier=http://example.org/mrn|n4", "Practitioner/x"), "POST", "Encounter", ""),
	}
	before := bucketState(t, e.bucket)
	r, br := e.postBundle(bundleJSON("batch", entries...))
	mustStatus(t, "batch", r, 200)
	for i, be := range br.Entry {
		if be.Response.Status != "501 Not Implemented" {
			t.Errorf("entry %d: %s, want 501", i, be.Response.Status)
		}
	}
	r = e.do("POST", "/", bundleJSON("transaction", entries[1:]...), jsonCT)
	mustStatus(t, "transaction", r, 501)
	if !strings.Contains(string(r.body), "entry[0]") {
		t.Errorf("the outcome does not name the entry: %s", r.body)
	}
	if after := bucketState(t, e.bucket); !maps.Equal(before, after) {
		t.Errorf("the bucket changed")
	}
}

package server

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"fhirbucket/bulk"
	"fhirbucket/bulk/export"
	"fhirbucket/fhirstore"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage"
)

// exportEnv is a server with an export service over b.
type exportEnv struct {
	*env
	svc *export.Service
}

func newExportEnv(t *testing.T, b storage.Bucket, limits bulk.Limits) *exportEnv {
	t.Helper()
	var svc *export.Service
	e := newEnv(t, b, func(c *Config, sc *fhirstore.Config) {})
	var err error
	svc, err = export.New(export.Config{Store: e.store, Owner: "test", Poll: 50 * time.Millisecond, TTL: 3 * time.Second,
		Limits: limits, RetryAfter: time.Second, MinPoll: time.Millisecond, PageFiles: 2, Logger: testenv.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(Config{Store: e.store, Export: svc, Logger: testenv.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.Config.Handler = h
	if err := svc.Open(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close(t.Context()) })
	return &exportEnv{env: e, svc: svc}
}

func (e *exportEnv) req(t *testing.T, method, path, body string, hdr ...string) *http.Response {
	t.Helper()
	u := path
	if !strings.HasPrefix(u, "http") {
		u = e.url + path
	}
	r, _ := http.NewRequestWithContext(t.Context(), method, u, strings.NewReader(body))
	for _, h := range hdr {
		k, v, _ := strings.Cut(h, ": ")
		r.Header.Add(k, v)
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/fhir+json")
	}
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func (e *exportEnv) put(t *testing.T, typ, id, body string) {
	t.Helper()
	resp := e.req(t, "PUT", "/"+typ+"/"+id, body)
	if resp.StatusCode >= 300 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("PUT %s/%s: %d %s", typ, id, resp.StatusCode, b)
	}
}

// kickoff starts an export and returns its status URL.
func (e *exportEnv) kickoff(t *testing.T, method, path, body string, hdr ...string) string {
	t.Helper()
	resp := e.req(t, method, path, body, append([]string{"Prefer: respond-async"}, hdr...)...)
	if resp.StatusCode != http.StatusAccepted {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	loc := resp.Header.Get("Content-Location")
	if !strings.HasPrefix(loc, "http") {
		t.Fatalf("Content-Location %q is not absolute", loc)
	}
	return loc
}

// wait polls until the job completes and returns its manifest.
func (e *exportEnv) wait(t *testing.T, status string) *bulk.Manifest {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp := e.req(t, "GET", status, "")
		switch resp.StatusCode {
		case http.StatusOK:
			var m bulk.Manifest
			if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
				t.Fatal(err)
			}
			return &m
		case http.StatusAccepted, http.StatusTooManyRequests:
			time.Sleep(20 * time.Millisecond)
		default:
			b, _ := io.ReadAll(resp.Body)
			t.Fatalf("status: %d %s", resp.StatusCode, b)
		}
	}
	t.Fatal("the export did not complete in time")
	return nil
}

// download reads every file of the list: type/id -> line.
func (e *exportEnv) download(t *testing.T, files []bulk.OutputFile, gz bool) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range files {
		var hdr []string
		if gz {
			hdr = append(hdr, "Accept-Encoding: gzip")
		}
		resp := e.req(t, "GET", f.URL, "", hdr...)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/fhir+ndjson" {
			t.Fatalf("GET %s: %d %s", f.URL, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		var body io.Reader = resp.Body
		if gz {
			if resp.Header.Get("Content-Encoding") != "gzip" {
				t.Fatalf("GET %s with gzip: Content-Encoding %q", f.URL, resp.Header.Get("Content-Encoding"))
			}
			zr, err := gzip.NewReader(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			body = zr
		}
		sc := bufio.NewScanner(body)
		sc.Buffer(nil, 1<<24)
		n := 0
		for sc.Scan() {
			n++
			var r struct {
				ResourceType, ID string
				Entry            []struct{ Request struct{ URL string } }
			}
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("%s line %d: %v", f.URL, n, err)
			}
			key := r.ResourceType + "/" + r.ID
			if r.ResourceType == "Bundle" && len(r.Entry) == 1 {
				key = "deleted " + r.Entry[0].Request.URL
			}
			if _, dup := out[key]; dup {
				t.Errorf("%s exported twice", key)
			}
			out[key] = sc.Text()
		}
		if n != f.Count {
			t.Errorf("%s has %d lines, manifest count %d", f.URL, n, f.Count)
		}
	}
	return out
}

func patientJSON(id, family string) string {
	return fmt.Sprintf(`{"resourceType":"Patient","id":%q,"name":[{"family":%q}],"birthDate":"1970-01-01"}`, id, family)
}

func obsJSON(id, patient string) string {
	return fmt.Sprintf(`{"resourceType":"Observation","id":%q,"status":"final","code":{"text":"x"},"subject":{"reference":"Patient/%s"},"valueQuantity":{"value":1.50}}`, id, patient)
}

func TestExportSystemSnapshot(t *testing.T) {
	testenv.EachBackend(t, func(t *testing.T, be testenv.Backend) {
		e := newExportEnv(t, be.Open(t), bulk.Limits{MaxLines: 7})
		for i := range 20 {
			e.put(t, "Patient", fmt.Sprintf("p%02d", i), patientJSON(fmt.Sprintf("p%02d", i), "Old"))
			e.put(t, "Observation", fmt.Sprintf("o%02d", i), obsJSON(fmt.Sprintf("o%02d", i), fmt.Sprintf("p%02d", i)))
		}
		e.req(t, "DELETE", "/Patient/p19", "")
		since := time.Now().UTC()
		time.Sleep(5 * time.Millisecond)
		e.req(t, "DELETE", "/Patient/p18", "")
		time.Sleep(5 * time.Millisecond)

		// Stop the runner from starting at once: the writes after the
		// kick-off must not show.
		status := e.kickoff(t, "GET", "/$export?_since="+since.Add(-time.Hour).Format(time.RFC3339Nano), "")
		status2 := e.kickoff(t, "GET", "/$export?_type=Patient&_elements=name&_since="+since.Format(time.RFC3339Nano), "")
		e.put(t, "Patient", "p00", patientJSON("p00", "New"))
		e.put(t, "Patient", "late", patientJSON("late", "Late"))
		e.req(t, "DELETE", "/Patient/p01", "")

		m := e.wait(t, status)
		got := e.download(t, m.Output, true)
		if len(got) != 38 {
			t.Errorf("exported %d resources, want 38 (20 Observations, 18 live Patients)", len(got))
		}
		if !strings.Contains(got["Patient/p00"], `"Old"`) || got["Patient/late"] != "" || got["Patient/p01"] == "" || got["Patient/p18"] != "" {
			t.Errorf("snapshot: p00 %q, late %q, p01 %q, p18 %q", got["Patient/p00"], got["Patient/late"], got["Patient/p01"], got["Patient/p18"])
		}
		if !strings.Contains(got["Observation/o03"], `"value":1.50`) {
			t.Errorf("decimal changed: %s", got["Observation/o03"])
		}
		del := e.download(t, m.Deleted, false)
		if len(del) != 2 || del["deleted Patient/p18"] == "" || del["deleted Patient/p19"] == "" {
			t.Errorf("deleted[] = %v, want p18 and p19", del)
		}
		for _, f := range m.Output {
			if f.Count > 7 {
				t.Errorf("part %s has %d lines, limit 7", f.URL, f.Count)
			}
		}

		m2 := e.wait(t, status2)
		got2 := e.download(t, m2.Output, false)
		del2 := e.download(t, m2.Deleted, false)
		if len(got2) != 0 || len(del2) != 1 || del2["deleted Patient/p18"] == "" {
			t.Errorf("_since export: output %v, deleted %v; want no output and p18 deleted", got2, del2)
		}

		// _elements, without _since.
		m3 := e.wait(t, e.kickoff(t, "POST", "/$export", `{"resourceType":"Parameters","parameter":[{"name":"_type","valueString":"Patient"},{"name":"_elements","valueString":"Patient.name"}]}`))
		got3 := e.download(t, m3.Output, false)
		if p := got3["Patient/p02"]; !strings.Contains(p, "SUBSETTED") || strings.Contains(p, "birthDate") || !strings.Contains(p, "Old") {
			t.Errorf("_elements: %s", p)
		}

		// Cancel: 202, then 404; the files are gone.
		resp := e.req(t, "DELETE", status, "")
		if resp.StatusCode != http.StatusAccepted {
			t.Errorf("DELETE: %d", resp.StatusCode)
		}
		if resp := e.req(t, "DELETE", status, ""); resp.StatusCode != http.StatusNotFound {
			t.Errorf("second DELETE: %d", resp.StatusCode)
		}
		if resp := e.req(t, "GET", status, ""); resp.StatusCode != http.StatusNotFound {
			t.Errorf("status after DELETE: %d", resp.StatusCode)
		}
		if resp := e.req(t, "GET", m.Output[0].URL, ""); resp.StatusCode != http.StatusNotFound {
			t.Errorf("file after DELETE: %d", resp.StatusCode)
		}
	})
}

func TestExportCompartments(t *testing.T) {
	e := newExportEnv(t, nil, bulk.Limits{})
	for i := range 4 {
		p := fmt.Sprintf("p%d", i)
		e.put(t, "Patient", p, patientJSON(p, "X"))
		e.put(t, "Observation", "o"+p, obsJSON("o"+p, p))
	}
	e.put(t, "Organization", "org", `{"resourceType":"Organization","id":"org","name":"o"}`)
	e.put(t, "Group", "g", `{"resourceType":"Group","id":"g","type":"person","actual":true,"member":[{"entity":{"reference":"Patient/p1"}},{"entity":{"reference":"Patient/p2"}}]}`)
	e.put(t, "Group", "notpeople", `{"resourceType":"Group","id":"notpeople","type":"person","actual":true}`)

	got := e.download(t, e.wait(t, e.kickoff(t, "GET", "/Patient/$export", "")).Output, false)
	if len(got) != 9 || got["Organization/org"] != "" || got["Group/g"] == "" {
		t.Errorf("Patient level exported %d: %v", len(got), keys(got))
	}
	got = e.download(t, e.wait(t, e.kickoff(t, "GET", "/Group/g/$export", "")).Output, false)
	if len(got) != 5 || got["Patient/p1"] == "" || got["Observation/op2"] == "" || got["Patient/p0"] != "" {
		t.Errorf("Group level exported %v", keys(got))
	}
	got = e.download(t, e.wait(t, e.kickoff(t, "POST", "/Patient/$export",
		`{"resourceType":"Parameters","parameter":[{"name":"patient","valueReference":{"reference":"Patient/p3"}}]}`)).Output, false)
	if len(got) != 2 || got["Observation/op3"] == "" {
		t.Errorf("patient parameter exported %v", keys(got))
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestExportBadInput(t *testing.T) {
	e := newExportEnv(t, nil, bulk.Limits{})
	e.put(t, "Patient", "p", patientJSON("p", "X"))
	for _, c := range []struct {
		method, path, body string
		hdr                []string
		status             int
	}{
		{"GET", "/$export?_outputFormat=text/csv", "", nil, 400},
		{"GET", "/$export?_outputFormat=ndjson", "", nil, 202},
		{"GET", "/$export?_type=Nope", "", nil, 400},
		{"GET", "/$export?_type=Nope,Patient", "", []string{"Prefer: handling=lenient"}, 202},
		{"GET", "/$export?_since=yesterday", "", nil, 400},
		{"GET", "/$export?_typeFilter=Patient%3Factive%3Dtrue", "", nil, 501},
		{"GET", "/$export?includeAssociatedData=LatestProvenanceResources", "", nil, 501},
		{"GET", "/Patient/$export?patient=Patient/p", "", nil, 400},
		{"POST", "/Patient/$export", `{"resourceType":"Patient"}`, nil, 400},
		{"POST", "/Patient/$export", `{"resourceType":"Parameters","parameter":[{"name":"patient","valueReference":{"reference":"Patient/nobody"}}]}`, nil, 400},
		{"GET", "/Group/missing/$export", "", nil, 404},
		{"GET", "/$export-poll-status?_jobId=00000000000000000000000000000000", "", nil, 404},
		{"GET", "/$export-poll-status?_jobId=../x", "", nil, 404},
		{"GET", "/$export-file?name=x.output.Patient.1.ndjson", "", nil, 404},
	} {
		resp := e.req(t, c.method, c.path, c.body, c.hdr...)
		if resp.StatusCode != c.status {
			b, _ := io.ReadAll(resp.Body)
			t.Errorf("%s %s: %d, want %d (%s)", c.method, c.path, resp.StatusCode, c.status, b)
		}
	}
	// A rejected kick-off writes no job state: only the two accepted
	// ones exist.
	ids, err := bulk.JobIDs(t.Context(), mustTenant(t, e.store), "bulk/export/jobs/")
	if err != nil || len(ids) != 2 {
		t.Errorf("jobs after the bad kick-offs: %v %v, want 2", ids, err)
	}
}

func mustTenant(t *testing.T, st *fhirstore.Store) storage.Bucket {
	b, err := st.TenantBucket(fhirstore.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestExportTenancy(t *testing.T) {
	e := newExportEnv(t, nil, bulk.Limits{})
	e.put(t, "Patient", "p", patientJSON("p", "X"))
	status := e.kickoff(t, "GET", "/$export", "")
	m := e.wait(t, status)
	if r := e.req(t, "GET", status, "", "X-Tenant-ID: other"); r.StatusCode != 404 {
		t.Errorf("status from another tenant: %d", r.StatusCode)
	}
	if r := e.req(t, "GET", m.Output[0].URL, "", "X-Tenant-ID: other"); r.StatusCode != 404 {
		t.Errorf("file from another tenant: %d", r.StatusCode)
	}
}

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"fhirbucket/bulkclient"
	"fhirbucket/internal/s3test"
	"fhirbucket/internal/testenv"
)

// exportedFile is one downloaded NDJSON file of a manifest.
type exportedFile struct {
	typ, path string
	count     int
}

// readDownloadedExport reads the manifest `fhirbucket export` wrote into
// out and checks every output file: its lines are resources of the
// file's type, as many as the manifest says, and no resource is in the
// export twice. It returns the ids per type and the lines by "Type/id".
func readDownloadedExport(t *testing.T, out string) (*bulkclient.Manifest, map[string]map[string]bool, map[string][]byte) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var man bulkclient.Manifest
	if err := json.Unmarshal(data, &man); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	var files []exportedFile
	for _, f := range man.Output {
		pu, err := url.Parse(f.URL)
		if err != nil {
			t.Fatal(err)
		}
		name := pu.Query().Get("name")
		if name == "" {
			name = filepath.Base(pu.Path)
		}
		files = append(files, exportedFile{typ: f.Type, path: filepath.Join(out, name), count: f.Count})
	}
	ids := map[string]map[string]bool{}
	lines := map[string][]byte{}
	for _, f := range files {
		fh, err := os.Open(f.path)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(fh)
		sc.Buffer(nil, 64<<20)
		n := 0
		for sc.Scan() {
			n++
			var r struct{ ResourceType, ID string }
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("%s line %d: %v", f.path, n, err)
			}
			if r.ResourceType != f.typ || r.ID == "" {
				t.Errorf("%s line %d: %s/%s in a file of %s", f.path, n, r.ResourceType, r.ID, f.typ)
			}
			if ids[r.ResourceType] == nil {
				ids[r.ResourceType] = map[string]bool{}
			}
			if ids[r.ResourceType][r.ID] {
				t.Errorf("%s/%s is exported more than once", r.ResourceType, r.ID)
			}
			ids[r.ResourceType][r.ID] = true
			lines[r.ResourceType+"/"+r.ID] = bytes.Clone(sc.Bytes())
		}
		fh.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		if n != f.count {
			t.Errorf("%s: %d lines, the manifest says %d", f.path, n, f.count)
		}
	}
	return &man, ids, lines
}

// TestE2EExportExamplesAndSynthea is the export run end to end with real
// data: a server on MinIO is loaded with `fhirbucket load` (the official
// examples as NDJSON, so PUT Type/id, and the five Synthea bundles as
// transactions), `fhirbucket export` downloads a system export, and the
// files hold every stored resource exactly once per type (the counts of
// Type?_summary=count equal the manifest's and the distinct ids), every
// example with an id among them (OperationOutcome aside: that type is
// never exported, its files are the error files), and a sample of lines is byte for byte
// what GET of the same resource answers.
func TestE2EExportExamplesAndSynthea(t *testing.T) {
	srv := s3test.MinIO(t)
	_, bucket := srv.NewBucket(t)
	bin := buildBinary(t)
	p := startServe(t, bin, t.TempDir(), append(srv.Env(bucket), "FHIRBUCKET_BACKEND=s3", "FHIRBUCKET_EXPORT_MIN_POLL=1ms"))
	c := &client{base: p.base, hc: &http.Client{Timeout: time.Minute}}

	// The examples, one compact line each.
	dir := t.TempDir()
	var nd bytes.Buffer
	types := map[string]bool{}
	withIDs := map[string]bool{}
	for _, e := range testenv.Examples(t) {
		var buf bytes.Buffer
		if err := json.Compact(&buf, e.Body); err != nil {
			t.Fatalf("%s: %v", e.Name, err)
		}
		var r struct{ ResourceType, ID string }
		if err := json.Unmarshal(buf.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		types[r.ResourceType] = true
		if r.ID != "" {
			withIDs[r.ResourceType+"/"+r.ID] = true
		}
		nd.Write(buf.Bytes())
		nd.WriteByte('\n')
	}
	examples := filepath.Join(dir, "examples.ndjson")
	if err := os.WriteFile(examples, nd.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range testenv.SyntheaFiles(t) {
		var in struct {
			Entry []struct{ Resource struct{ ResourceType string } }
		}
		if err := json.Unmarshal(testenv.ReadGzip(t, f), &in); err != nil {
			t.Fatal(err)
		}
		for _, e := range in.Entry {
			types[e.Resource.ResourceType] = true
		}
	}
	load := exec.Command(bin, append([]string{"load", "--url", p.base, "--progress", "never", examples}, testenv.SyntheaFiles(t)...)...)
	load.Env = childEnv()
	if out, err := load.CombinedOutput(); err != nil {
		t.Fatalf("load: %v\n%s", err, tail(string(out), 3000))
	}

	started := time.Now()
	out := filepath.Join(dir, "export")
	exp := exec.Command(bin, "export", "--url", p.base, "--out", out, "--progress", "never")
	exp.Env = childEnv()
	if b, err := exp.CombinedOutput(); err != nil {
		t.Fatalf("export: %v\n%s", err, tail(string(b), 3000))
	}
	took := time.Since(started)
	man, ids, lines := readDownloadedExport(t, out)

	perType := map[string]int{}
	for _, f := range man.Output {
		perType[f.Type] += f.Count
		types[f.Type] = true
	}
	total := 0
	delete(types, "OperationOutcome")
	for typ := range types {
		stored := countOf(t, c, typ)
		if stored != perType[typ] || stored != len(ids[typ]) {
			t.Errorf("%s: %d stored, %d in the manifest, %d distinct in the files", typ, stored, perType[typ], len(ids[typ]))
		}
		total += stored
	}
	for ref := range withIDs {
		if strings.HasPrefix(ref, "OperationOutcome/") {
			continue
		}
		if lines[ref] == nil {
			t.Errorf("example %s is not in the export", ref)
		}
	}

	// A sample of lines against GET: every 25th in a stable order.
	refs := make([]string, 0, len(lines))
	for ref := range lines {
		refs = append(refs, ref)
	}
	sort.Strings(refs)
	sampled := 0
	for i := 0; i < len(refs); i += 25 {
		st, _, body, err := c.do("GET", "/"+refs[i], nil)
		if err != nil || st != 200 {
			t.Fatalf("GET %s: %d %v", refs[i], st, err)
		}
		if !bytes.Equal(bytes.TrimRight(body, "\n"), lines[refs[i]]) {
			t.Errorf("%s: the exported line differs from GET:\n line %.300s\n  GET %.300s", refs[i], lines[refs[i]], body)
		}
		sampled++
	}
	if total < len(withIDs) || len(man.Output) == 0 {
		t.Fatalf("only %d resources exported", total)
	}
	t.Logf("%d resources of %d types in %d files exported and downloaded in %s; %d lines compared with GET",
		total, len(types), len(man.Output), took.Round(time.Millisecond), sampled)
	if strings.TrimSpace(man.TransactionTime) == "" {
		t.Error("the manifest has no transactionTime")
	}
	p.stop(t)
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"fhirbucket/fhirstore"
	"fhirbucket/index"
	"fhirbucket/internal/layout"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage"
	"fhirbucket/storage/filestore"
)

func readDoc(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatalf("reading docs/configuration.md: %v", err)
	}
	return string(data)
}

// listenAddr returns the addr of the JSON "listening" log line, or "".
func listenAddr(log string) string {
	sc := bufio.NewScanner(strings.NewReader(log))
	for sc.Scan() {
		var line struct{ Msg, Addr string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
			return line.Addr
		}
	}
	return ""
}

// TestServeInProcess starts serve on the default (file) backend in an
// empty folder, checks that the data folder is created and the API
// answers, and that cancelling (as SIGTERM does) lets an in-flight request
// finish before serve returns 0.
func TestServeInProcess(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "sub", "data")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	logs := &testenv.LockedBuffer{}
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", data}, []string{"FHIRBUCKET_LOG_FORMAT=json"}, io.Discard, logs)
	}()
	var addr string
	for deadline := time.Now().Add(30 * time.Second); addr == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		addr = listenAddr(logs.String())
		select {
		case code := <-done:
			t.Fatalf("serve exited with %d: %s", code, logs.String())
		default:
		}
	}
	if addr == "" {
		t.Fatalf("serve did not log its address: %s", logs.String())
	}
	base := "http://" + addr
	if fi, err := os.Stat(data); err != nil || !fi.IsDir() {
		t.Fatalf("data folder not created: %v", err)
	}
	for _, p := range []string{"/healthz", "/readyz", "/metadata"} {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", p, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("PUT", base+"/Patient/x", strings.NewReader(`{"resourceType":"Patient","id":"x"}`))
	req.Header.Set("Content-Type", "application/fhir+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("PUT: %d", resp.StatusCode)
	}

	// An in-flight request: the body arrives slowly, after shutdown began.
	pr, pw := io.Pipe()
	req, _ = http.NewRequest("PUT", base+"/Patient/y", pr)
	req.Header.Set("Content-Type", "application/fhir+json")
	inflight := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			inflight <- -1
			return
		}
		resp.Body.Close()
		inflight <- resp.StatusCode
	}()
	if _, err := pw.Write([]byte(`{"resourceType":"Patient",`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond) // the request is now being served
	cancel()
	time.Sleep(100 * time.Millisecond)
	if _, err := pw.Write([]byte(`"id":"y"}`)); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if code := <-inflight; code != 201 {
		t.Errorf("in-flight request during shutdown: %d", code)
	}
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("serve exit code %d: %s", code, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	if !strings.Contains(logs.String(), `"msg":"stopped"`) {
		t.Errorf("no clean stop logged: %s", logs.String())
	}
}

// TestFsck writes resources through the store into a folder, breaks the
// layout by removing history events, and checks that fsck finds it (exit
// 1), repairs it (--repair, exit 0), and then finds nothing.
func TestFsck(t *testing.T) {
	dir := t.TempDir()
	b, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := fhirstore.New(fhirstore.Config{Bucket: b, Validator: testenv.Validator(t)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tenant := range []string{"acme", "beta"} {
		for _, id := range []string{"a", "b"} {
			if _, _, err := st.Update(t.Context(), tenant, "Patient", id, []byte(`{"resourceType":"Patient","id":"`+id+`"}`), fhirstore.WriteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	env := []string{"FHIRBUCKET_DATA_DIR=" + dir, "FHIRBUCKET_LOG_LEVEL=error"}
	fsckRun := func(args ...string) (int, string) {
		var stdout, stderr bytes.Buffer
		code := run(t.Context(), append([]string{"fsck"}, args...), env, &stdout, &stderr)
		return code, stdout.String() + stderr.String()
	}
	if code, out := fsckRun(); code != exitOK || !strings.Contains(out, "tenant acme: 2 resources") || !strings.Contains(out, "tenant beta") {
		t.Fatalf("clean fsck: exit %d: %s", code, out)
	}

	// Remove acme's type-history events: the store cannot list them in
	// type history any more; fsck must notice.
	removed := 0
	for a, err := range storage.Walk(t.Context(), b, storage.ListOptions{Prefix: "acme/history/type/"}) {
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Delete(t.Context(), a.Key); err != nil {
			t.Fatal(err)
		}
		removed++
	}
	if removed != 2 {
		t.Fatalf("removed %d events, want 2", removed)
	}
	code, out := fsckRun("--tenant", "acme")
	if code != exitProblems || !strings.Contains(out, "PROBLEM") {
		t.Fatalf("fsck on a broken tenant: exit %d: %s", code, out)
	}
	if code, out := fsckRun("--tenant", "beta"); code != exitOK {
		t.Errorf("fsck of the intact tenant: exit %d: %s", code, out)
	}
	if code, out := fsckRun("--repair"); code != exitOK || !strings.Contains(out, "REPAIRED") {
		t.Fatalf("fsck --repair: exit %d: %s", code, out)
	}
	if code, out := fsckRun(); code != exitOK || strings.Contains(out, "PROBLEM") {
		t.Fatalf("fsck after repair: exit %d: %s", code, out)
	}
	if code, out := fsckRun("--tenant", "../x"); code != exitError || !strings.Contains(out, "--tenant") {
		t.Errorf("fsck with a bad tenant: exit %d: %s", code, out)
	}
}

// TestReadyFileBackend: the file backend's readiness probe fails once the
// data folder is gone, and holds again when it is back.
func TestReadyFileBackend(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	fs, v := newFlagSet("serve", "", io.Discard, serveSettings, storeSettings)
	if err := v.parse(fs, []string{"--data-dir", dir}, nil); err != nil {
		t.Fatal(err)
	}
	be, err := openBackend(t.Context(), v, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	if err := be.ready(t.Context()); err != nil {
		t.Fatalf("fresh data folder not ready: %v", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := be.ready(t.Context()); err == nil {
		t.Fatal("ready without a data folder")
	}
}

// TestFsckStaleIndexEntries: an identifier index entry of a replaced
// version (as a failed delete leaves it) is reported by fsck (exit 1),
// deleted by --repair, and then fsck is clean.
func TestFsckStaleIndexEntries(t *testing.T) {
	dir := t.TempDir()
	b, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := fhirstore.New(fhirstore.Config{Bucket: b, Validator: testenv.Validator(t), Indexer: &index.Keys{}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	body := func(v string) []byte {
		return []byte(`{"resourceType":"Patient","id":"a","identifier":[{"system":"http://example.org/mrn","value":"` + v + `"}]}`)
	}
	if _, _, err := st.Update(ctx, "acme", "Patient", "a", body("v1"), fhirstore.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Update(ctx, "acme", "Patient", "a", body("v2"), fhirstore.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	tb, err := st.TenantBucket("acme")
	if err != nil {
		t.Fatal(err)
	}
	staleKey := layout.IdentifierEntryKey("Patient", layout.IdentifierValueHash("v1"), layout.IdentifierSystemHash("http://example.org/mrn"), "a", 1)
	if _, err := tb.Put(ctx, staleKey, strings.NewReader("{}"), storage.PutOptions{ContentType: "application/json", Size: 2}); err != nil {
		t.Fatal(err)
	}
	env := []string{"FHIRBUCKET_DATA_DIR=" + dir, "FHIRBUCKET_LOG_LEVEL=error"}
	fsckRun := func(args ...string) (int, string) {
		var stdout, stderr bytes.Buffer
		code := run(ctx, append([]string{"fsck"}, args...), env, &stdout, &stderr)
		return code, stdout.String() + stderr.String()
	}
	if code, out := fsckRun(); code != exitProblems || !strings.Contains(out, "PROBLEM\ttenant=acme\t"+index.ProblemStaleEntry) {
		t.Fatalf("fsck with a stale entry: exit %d: %s", code, out)
	}
	if code, out := fsckRun("--repair"); code != exitOK || !strings.Contains(out, "REPAIRED\ttenant=acme\t"+index.ProblemStaleEntry) {
		t.Fatalf("fsck --repair: exit %d: %s", code, out)
	}
	if code, out := fsckRun(); code != exitOK || strings.Contains(out, "PROBLEM") {
		t.Fatalf("fsck after repair: exit %d: %s", code, out)
	}
	if _, err := tb.Stat(ctx, staleKey); err == nil {
		t.Errorf("the stale entry is still there")
	}
}

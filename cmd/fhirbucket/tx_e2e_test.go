package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"fhirbucket/internal/layout"
	"fhirbucket/internal/s3test"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage"
)

// countOf reads Type?_summary=count.
func countOf(t *testing.T, c *client, typ string) int {
	t.Helper()
	st, _, body, err := c.do("GET", "/"+typ+"?_summary=count", nil)
	if err != nil || st != 200 {
		t.Fatalf("count %s: %d %v %s", typ, st, err, body)
	}
	var b struct{ Total int }
	if err := json.Unmarshal(body, &b); err != nil {
		t.Fatal(err)
	}
	return b.Total
}

// TestE2ELoadSynthea loads the five Synthea records into a server on
// MinIO with `fhirbucket load` (as transactions), then checks the counts
// and that fsck finds nothing to repair.
func TestE2ELoadSynthea(t *testing.T) {
	srv := s3test.MinIO(t)
	_, bucket := srv.NewBucket(t)
	env := append(srv.Env(bucket), "FHIRBUCKET_BACKEND=s3")
	bin := buildBinary(t)
	p := startServe(t, bin, t.TempDir(), env)
	cmd := exec.Command(bin, append([]string{"load", "--url", p.base, "--progress", "always"}, testenv.SyntheaFiles(t)...)...)
	cmd.Env = childEnv()
	var stdout, stderr testenv.LockedBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("load: %v\nstdout: %s\nstderr: %s", err, stdout.String(), tail(stderr.String(), 2000))
	}
	if !strings.Contains(stderr.String(), "\r") {
		t.Errorf("no progress bar on stderr with --progress always: %q", tail(stderr.String(), 300))
	}
	// Every entry of the five files is stored: per type, the counts the
	// files give.
	want := map[string]int{}
	entries := 0
	for _, f := range testenv.SyntheaFiles(t) {
		var in struct {
			Entry []struct{ Resource struct{ ResourceType string } }
		}
		if err := json.Unmarshal(testenv.ReadGzip(t, f), &in); err != nil {
			t.Fatal(err)
		}
		for _, e := range in.Entry {
			want[e.Resource.ResourceType]++
			entries++
		}
	}
	if !strings.Contains(stdout.String(), fmt.Sprintf("files: 5, bundles: 5, entries: %d ok, 0 failed", entries)) {
		t.Errorf("summary: %s", stdout.String())
	}
	c := &client{base: p.base, hc: &http.Client{Timeout: time.Minute}}
	for typ, n := range want {
		if got := countOf(t, c, typ); got != n {
			t.Errorf("%s: %d stored, want %d", typ, got, n)
		}
	}
	p.stop(t)
	fsck := exec.Command(bin, "fsck")
	fsck.Env = childEnv(env...)
	if out, err := fsck.CombinedOutput(); err != nil || !strings.Contains(string(out), "ok") {
		t.Errorf("fsck after loading: %v: %s", err, tail(string(out), 2000))
	}
}

// TestE2ETransactionKilled kills a server (SIGKILL) while it applies a
// transaction of 300 updates on MinIO. With three replicas on one
// bucket, another replica finishes the journal while the killed one
// stays down: every touched resource reads all before or all after the
// transaction, never a mix, and the journal ends finished. A transaction
// that was acknowledged survives the kill of the replica that ran it.
func TestE2ETransactionKilled(t *testing.T) {
	srv := s3test.MinIO(t)
	cl, bucket := srv.NewBucket(t)
	b := cl.Bucket(bucket)
	env := append(srv.Env(bucket), "FHIRBUCKET_BACKEND=s3", "FHIRBUCKET_TX_LEASE_TTL=3s", "FHIRBUCKET_TX_RECOVERY_INTERVAL=500ms")
	bin := buildBinary(t)
	var reps []*proc
	for range 3 {
		reps = append(reps, startServe(t, bin, t.TempDir(), env))
	}
	c := &client{base: reps[1].base, hc: &http.Client{Timeout: time.Minute}}
	const n = 300
	var entries []string
	for i := range n {
		id := fmt.Sprintf("k%03d", i)
		if st, _, body, err := c.do("PUT", "/Patient/"+id, []byte(fmt.Sprintf(`{"resourceType":"Patient","id":"%s","name":[{"family":"before"}]}`, id)), "Content-Type: application/fhir+json"); err != nil || st != 201 {
			t.Fatalf("seed %s: %d %v %s", id, st, err, body)
		}
		entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Patient","id":"%s","name":[{"family":"after"}]},"request":{"method":"PUT","url":"Patient/%s"}}`, id, id))
	}
	tx := []byte(`{"resourceType":"Bundle","type":"transaction","entry":[` + strings.Join(entries, ",") + `]}`)

	// Send it to replica 0 and kill it as soon as its journal exists.
	victim := &client{base: reps[0].base, hc: &http.Client{Timeout: time.Minute}}
	answered := make(chan int, 1)
	go func() {
		st, _, _, _ := victim.do("POST", "/", tx, "Content-Type: application/fhir+json")
		answered <- st
	}()
	prefix := "default/" + layout.TransactionsPrefix
	deadline := time.Now().Add(30 * time.Second)
	var journal string
	for journal == "" && time.Now().Before(deadline) {
		for a, err := range storage.Walk(t.Context(), b, storage.ListOptions{Prefix: prefix}) {
			if err == nil {
				journal = a.Key
			}
		}
	}
	if journal == "" {
		t.Fatal("no journal appeared")
	}
	if err := reps[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-reps[0].done
	select {
	case st := <-answered:
		if st == 200 {
			t.Log("the transaction was acknowledged before the kill")
		}
	case <-time.After(10 * time.Second):
	}

	// Another replica finishes the journal once the lease has run out.
	var state string
	deadline = time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		data, _, err := storage.ReadAll(t.Context(), b, journal)
		if err == nil && !strings.Contains(string(data), `"status":"open"`) {
			state = string(data)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if state == "" {
		t.Fatalf("the journal is still open 30 s after the kill")
	}
	committed := strings.Contains(state, `"status":"committed"`)
	t.Logf("journal finished: committed=%v", committed)
	before, after := 0, 0
	for i := range n {
		st, _, body, err := c.do("GET", fmt.Sprintf("/Patient/k%03d", i), nil)
		if err != nil || st != 200 {
			t.Fatalf("read k%03d: %d %v", i, st, err)
		}
		switch {
		case strings.Contains(string(body), `"before"`):
			before++
		case strings.Contains(string(body), `"after"`):
			after++
		}
	}
	if before != n && after != n {
		t.Fatalf("a mix after the kill: %d before, %d after", before, after)
	}
	if committed != (after == n) {
		t.Fatalf("journal committed=%v but %d of %d resources read as after", committed, after, n)
	}

	// An acknowledged transaction survives the kill of its replica.
	for i := range entries {
		entries[i] = strings.ReplaceAll(entries[i], `"after"`, `"again"`)
	}
	tx = []byte(`{"resourceType":"Bundle","type":"transaction","entry":[` + strings.Join(entries, ",") + `]}`)
	runner := &client{base: reps[2].base, hc: &http.Client{Timeout: time.Minute}}
	if st, _, body, err := runner.do("POST", "/", tx, "Content-Type: application/fhir+json"); err != nil || st != 200 {
		t.Fatalf("second transaction: %d %v %.300s", st, err, body)
	}
	_ = reps[2].cmd.Process.Signal(syscall.SIGKILL)
	<-reps[2].done
	for i := range n {
		_, _, body, _ := c.do("GET", fmt.Sprintf("/Patient/k%03d", i), nil)
		if !strings.Contains(string(body), `"again"`) {
			t.Fatalf("k%03d lost the acknowledged transaction: %s", i, body)
		}
	}
	reps[1].stop(t)
}

// TestE2ETransactionKilledRestart: one server on the file backend, killed
// (SIGKILL) while it applies a transaction, finishes the journal itself
// once restarted: every touched resource reads all before or all after.
func TestE2ETransactionKilledRestart(t *testing.T) {
	dir := t.TempDir()
	bin := buildBinary(t)
	env := []string{"FHIRBUCKET_TX_LEASE_TTL=3s", "FHIRBUCKET_TX_RECOVERY_INTERVAL=500ms"}
	p := startServe(t, bin, dir, env)
	c := &client{base: p.base, hc: &http.Client{Timeout: time.Minute}}
	const n = 200
	var entries []string
	for i := range n {
		id := fmt.Sprintf("r%03d", i)
		if st, _, body, err := c.do("PUT", "/Patient/"+id, []byte(fmt.Sprintf(`{"resourceType":"Patient","id":"%s","name":[{"family":"before"}]}`, id)), "Content-Type: application/fhir+json"); err != nil || st != 201 {
			t.Fatalf("seed %s: %d %v %s", id, st, err, body)
		}
		entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Patient","id":"%s","name":[{"family":"after"}]},"request":{"method":"PUT","url":"Patient/%s"}}`, id, id))
	}
	go func() {
		_, _, _, _ = c.do("POST", "/", []byte(`{"resourceType":"Bundle","type":"transaction","entry":[`+strings.Join(entries, ",")+`]}`), "Content-Type: application/fhir+json")
	}()
	journals := filepath.Join(dir, "fhirbucket-data", "default", "transactions")
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if m, _ := filepath.Glob(filepath.Join(journals, "*.json")); len(m) > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	m, _ := filepath.Glob(filepath.Join(journals, "*.json"))
	if len(m) != 1 {
		t.Fatalf("journals %v", m)
	}
	// Restarted, the server finishes what it left.
	p = startServe(t, bin, dir, env)
	c.base = p.base
	deadline = time.Now().Add(30 * time.Second)
	var state []byte
	for time.Now().Before(deadline) {
		state, _ = os.ReadFile(m[0])
		if len(state) > 0 && !strings.Contains(string(state), `"status":"open"`) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if strings.Contains(string(state), `"status":"open"`) {
		t.Fatalf("the journal is still open after the restart: %.300s", state)
	}
	before, after := 0, 0
	for i := range n {
		_, _, body, err := c.do("GET", fmt.Sprintf("/Patient/r%03d", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.Contains(string(body), `"before"`):
			before++
		case strings.Contains(string(body), `"after"`):
			after++
		}
	}
	if before != n && after != n {
		t.Fatalf("a mix after the restart: %d before, %d after", before, after)
	}
	t.Logf("journal %s; %d before, %d after", map[bool]string{true: "committed", false: "aborted"}[after == n], before, after)
	p.stop(t)
}

package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"fhirbucket/internal/s3test"
)

// exportKillEnv are the settings that make an export of a few thousand
// resources slow enough to kill in the middle: small parts (a checkpoint
// each), one read at a time, a short lease and frequent scans.
var exportKillEnv = []string{"FHIRBUCKET_EXPORT_PART_LINES=20", "FHIRBUCKET_EXPORT_PARALLELISM=1",
	"FHIRBUCKET_EXPORT_LEASE_TTL=3s", "FHIRBUCKET_EXPORT_SCAN_INTERVAL=300ms", "FHIRBUCKET_EXPORT_MIN_POLL=1ms"}

// seedPatients stores n Patients through batch Bundles of 500.
func seedPatients(t *testing.T, c *client, n int) {
	t.Helper()
	for lo := 0; lo < n; lo += 500 {
		var entries []string
		for i := lo; i < min(lo+500, n); i++ {
			id := fmt.Sprintf("x%05d", i)
			entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Patient","id":"%s","name":[{"family":"F%d"}]},"request":{"method":"PUT","url":"Patient/%s"}}`, id, i, id))
		}
		body := []byte(`{"resourceType":"Bundle","type":"batch","entry":[` + strings.Join(entries, ",") + `]}`)
		st, _, resp, err := c.do("POST", "/", body)
		if err != nil || st != 200 || bytes.Contains(resp, []byte(`"status":"4`)) || bytes.Contains(resp, []byte(`"status":"5`)) {
			t.Fatalf("seeding: %d %v %.300s", st, err, resp)
		}
	}
}

// kickoffExport starts a system export of Patients and returns the job's
// status path (below the base).
func kickoffExport(t *testing.T, c *client) string {
	t.Helper()
	st, h, body, err := c.do("GET", "/$export?_type=Patient", nil, "Prefer", "respond-async")
	if err != nil || st != 202 {
		t.Fatalf("kick-off: %d %v %s", st, err, body)
	}
	loc := h.Get("Content-Location")
	_, path, ok := strings.Cut(loc, "/$export-poll-status")
	if !ok {
		t.Fatalf("Content-Location %q", loc)
	}
	return "/$export-poll-status" + path
}

// exportProgress polls once: the number of resources exported so far
// (from X-Progress), or -1 when the job completed.
func exportProgress(t *testing.T, c *client, status string) int {
	t.Helper()
	st, h, body, err := c.do("GET", status, nil)
	switch {
	case err != nil:
		t.Fatalf("poll: %v", err)
	case st == 200:
		return -1
	case st == 429:
		return 0
	case st != 202:
		t.Fatalf("poll: %d %s", st, body)
	}
	var n int
	if _, after, ok := strings.Cut(h.Get("X-Progress"), ": "); ok {
		fmt.Sscanf(after, "%d", &n)
	}
	return n
}

// waitExported polls until at least n resources are exported and returns
// that number; it fails when the job completes first.
func waitExported(t *testing.T, c *client, status string, n int) int {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		got := exportProgress(t, c, status)
		if got < 0 {
			t.Fatal("the export completed before it could be killed: make it longer")
		}
		if got >= n {
			return got
		}
	}
	t.Fatal("the export did not progress")
	return 0
}

// checkExport waits for the job to complete and checks that the files of
// its manifest hold every one of the n seeded Patients exactly once, each
// file as many lines as the manifest says.
func checkExport(t *testing.T, c *client, status string, n int) {
	t.Helper()
	var man struct {
		Output []struct {
			Type, URL string
			Count     int
		}
	}
	for deadline := time.Now().Add(120 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the export did not complete within 120 s")
		}
		st, _, body, err := c.do("GET", status, nil)
		if err == nil && st == 200 {
			if err := json.Unmarshal(body, &man); err != nil {
				t.Fatal(err)
			}
			break
		}
		if err == nil && st != 202 && st != 429 {
			t.Fatalf("poll: %d %s", st, body)
		}
	}
	seen := map[string]int{}
	for _, f := range man.Output {
		_, name, _ := strings.Cut(f.URL, "/$export-file")
		st, _, body, err := c.do("GET", "/$export-file"+name, nil)
		if err != nil || st != 200 {
			t.Fatalf("GET %s: %d %v", f.URL, st, err)
		}
		lines := 0
		sc := bufio.NewScanner(bytes.NewReader(body))
		for sc.Scan() {
			lines++
			var r struct{ ID string }
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("%s line %d: %v", f.URL, lines, err)
			}
			seen[r.ID]++
		}
		if lines != f.Count {
			t.Errorf("%s: %d lines, manifest count %d", f.URL, lines, f.Count)
		}
	}
	missing, twice := 0, 0
	for i := range n {
		switch seen[fmt.Sprintf("x%05d", i)] {
		case 0:
			missing++
		case 1:
		default:
			twice++
		}
	}
	if missing > 0 || twice > 0 || len(seen) != n {
		t.Fatalf("%d files: %d distinct resources, %d missing, %d more than once (want each of %d once)",
			len(man.Output), len(seen), missing, twice, n)
	}
	t.Logf("%d resources in %d files, each exactly once", n, len(man.Output))
}

// TestE2EExportKilled kills (SIGKILL) the only server in the middle of
// an export on the file backend and starts it again on the same folder:
// the new process takes the job over when the dead one's lease runs out
// and completes it, every resource exactly once.
func TestE2EExportKilled(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	env := append([]string{"FHIRBUCKET_BACKEND=file", "FHIRBUCKET_DATA_DIR=" + dir}, exportKillEnv...)
	p := startServe(t, bin, t.TempDir(), env)
	c := &client{base: p.base, hc: &http.Client{Timeout: time.Minute}}
	const n = 3000
	seedPatients(t, c, n)
	status := kickoffExport(t, c)
	at := waitExported(t, c, status, 400)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
	t.Logf("killed with %d of %d exported", at, n)
	p2 := startServe(t, bin, t.TempDir(), env)
	c2 := &client{base: p2.base, hc: &http.Client{Timeout: time.Minute}}
	checkExport(t, c2, status, n)
	if !strings.Contains(p2.logs.String(), "bulk job taken over") {
		t.Errorf("the restarted server did not take the job over: %s", tail(p2.logs.String(), 2000))
	}
	p2.stop(t)
}

// TestE2EExportTakeover runs three replicas on one MinIO bucket, kills
// (SIGKILL) the one running an export in its middle and keeps it down:
// another replica takes the job over and completes it, every resource
// exactly once.
func TestE2EExportTakeover(t *testing.T) {
	srv := s3test.MinIO(t)
	_, bucket := srv.NewBucket(t)
	env := append(append(srv.Env(bucket), "FHIRBUCKET_BACKEND=s3"), exportKillEnv...)
	bin := buildBinary(t)
	var reps []*proc
	for range 3 {
		reps = append(reps, startServe(t, bin, t.TempDir(), env))
	}
	c := &client{base: reps[1].base, hc: &http.Client{Timeout: time.Minute}}
	const n = 2000
	seedPatients(t, c, n)
	// Kicked off on replica 0, the job runs there (it has a free worker).
	victim := &client{base: reps[0].base, hc: &http.Client{Timeout: time.Minute}}
	status := kickoffExport(t, victim)
	at := waitExported(t, c, status, 300)
	if err := reps[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-reps[0].done
	t.Logf("killed replica 0 with %d of %d exported", at, n)
	checkExport(t, c, status, n)
	took := 0
	for _, r := range reps[1:] {
		if strings.Contains(r.logs.String(), "bulk job taken over") {
			took++
		}
	}
	if took != 1 {
		t.Errorf("%d surviving replicas took the job over, want 1", took)
	}
	reps[1].stop(t)
	reps[2].stop(t)
}

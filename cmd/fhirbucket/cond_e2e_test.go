package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"fhirbucket/internal/layout"
	"fhirbucket/internal/s3test"
	"fhirbucket/storage"
)

// condRound sends n concurrent conditional creates of one identifier,
// request i to replica i%len(bases), and returns each answer's status and
// the id it names (status 0: no answer, the replica was killed).
func condRound(bases []string, n int, ident string) ([]int, []string) {
	status, ids := make([]int, n), make([]string, n)
	body := []byte(fmt.Sprintf(`{"resourceType":"Patient","identifier":[{"system":"http://example.org/mrn","value":%q}]}`, ident))
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c := &client{base: bases[i%len(bases)], hc: &http.Client{Timeout: time.Minute}}
			st, _, data, err := c.do("POST", "/Patient", body, "If-None-Exist", "identifier="+url.QueryEscape("http://example.org/mrn|"+ident))
			if err != nil {
				return
			}
			status[i] = st
			var r struct{ ID string }
			if json.Unmarshal(data, &r) == nil {
				ids[i] = r.ID
			}
		})
	}
	wg.Wait()
	return status, ids
}

// checkRound: exactly one Patient carries ident, and every answer is 200
// or 201 naming it (killed requests, status 0, are allowed when killed).
func checkRound(t *testing.T, c *client, round string, ident string, status []int, ids []string, killed bool) {
	t.Helper()
	st, _, data, err := c.do("GET", "/Patient?identifier="+url.QueryEscape("http://example.org/mrn|"+ident), nil)
	if err != nil || st != 200 {
		t.Fatalf("%s: search: %d %v %s", round, st, err, data)
	}
	var b struct {
		Entry []struct{ Resource struct{ ID string } }
	}
	if err := json.Unmarshal(data, &b); err != nil {
		t.Fatal(err)
	}
	if len(b.Entry) != 1 {
		t.Fatalf("%s: %d Patients carry the identifier, want 1", round, len(b.Entry))
	}
	want := b.Entry[0].Resource.ID
	created := 0
	for i, s := range status {
		switch {
		case s == 0 && killed:
			continue
		case s != 200 && s != 201:
			t.Fatalf("%s: request %d answered %d", round, i, s)
		case ids[i] != want:
			t.Fatalf("%s: request %d (%d) names %s, the resource is %s", round, i, s, ids[i], want)
		}
		if s == 201 {
			created++
		}
	}
	if created > 1 {
		t.Fatalf("%s: %d answers 201", round, created)
	}
}

// TestE2EConditionalCreateRace: 32 concurrent conditional creates of one
// identifier through 3 `fhirbucket serve` processes on one MinIO bucket,
// 20 rounds: exactly one resource per round, every answer 200/201 naming
// it. Then 5 rounds in which replica 0 gets its third of the requests a
// few milliseconds ahead of the others, is killed (SIGKILL) as they start
// and is restarted after the round: the answers that
// came still name the one resource, and a conditional create after the
// round (once the killed holder's claim expired) finds it too. fsck
// --repair then leaves nothing for fsck to find.
func TestE2EConditionalCreateRace(t *testing.T) {
	srv := s3test.MinIO(t)
	_, bucket := srv.NewBucket(t)
	env := append(srv.Env(bucket), "FHIRBUCKET_BACKEND=s3", "FHIRBUCKET_CLAIM_TTL=2s")
	bin := buildBinary(t)
	var reps []*proc
	for range 3 {
		reps = append(reps, startServe(t, bin, t.TempDir(), env))
	}
	bases := func() []string { return []string{reps[0].base, reps[1].base, reps[2].base} }
	c := &client{base: reps[1].base, hc: &http.Client{Timeout: time.Minute}}
	const n = 32
	start := time.Now()
	for r := range 20 {
		ident := fmt.Sprintf("race-%d", r)
		status, ids := condRound(bases(), n, ident)
		checkRound(t, c, "round "+ident, ident, status, ids, false)
	}
	t.Logf("20 rounds of %d: %v", n, time.Since(start))

	start = time.Now()
	takeovers := 0
	for r, d := range []int{10, 20, 30, 45, 60} {
		ident := fmt.Sprintf("kill-%d", r)
		// Replica 0 gets its requests d ms ahead of the others and is
		// killed as the others start: it may hold the claim by then.
		var st0, st12 []int
		var ids0, ids12 []string
		var wg sync.WaitGroup
		roundStart := time.Now()
		wg.Go(func() { st0, ids0 = condRound([]string{reps[0].base}, n/3, ident) })
		time.Sleep(time.Duration(d) * time.Millisecond)
		wg.Go(func() { st12, ids12 = condRound([]string{reps[1].base, reps[2].base}, n-n/3, ident) })
		if err := reps[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-reps[0].done
		wg.Wait()
		took := time.Since(roundStart)
		status, ids := append(st0, st12...), append(ids0, ids12...)
		// After the round (its claim may be held by the killed replica
		// until it expires), one more conditional create names the same
		// resource, through a survivor.
		st2, ids2 := condRound([]string{reps[2].base}, 1, ident)
		checkRound(t, c, "kill round "+ident, ident, append(status, st2...), append(ids, ids2...), true)
		answered := 0
		for _, s := range status {
			if s != 0 {
				answered++
			}
		}
		if took > 2*time.Second {
			takeovers++ // the survivors waited for the killed holder's claim to expire
		}
		t.Logf("kill round %d (head start %d ms): %d of %d requests answered in %v", r, d, answered, n, took.Round(time.Millisecond))
		reps[0] = startServe(t, bin, t.TempDir(), env)
	}
	t.Logf("%d of 5 kill rounds waited for a killed holder's claim to expire", takeovers)
	t.Logf("5 kill rounds: %v", time.Since(start))
	for _, p := range reps {
		p.stop(t)
	}
	// What the killed replicas left, fsck --repair finishes; then fsck
	// finds nothing.
	for _, args := range [][]string{{"fsck", "--repair"}, {"fsck"}} {
		cmd := exec.Command(bin, args...)
		cmd.Env = childEnv(env...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v: %s", args, err, tail(string(out), 2000))
		}
		t.Logf("%v: %s", args, tail(string(out), 300))
	}
}

// TestE2EConditionalTransactionKilled: a transaction whose ifNoneExist
// holds the identifier's claim is killed (SIGKILL) once its journal
// exists; conditional creates of that identifier through the other
// replicas then answer 200/201 naming one resource, and exactly one
// resource carries the identifier, whether the journal ends committed or
// aborted.
func TestE2EConditionalTransactionKilled(t *testing.T) {
	srv := s3test.MinIO(t)
	cl, bucket := srv.NewBucket(t)
	b := cl.Bucket(bucket)
	env := append(srv.Env(bucket), "FHIRBUCKET_BACKEND=s3", "FHIRBUCKET_CLAIM_TTL=2s",
		"FHIRBUCKET_TX_LEASE_TTL=3s", "FHIRBUCKET_TX_RECOVERY_INTERVAL=500ms")
	bin := buildBinary(t)
	var reps []*proc
	for range 3 {
		reps = append(reps, startServe(t, bin, t.TempDir(), env))
	}
	const ident = "killed-tx"
	entries := []string{fmt.Sprintf(`{"fullUrl":"urn:uuid:6f0e3d5e-0000-4000-8000-000000000099","resource":{"resourceType":"Patient","identifier":[{"system":"http://example.org/mrn","value":%q}]},"request":{"method":"POST","url":"Patient","ifNoneExist":"identifier=http://example.org/mrn|%s"}}`, ident, ident)}
	for i := range 300 {
		entries = append(entries, fmt.Sprintf(`{"resource":{"resourceType":"Patient","id":"q%03d"},"request":{"method":"PUT","url":"Patient/q%03d"}}`, i, i))
	}
	tx := []byte(`{"resourceType":"Bundle","type":"transaction","entry":[` + strings.Join(entries, ",") + `]}`)
	victim := &client{base: reps[0].base, hc: &http.Client{Timeout: time.Minute}}
	go func() { _, _, _, _ = victim.do("POST", "/", tx) }()
	deadline := time.Now().Add(30 * time.Second)
	found := false
	for !found && time.Now().Before(deadline) {
		for _, err := range storage.Walk(t.Context(), b, storage.ListOptions{Prefix: "default/" + layout.TransactionsPrefix}) {
			if err == nil {
				found = true
			}
		}
	}
	if !found {
		t.Fatal("no journal appeared")
	}
	if err := reps[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-reps[0].done
	start := time.Now()
	status, ids := condRound([]string{reps[1].base, reps[2].base}, 16, ident)
	c := &client{base: reps[1].base, hc: &http.Client{Timeout: time.Minute}}
	checkRound(t, c, "after the kill", ident, status, ids, false)
	t.Logf("16 conditional creates after the kill answered in %v: %v", time.Since(start).Round(time.Millisecond), status)
	reps[1].stop(t)
	reps[2].stop(t)
}

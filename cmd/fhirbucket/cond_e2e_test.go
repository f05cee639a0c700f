package main

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"testing"
	"time"

	"fhirbucket/internal/s3test"
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
// it. Then 5 rounds in which replica 0 is killed (SIGKILL) a few
// milliseconds into the round and restarted after it: the answers that
// came still name the one resource, and a conditional create after the
// round (once the killed holder's claim expired) finds it too.
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
	for r := range 5 {
		ident := fmt.Sprintf("kill-%d", r)
		var status []int
		var ids []string
		done := make(chan struct{})
		go func() {
			status, ids = condRound(bases(), n, ident)
			close(done)
		}()
		time.Sleep(time.Duration(2+rand.IntN(20)) * time.Millisecond)
		if err := reps[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-reps[0].done
		<-done
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
		t.Logf("kill round %d: %d of %d requests answered", r, answered, n)
		reps[0] = startServe(t, bin, t.TempDir(), env)
	}
	t.Logf("5 kill rounds: %v", time.Since(start))
	for _, p := range reps {
		p.stop(t)
	}
}

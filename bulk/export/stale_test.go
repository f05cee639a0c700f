package export

import (
	"bufio"
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fhirbucket/bulk"
	"fhirbucket/fhirstore"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
)

// manualClock is a lease clock that moves only when told.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) After(d time.Duration) <-chan time.Time {
	if d <= 0 {
		ch := make(chan time.Time, 1)
		ch <- c.Now()
		return ch
	}
	return make(chan time.Time) // a frozen clock never fires
}

func (c *manualClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// pausingStore blocks AsOf once, after a number of reads, until released:
// a process paused in the middle of an export.
type pausingStore struct {
	Store
	after   int64
	n       atomic.Int64
	paused  chan struct{}
	release chan struct{}
	once    sync.Once
}

func (p *pausingStore) AsOf(ctx context.Context, tenant, typ, id string, at time.Time) (*fhirstore.Resource, error) {
	if p.n.Add(1) == p.after {
		p.once.Do(func() { close(p.paused) })
		<-p.release
	}
	return p.Store.AsOf(ctx, tenant, typ, id, at)
}

// TestExportStaleHolderFenced: replica A is paused in the middle of a job
// (its lease clock frozen, so it believes it still holds the lease); B
// takes the job over and finishes it; then A wakes up and carries on. A's
// late writes cannot change the result: every resource is in the
// manifest's files exactly once, and A stops at its next checkpoint.
func TestExportStaleHolderFenced(t *testing.T) {
	ctx := t.Context()
	b := memstore.New()
	st, err := fhirstore.New(fhirstore.Config{Mode: fhirstore.TenancyPrefix, Bucket: b, Validator: testenv.Validator(t), Logger: testenv.QuietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	const n = 240
	for i := range n {
		body := fmt.Sprintf(`{"resourceType":"Patient","id":"p%04d","name":[{"family":"F%d"}]}`, i, i)
		if _, _, err := st.Update(ctx, "default", "Patient", fmt.Sprintf("p%04d", i), []byte(body), fhirstore.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	clockA := &manualClock{now: time.Now()}
	clockB := &manualClock{now: clockA.now}
	ps := &pausingStore{Store: st, after: 130, paused: make(chan struct{}), release: make(chan struct{})}
	lim := bulk.Limits{MaxLines: 25}
	mk := func(owner string, s Store, c *manualClock, l bulk.Limits) *Service {
		svc, err := New(Config{Store: s, Owner: owner, TTL: 3 * time.Second, Clock: c, Poll: time.Hour,
			Limits: l, Parallel: 4, Logger: testenv.QuietLogger()})
		if err != nil {
			t.Fatal(err)
		}
		return svc
	}
	a := mk("replica-a", ps, clockA, lim)
	// B is configured with other part limits: the job's own, fixed at
	// kick-off, still apply.
	bsvc := mk("replica-b", st, clockB, bulk.Limits{MaxLines: 7})
	defer a.Close(context.WithoutCancel(ctx))
	defer bsvc.Close(context.WithoutCancel(ctx))
	id, err := a.Kickoff(ctx, "default", Request{Level: LevelSystem, URL: "http://x/$export", Base: "http://x", Types: []string{"Patient"}})
	if err != nil {
		t.Fatal(err)
	}
	<-ps.paused
	// B's clock passes A's lease; A's does not move.
	clockB.advance(time.Minute)
	bsvc.Scan(ctx)
	var done *Status
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		s, err := bsvc.Status(ctx, "default", id, 0)
		if err == nil && s.Done {
			done = s
			break
		}
	}
	if done == nil {
		t.Fatal("B did not finish the job")
	}
	close(ps.release)
	// A carries on until its next checkpoint is refused.
	for deadline := time.Now().Add(10 * time.Second); a.runner.Running() > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stale holder did not stop")
		}
	}
	seen := map[string]int{}
	for _, f := range done.Manifest.Output {
		name := f.URL[strings.Index(f.URL, "name=")+len("name="):]
		_, kind, typ, pn, _ := parseFileName(name)
		data, _, err := storage.ReadAll(ctx, b, "default/"+fileKey(id, kind, typ, pn))
		if err != nil {
			t.Fatal(err)
		}
		lines := 0
		sc := bufio.NewScanner(strings.NewReader(string(data)))
		for sc.Scan() {
			lines++
			i := strings.Index(sc.Text(), `"id":"`)
			seen[sc.Text()[i+6:i+11]]++
		}
		if lines != f.Count || lines > lim.MaxLines {
			t.Errorf("%s: %d lines, manifest says %d (limit %d)", name, lines, f.Count, lim.MaxLines)
		}
	}
	for i := range n {
		if id := fmt.Sprintf("p%04d", i); seen[id] != 1 {
			t.Errorf("%s exported %d times", id, seen[id])
		}
	}
	if len(seen) != n {
		t.Errorf("%d distinct resources exported, want %d", len(seen), n)
	}
	// The progress file is B's.
	p, err := bsvc.readProgress(ctx, &bulk.Job{Bucket: mustBucket(t, st), ID: id}, "Patient")
	if err != nil || !p.Done || p.Exported != n {
		t.Errorf("progress after the stale holder: %+v, %v", p, err)
	}
}

func mustBucket(t *testing.T, st *fhirstore.Store) storage.Bucket {
	b, err := st.TenantBucket("default")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

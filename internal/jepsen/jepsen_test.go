package jepsen

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"fhirbucket/internal/faultproxy"
)

// runConfig sizes one run. The default fits `make test` (about a minute on
// two busy cores); FHIRBUCKET_TEST_JEPSEN_LONG=1 runs a longer, busier one.
// (The variable carries the FHIRBUCKET_TEST_ prefix, which the command
// reserves for test suites, so the spawned servers do not reject it.)
type runConfig struct {
	clients int
	ids     int // resources per epoch
	// epoch: clients move to fresh ids after each epoch. Transactions
	// join the resources of an epoch into one partition of the check,
	// whose search grows steeply with its length: 5 s of operations on
	// 4 ids check in seconds, 10 s no longer within minutes.
	epoch      time.Duration
	duration   time.Duration
	maxOps     int // per client
	kills      int // kill -9 of a replica, each followed by a restart
	minioAt    float64
	proxyRates faultproxy.Rates
	seed       uint64
	// checkTimeout bounds porcupine. A linearizable history of the default
	// run checks in about a second; proving a violation can take far
	// longer (the search must exhaust every placement of the operations
	// with an unknown outcome), and a check that does not finish fails the
	// test. FHIRBUCKET_TEST_JEPSEN_CHECK_TIMEOUT (a duration) changes it.
	checkTimeout time.Duration
}

// txTimeout is the clients' timeout for a transaction: far longer than
// any transaction takes, because a commit goes on when its client leaves
// (see client.tx).
const txTimeout = 60 * time.Second

func config() runConfig {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FHIRBUCKET_TEST_JEPSEN_SEED"); s != "" {
		if v, err := strconv.ParseUint(s, 10, 64); err == nil {
			seed = v
		}
	}
	cfg := runConfig{
		clients:  6,
		ids:      4,
		epoch:    5 * time.Second,
		duration: 30 * time.Second,
		maxOps:   1500,
		kills:    3,
		minioAt:  0.55,
		proxyRates: faultproxy.Rates{
			SlowDown: 0.04, Delay: 0.05, DropRequest: 0.02, DropResponse: 0.04, Hang: 0.003,
			MaxDelay: 300 * time.Millisecond, HangFor: 3 * time.Second,
		},
		seed:         seed,
		checkTimeout: 2 * time.Minute,
	}
	if d, err := time.ParseDuration(os.Getenv("FHIRBUCKET_TEST_JEPSEN_CHECK_TIMEOUT")); err == nil && d > 0 {
		cfg.checkTimeout = d
	}
	if os.Getenv("FHIRBUCKET_TEST_JEPSEN_LONG") == "1" {
		// Fresh ids as often as in the default run keep each partition,
		// and so the number of operations with an unknown outcome the
		// checker must place in one, as small as there.
		cfg.clients, cfg.ids, cfg.duration, cfg.maxOps, cfg.kills = 10, 5, 5*time.Minute, 20000, 15
	}
	return cfg
}

// TestLinearizableUnderFaults is the Jepsen-style test of issue 6: three
// servers on one bucket, concurrent clients through all of them, replicas
// killed with SIGKILL and restarted, MinIO killed and restarted, S3 faults
// on one replica's storage traffic; the history must be linearizable
// against Model, and after `fsck --repair` the store must be clean and
// hold every acknowledged write exactly once.
func TestLinearizableUnderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("the cluster test is skipped with -short")
	}
	cfg := config()
	t.Logf("seed %d (set FHIRBUCKET_TEST_JEPSEN_SEED to repeat the workload's choices)", cfg.seed)
	ctx := t.Context()
	started := time.Now()

	m := startMinIO(t)
	if err := m.createBucket(ctx, bucketName); err != nil {
		t.Fatalf("creating the bucket: %v", err)
	}
	bin := buildFhirbucket(t)
	proxy, err := faultproxy.New(m.endpoint, cfg.seed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })

	// Replicas 0 and 1 talk to MinIO, replica 2 through the fault proxy.
	replicas := []*replica{
		newReplica(t, bin, 0, m.endpoint),
		newReplica(t, bin, 1, m.endpoint),
		newReplica(t, bin, 2, proxy.URL()),
	}
	for _, r := range replicas {
		if err := r.launch(ctx); err != nil {
			t.Fatal(err)
		}
	}
	setup := time.Since(started)

	rec := newRecorder()
	var ids []string
	var epochs [][]string
	for e := range int((cfg.duration + cfg.epoch - 1) / cfg.epoch) {
		var ep []string
		for i := range cfg.ids {
			ep = append(ep, fmt.Sprintf("jepsen-e%d-%d", e, i))
		}
		epochs = append(epochs, ep)
		ids = append(ids, ep...)
	}
	runCtx, stopRun := context.WithTimeout(ctx, cfg.duration)
	defer stopRun()

	// Clients.
	var writes, txs atomic.Int64
	var wg sync.WaitGroup
	transport := &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second}
	t.Cleanup(transport.CloseIdleConnections)
	for n := range cfg.clients {
		c := &client{
			n: n, nClients: cfg.clients,
			http:     &http.Client{Timeout: 10 * time.Second, Transport: transport},
			txHTTP:   &http.Client{Timeout: txTimeout, Transport: transport},
			rng:      rand.New(rand.NewPCG(cfg.seed, uint64(n))),
			rec:      rec,
			replicas: replicas,
			epochs:   epochs,
			epochLen: cfg.epoch,
			writes:   &writes,
			txs:      &txs,
			seen:     map[string]int{},
		}
		wg.Go(func() { c.run(runCtx, cfg.maxOps) })
	}

	// Nemesis: one fault at a time, so that a replica is never restarted
	// while MinIO is down (its start-up check would fail).
	proxy.SetRates(cfg.proxyRates)
	faults := map[string]int{}
	var faultLog []string
	nemesisDone := make(chan struct{})
	go func() {
		defer close(nemesisDone)
		rng := rand.New(rand.NewPCG(cfg.seed, 0xfa17))
		type event struct {
			at    time.Duration
			minio bool
		}
		var events []event
		for i := range cfg.kills {
			// Spread over the run, with jitter, away from MinIO's restart.
			slot := cfg.duration / time.Duration(cfg.kills+1)
			events = append(events, event{at: slot*time.Duration(i+1) - slot/3 + time.Duration(rng.Int64N(int64(slot/3)))})
		}
		events = append(events, event{at: time.Duration(cfg.minioAt * float64(cfg.duration)), minio: true})
		slices.SortFunc(events, func(a, b event) int { return int(a.at - b.at) })
		for _, ev := range events {
			wait := time.Until(rec.t0.Add(ev.at))
			select {
			case <-runCtx.Done():
				return
			case <-time.After(wait):
			}
			at := time.Since(rec.t0).Round(time.Millisecond)
			if ev.minio {
				down := 500*time.Millisecond + time.Duration(rng.Int64N(int64(time.Second)))
				if err := m.restart(ctx, down); err != nil {
					t.Errorf("restarting MinIO: %v", err)
					return
				}
				faults["minio kill -9 and restart"]++
				faultLog = append(faultLog, fmt.Sprintf("%s minio killed, down %s, back after %s", at, down.Round(time.Millisecond), (time.Since(rec.t0)-at).Round(time.Millisecond)))
				continue
			}
			n := rng.IntN(len(replicas))
			down := 200*time.Millisecond + time.Duration(rng.Int64N(int64(1500*time.Millisecond)))
			replicas[n].kill()
			time.Sleep(down)
			if err := replicas[n].launch(ctx); err != nil {
				t.Errorf("restarting replica %d: %v", n, err)
				return
			}
			faults["replica kill -9 and restart"]++
			faultLog = append(faultLog, fmt.Sprintf("%s replica %d killed, down %s, ready after %s", at, n, down.Round(time.Millisecond), (time.Since(rec.t0)-at).Round(time.Millisecond)))
		}
	}()
	// The nemesis finishes its schedule even if the clients reached
	// maxOps early, so every kind of fault is always injected.
	wg.Wait()
	<-nemesisDone
	stopRun()
	proxy.SetRates(faultproxy.Rates{})
	runTime := time.Since(rec.t0)
	for f, n := range proxy.Counts() {
		if f != faultproxy.Pass && n > 0 {
			faults["s3 "+f.String()+" (replica 2)"] += int(n)
		}
	}
	for _, l := range faultLog {
		t.Log("fault: " + l)
	}
	if t.Failed() {
		t.FailNow()
	}

	// Every replica must be up again (a replica may be between a kill and
	// its restart only if the nemesis failed, which failed the test).
	for _, r := range replicas {
		if r.exited() {
			t.Fatalf("%s is not running after the run; its output:\n%s", r.name, r.log)
		}
	}

	// Roll forward what the faults left unfinished and abort the
	// transactions killed replicas left open (once their leases have
	// expired: until then fsck leaves them running), then nothing may
	// remain.
	fsckStart := time.Now()
	var code int
	var out string
	for attempt := 0; ; attempt++ {
		code, out, err = fsck(ctx, bin, m.endpoint, "--repair")
		if err != nil || code != 0 {
			t.Fatalf("fsck --repair: exit %d, %v:\n%s", code, err, out)
		}
		running := -1
		for l := range strings.Lines(out) {
			if _, rest, ok := strings.Cut(l, "abandoned ones aborted, "); ok {
				_, _ = fmt.Sscanf(rest, "%d still running", &running)
			}
		}
		if running == 0 {
			break
		}
		if attempt >= 10 {
			t.Fatalf("fsck --repair: transactions still running long after the run:\n%s", out)
		}
		time.Sleep(txLeaseTTL / 3)
	}
	repairEnd := time.Now()
	repaired := strings.Count(out, "REPAIRED")
	t.Logf("fsck --repair: %d repairs; %s", repaired, lastLine(out))
	code, out, err = fsck(ctx, bin, m.endpoint)
	if err != nil || code != 0 || strings.Contains(out, "PROBLEM") || !strings.HasSuffix(strings.TrimSpace(out), "ok") {
		t.Fatalf("fsck after repair: exit %d, %v, want exit 0 and nothing to repair:\n%s", code, err, out)
	}
	fsckTime := time.Since(fsckStart)

	// The final state, read through one replica after the repair, closes
	// the history: it must be consistent with every operation before it.
	final := map[string][]Entry{}
	hc := &http.Client{Timeout: 30 * time.Second}
	for _, id := range ids {
		rec.add(2*cfg.clients, fsckStart.Sub(rec.t0).Nanoseconds(), repairEnd.Sub(rec.t0).Nanoseconds(), Input{ID: id, Kind: KindRepair}, Output{Status: 200})
	}
	for _, id := range ids {
		call := rec.now()
		es, status, err := finalHistory(ctx, hc, rec, replicas[0].base, id)
		if err != nil {
			t.Fatalf("final history: %v", err)
		}
		final[id] = es
		rec.add(2*cfg.clients, call, rec.now(), Input{ID: id, Kind: KindHistory, Count: math.MaxInt32}, Output{Status: status, Entries: es})
	}

	stored, err := m.readStore(ctx, ids)
	if err != nil {
		t.Fatalf("reading the bucket: %v", err)
	}

	for _, b := range resolveTxs(rec, stored) {
		t.Errorf("transactions: %s", b)
	}
	rec.mu.Lock()
	ops, acked, problems, txRecs, mismatch := rec.ops, rec.acked, rec.problems, rec.txs, rec.metaMismatch
	rec.mu.Unlock()
	for _, p := range problems {
		t.Errorf("wrong answer: %s", p)
	}
	if len(mismatch) > 0 {
		keys := slices.Sorted(maps.Keys(mismatch))
		var ex []string
		for _, k := range keys[:min(len(keys), 10)] {
			ex = append(ex, fmt.Sprintf("%s has meta.versionId %s", k, mismatch[k]))
		}
		t.Errorf("wrong answer: %d versions were returned with a meta.versionId that is not their version, e.g. %s",
			len(keys), strings.Join(ex, ", "))
	}
	for _, b := range checkFinal(final, acked, txRecs, stored) {
		t.Errorf("final state: %s", b)
	}

	if path := os.Getenv("FHIRBUCKET_TEST_JEPSEN_DUMP"); path != "" {
		if err := dumpHistory(path, ops); err != nil {
			t.Errorf("writing the history: %v", err)
		} else {
			t.Logf("history written to %s (FHIRBUCKET_TEST_JEPSEN_HISTORY=%[1]s checks it again)", path)
		}
	}
	checkStart := time.Now()
	model := Model()
	res, info := porcupine.CheckOperationsVerbose(model, ops, cfg.checkTimeout)
	checkTime := time.Since(checkStart)

	versions, hidden := 0, 0
	for id, es := range final {
		versions += len(es)
		hidden += len(stored.versions[id]) - len(es)
	}
	txCounts := map[string]int{}
	for _, tr := range txRecs {
		k := tr.outcome.String()
		if tr.status != 0 && tr.outcome != txCommitted {
			k += " " + strconv.Itoa(tr.status)
		}
		if tr.resolved != "" {
			k += " (" + tr.resolved + ")"
		}
		txCounts[k]++
	}
	journals := map[string]int{}
	for _, j := range stored.journals {
		journals[j.status]++
	}
	t.Logf("operations checked: %d (%s), of which unknown outcome: %s; writes not sent (replica down): %d; acknowledged writes: %d; final versions: %d visible, %d hidden",
		len(ops), formatCounts(rec.byKind), formatKinds(rec.unknown), rec.notSent, len(acked), versions, hidden)
	t.Logf("transactions: %d (%s); journals: %s", len(txRecs), formatCounts(txCounts), formatCounts(journals))
	t.Logf("faults: %s", formatCounts(faults))
	t.Logf("durations: setup %s, run %s, fsck %s, check %s (result %s)",
		setup.Round(time.Millisecond), runTime.Round(time.Millisecond), fsckTime.Round(time.Millisecond), checkTime.Round(time.Millisecond), res)
	if faults["replica kill -9 and restart"] == 0 || faults["minio kill -9 and restart"] == 0 {
		t.Errorf("the nemesis did not inject every kind of fault: %v", faults)
	}
	switch res {
	case porcupine.Ok:
	case porcupine.Unknown:
		t.Errorf("the linearizability check did not finish in time; reduce the run or raise the timeout")
	default:
		reportViolation(t, model, ops, info)
	}
}

// reportViolation prints the partition that is not linearizable and
// writes porcupine's visualization next to the test's temporary files.
func reportViolation(t *testing.T, model porcupine.Model, ops []porcupine.Operation, info porcupine.LinearizationInfo) {
	t.Helper()
	f, err := os.CreateTemp("", "fhirbucket-jepsen-*.html")
	if err == nil {
		if err := porcupine.Visualize(model, info, f); err != nil {
			t.Logf("writing the visualization: %v", err)
		}
		f.Close()
		t.Errorf("the history is NOT linearizable; visualization: %s", f.Name())
	} else {
		t.Errorf("the history is NOT linearizable (no visualization: %v)", err)
	}
	// The checker's partitions come in the order of model.Partition and
	// number their operations by position in the partition; a partition
	// is at fault when no partial linearization covers it.
	parts := model.Partition(ops)
	for i, lins := range info.PartialLinearizations() {
		if i >= len(parts) {
			break
		}
		var longest []int
		for _, l := range lins {
			if len(l) > len(longest) {
				longest = l
			}
		}
		part := parts[i]
		if len(longest) == len(part) {
			continue
		}
		placed := make([]bool, len(part))
		for _, id := range longest {
			placed[id] = true
		}
		ids := map[string]bool{}
		for _, op := range part {
			if id := op.Input.(Input).ID; id != "" {
				ids[id] = true
			}
		}
		t.Logf("resources %s: %d of %d operations linearize; the last of them, in linearization order:",
			strings.Join(slices.Sorted(maps.Keys(ids)), " "), len(longest), len(part))
		for _, id := range longest[max(0, len(longest)-12):] {
			t.Logf("  %s", opText(part[id]))
		}
		var rest []porcupine.Operation
		for id, op := range part {
			if !placed[id] {
				rest = append(rest, op)
			}
		}
		slices.SortFunc(rest, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
		t.Logf("  ... and the first operations (by invocation) that cannot be placed after them:")
		for _, op := range rest[:min(len(rest), 8)] {
			t.Logf("  %s", opText(op))
		}
	}
}

// opText renders an operation with its interval in milliseconds since the
// start of the run.
func opText(op porcupine.Operation) string {
	return fmt.Sprintf("[%.3f, %s] client %d: %s", float64(op.Call)/1e6, retText(op.Return), op.ClientId,
		Describe(op.Input.(Input), op.Output.(Output)))
}

func retText(r int64) string {
	if r == math.MaxInt64 {
		return "never"
	}
	return strconv.FormatFloat(float64(r)/1e6, 'f', 3, 64)
}

func formatCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func formatKinds(m map[Kind]int) string {
	s := map[string]int{}
	for k, n := range m {
		s[k.String()] = n
	}
	return formatCounts(s)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// recordedOp is an operation as dumpHistory writes it.
type recordedOp struct {
	Client    int
	Call, Ret int64
	Input     Input
	Output    Output
}

// dumpHistory writes ops as JSON, for TestCheckHistory.
func dumpHistory(path string, ops []porcupine.Operation) error {
	rs := make([]recordedOp, len(ops))
	for i, op := range ops {
		rs[i] = recordedOp{op.ClientId, op.Call, op.Return, op.Input.(Input), op.Output.(Output)}
	}
	data, err := json.Marshal(rs)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// TestCheckHistory checks a history that TestLinearizableUnderFaults
// wrote (FHIRBUCKET_TEST_JEPSEN_DUMP) again: FHIRBUCKET_TEST_JEPSEN_HISTORY
// names the file.
func TestCheckHistory(t *testing.T) {
	path := os.Getenv("FHIRBUCKET_TEST_JEPSEN_HISTORY")
	if path == "" {
		t.Skip("set FHIRBUCKET_TEST_JEPSEN_HISTORY to a history written with FHIRBUCKET_TEST_JEPSEN_DUMP")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rs []recordedOp
	if err := json.Unmarshal(data, &rs); err != nil {
		t.Fatal(err)
	}
	ops := make([]porcupine.Operation, len(rs))
	for i, r := range rs {
		ops[i] = porcupine.Operation{ClientId: r.Client, Call: r.Call, Return: r.Ret, Input: r.Input, Output: r.Output}
	}
	model := Model()
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(model, ops, config().checkTimeout)
	t.Logf("%d operations, %d partitions: %s in %s", len(ops), len(model.Partition(ops)), res, time.Since(start).Round(time.Millisecond))
	if res != porcupine.Ok {
		reportViolation(t, model, ops, info)
	}
}

package jepsen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anishathalye/porcupine"

	"fhirbucket/internal/faultproxy"
)

// UnknownWindow is how long after a client gave up on a write the
// write's own storage requests may still land. A server stops working on
// a request when its client disconnects (the request's context ends) or
// when it is killed; what it has already sent is answered by MinIO in
// milliseconds, and the fault proxy gives up forwarding after
// faultproxy.ForwardTimeout. The window is a generous multiple of that:
// too short would fail a correct run, never pass a wrong one.
const UnknownWindow = 3 * faultproxy.ForwardTimeout

// recorder collects the history. Times are nanoseconds since the start of
// the run on the monotonic clock, so they order the operations of all
// clients.
type recorder struct {
	t0 time.Time

	mu  sync.Mutex
	ops []porcupine.Operation
	// acked are the writes that returned a version: the ones that must
	// be in the final history.
	acked []ackedWrite
	// txs are the transactions sent, with their outcome.
	txs []txRecord
	// stats
	byKind   map[string]int
	unknown  map[Kind]int
	notSent  int
	problems []string // answers no correct server gives (4xx the client did not provoke)
	// metaMismatch are the versions returned with a meta.versionId other
	// than their version (the ETag, the history entry's): id/version ->
	// meta.versionId.
	metaMismatch map[string]string
}

// txOutcome is what the client learnt of a transaction.
type txOutcome uint8

const (
	txCommitted txOutcome = iota // 200 transaction-response
	txFailed                     // 409 or 412: it did not commit
	txUnknown                    // no answer, or 5xx
)

var txOutcomeNames = []string{"committed", "failed", "unknown"}

func (o txOutcome) String() string { return txOutcomeNames[o] }

// txRecord is one transaction the clients sent: its entries (one PUT of
// a resource each) and its outcome.
type txRecord struct {
	tx      int
	entries []txEntry
	outcome txOutcome
	status  int // the HTTP status, 0 without an answer

	client    int
	call, ret int64
	// resolved is what the bucket says of a transaction that did not
	// commit as far as its client knows (see resolveTxs).
	resolved string
}

type txEntry struct {
	id      string
	write   int
	marker  string
	ifMatch int
}

type ackedWrite struct {
	id      string
	write   int
	marker  string
	version int
	deleted bool
}

func newRecorder() *recorder {
	return &recorder{t0: time.Now(), byKind: map[string]int{}, unknown: map[Kind]int{}, metaMismatch: map[string]string{}}
}

func (r *recorder) now() int64 { return int64(time.Since(r.t0)) }

func (r *recorder) add(client int, call, ret int64, in Input, out Output) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if out.Unknown {
		// The operation may still take effect for a while: see the
		// package doc and UnknownWindow.
		ret += int64(UnknownWindow)
		r.unknown[in.Kind]++
	}
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	key := in.Kind.String()
	if in.Kind == KindPut && in.IfMatch > 0 {
		key = "put If-Match"
	}
	if in.Kind == KindTxPut && in.IfMatch > 0 {
		key = "tx-put If-Match"
	}
	if in.Kind != KindComplete {
		r.byKind[key]++
	}
}

// checkMeta notes a resource returned as version v of id whose
// meta.versionId names another version: a wrong answer, which the
// version's number (its ETag) still identifies for the model.
func (r *recorder) checkMeta(id string, v int, res *resource) {
	if res == nil || res.Meta.VersionID == strconv.Itoa(v) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.metaMismatch[fmt.Sprintf("%s/%d", id, v)] = res.Meta.VersionID
}

func (r *recorder) problem(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.problems = append(r.problems, fmt.Sprintf(format, args...))
}

// client is one sequential client of the cluster.
type client struct {
	n        int
	nClients int
	http     *http.Client
	txHTTP   *http.Client // for transactions, whose commit goes on when the client leaves: see tx
	rng      *rand.Rand
	rec      *recorder
	replicas []*replica
	epochs   [][]string    // the ids of each epoch
	epochLen time.Duration // how long clients work on one epoch's ids
	writes   *atomic.Int64
	txs      *atomic.Int64
	seen     map[string]int // highest version this client has seen per id
}

const resourceType = "Patient"

// body is the resource a write sends: the marker goes in name.family.
func body(id, marker string) []byte {
	return fmt.Appendf(nil, `{"resourceType":"Patient","id":%q,"name":[{"family":%q}],"active":true}`, id, marker)
}

// resource is the part of a returned resource the client checks.
type resource struct {
	ID   string `json:"id"`
	Meta struct {
		VersionID string `json:"versionId"`
	} `json:"meta"`
	Name []struct {
		Family string `json:"family"`
	} `json:"name"`
}

func (r *resource) marker() string {
	if len(r.Name) == 0 {
		return ""
	}
	return r.Name[0].Family
}

// etagVersion parses W/"n".
func etagVersion(h string) int {
	v, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(h, "W/"), `"`), `"`))
	if err != nil || v < 1 {
		return 0
	}
	return v
}

// notSent reports whether err means the request never reached the server
// (the replica is down): such an operation has no effect and is left out.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// do sends one request and reads the answer (bounded by the client's
// timeout).
func (c *client) do(ctx context.Context, method, url string, hdr map[string]string, reqBody []byte) (*http.Response, []byte, error) {
	return c.doWith(ctx, c.http, method, url, hdr, reqBody)
}

func (c *client) doWith(ctx context.Context, hc *http.Client, method, url string, hdr map[string]string, reqBody []byte) (*http.Response, []byte, error) {
	var rd io.Reader
	if reqBody != nil {
		rd = bytes.NewReader(reqBody)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return nil, nil, err
	}
	if reqBody != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	req.Header.Set("Accept", "application/fhir+json")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, nil, err
	}
	return resp, data, nil
}

// run performs operations until ctx ends or maxOps are done. A short,
// random pause between operations bounds the rate on a fast machine, so
// that the size of the history (and the checker's work) does not depend
// on the machine much.
func (c *client) run(ctx context.Context, maxOps int) {
	for i := 0; i < maxOps && ctx.Err() == nil; i++ {
		if i > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(c.rng.Int64N(int64(20 * time.Millisecond)))):
			}
		}
		ids := c.epochs[min(int(time.Since(c.rec.t0)/c.epochLen), len(c.epochs)-1)]
		id := ids[c.rng.IntN(len(ids))]
		rep := c.replicas[c.rng.IntN(len(c.replicas))]
		switch x := c.rng.IntN(100); {
		case x < 22:
			c.read(ctx, rep, id)
		case x < 40:
			v := 1 + c.rng.IntN(c.seen[id]+2)
			c.vread(ctx, rep, id, v)
		case x < 48:
			c.history(ctx, rep, id, 5)
		case x < 63:
			c.put(ctx, rep, id, 0)
		case x < 80:
			// Mostly the version last seen (which may be stale by now),
			// sometimes an older one, to get both outcomes.
			v := max(c.seen[id], 1)
			if c.rng.IntN(5) == 0 && v > 1 {
				v--
			}
			c.put(ctx, rep, id, v)
		case x < 90:
			// Two resources, always the same pair of the epoch's ids (the
			// first two, or the next two): a transaction joins its
			// resources into one partition of the check, whose search
			// grows steeply with its size. A quarter of the entries with
			// an ifMatch on the version last seen.
			pair := 2 * c.rng.IntN(max(len(ids)/2, 1))
			var entries []txEntry
			for _, i := range c.rng.Perm(min(2, len(ids))) {
				i += pair
				e := txEntry{id: ids[i]}
				if v := c.seen[e.id]; v > 0 && c.rng.IntN(4) == 0 {
					e.ifMatch = v
				}
				entries = append(entries, e)
			}
			c.tx(ctx, rep, entries)
		default:
			c.delete(ctx, rep, id)
		}
	}
}

func (c *client) see(id string, v int) {
	c.seen[id] = max(c.seen[id], v)
}

func (c *client) read(ctx context.Context, rep *replica, id string) {
	in := Input{ID: id, Kind: KindRead}
	call := c.rec.now()
	resp, data, err := c.do(ctx, http.MethodGet, rep.base+"/"+resourceType+"/"+id, nil, nil)
	ret := c.rec.now()
	out, ok := c.readAnswer(in, resp, data, err)
	if ok {
		c.rec.add(c.n, call, ret, in, out)
	}
}

func (c *client) vread(ctx context.Context, rep *replica, id string, v int) {
	in := Input{ID: id, Kind: KindVRead, Version: v}
	call := c.rec.now()
	resp, data, err := c.do(ctx, http.MethodGet, fmt.Sprintf("%s/%s/%s/_history/%d", rep.base, resourceType, id, v), nil, nil)
	ret := c.rec.now()
	out, ok := c.readAnswer(in, resp, data, err)
	if ok {
		c.rec.add(c.n, call, ret, in, out)
	}
}

// readAnswer turns the answer to a read or vread into an Output; ok is
// false when there is nothing to record (no answer: a read without an
// answer has no effect).
func (c *client) readAnswer(in Input, resp *http.Response, data []byte, err error) (Output, bool) {
	if err != nil {
		return Output{}, false
	}
	out := Output{Status: resp.StatusCode, Version: etagVersion(resp.Header.Get("ETag"))}
	switch resp.StatusCode {
	case http.StatusOK:
		var r resource
		if err := json.Unmarshal(data, &r); err != nil || r.ID != in.ID {
			c.rec.problem("%s: 200 with a body that does not match its ETag %q: %s", Describe(in, out), resp.Header.Get("ETag"), data)
		}
		c.rec.checkMeta(in.ID, out.Version, &r)
		out.Marker = r.marker()
	case http.StatusNotFound, http.StatusGone:
	default:
		if resp.StatusCode < 500 {
			c.rec.problem("%s: unexpected answer: %s", Describe(in, out), data)
		}
		return Output{}, false
	}
	c.see(in.ID, out.Version)
	return out, true
}

// historyBundle is the part of a history Bundle the client checks.
type historyBundle struct {
	ResourceType string `json:"resourceType"`
	Type         string `json:"type"`
	Link         []struct {
		Relation string `json:"relation"`
		URL      string `json:"url"`
	} `json:"link"`
	Entry []struct {
		Resource *resource `json:"resource"`
		Request  struct {
			Method string `json:"method"`
		} `json:"request"`
		Response struct {
			Etag string `json:"etag"`
		} `json:"response"`
	} `json:"entry"`
}

func (b *historyBundle) next() string {
	for _, l := range b.Link {
		if l.Relation == "next" {
			return l.URL
		}
	}
	return ""
}

// entries converts the bundle of id's history; ok is false when an entry
// is malformed. A resource whose meta.versionId is not the entry's
// version is noted in rec.
func (b *historyBundle) entries(rec *recorder, id string) ([]Entry, bool) {
	out := make([]Entry, 0, len(b.Entry))
	for _, e := range b.Entry {
		en := Entry{Version: etagVersion(e.Response.Etag), Deleted: e.Request.Method == http.MethodDelete}
		if !en.Deleted {
			if e.Resource == nil || e.Resource.ID != id || en.Version == 0 {
				return nil, false
			}
			rec.checkMeta(id, en.Version, e.Resource)
			en.Marker = e.Resource.marker()
		}
		out = append(out, en)
	}
	return out, true
}

func (c *client) history(ctx context.Context, rep *replica, id string, count int) {
	in := Input{ID: id, Kind: KindHistory, Count: count}
	call := c.rec.now()
	resp, data, err := c.do(ctx, http.MethodGet, fmt.Sprintf("%s/%s/%s/_history?_count=%d", rep.base, resourceType, id, count), nil, nil)
	ret := c.rec.now()
	if err != nil {
		return
	}
	out := Output{Status: resp.StatusCode}
	switch resp.StatusCode {
	case http.StatusOK:
		var b historyBundle
		var ok bool
		if err := json.Unmarshal(data, &b); err == nil {
			out.Entries, ok = b.entries(c.rec, id)
		}
		if !ok {
			c.rec.problem("%s: malformed history bundle: %s", Describe(in, out), data)
			return
		}
		if len(out.Entries) > 0 {
			c.see(id, out.Entries[0].Version)
		}
	case http.StatusNotFound:
	default:
		if resp.StatusCode < 500 {
			c.rec.problem("%s: unexpected answer: %s", Describe(in, out), data)
		}
		return
	}
	c.rec.add(c.n, call, ret, in, out)
}

// write records both halves of a write; see the package doc.
func (c *client) write(call, ret int64, in Input, out Output) {
	c.rec.add(c.n, call, ret, in, out)
	switch {
	case out.Unknown:
		c.rec.add(c.n+c.nClients, call, ret, Input{ID: in.ID, Kind: KindComplete, Write: in.Write}, Output{Unknown: true})
	case out.Version > 0:
		c.rec.add(c.n+c.nClients, call, ret, Input{ID: in.ID, Kind: KindComplete, Write: in.Write, Version: out.Version}, Output{Status: http.StatusOK})
		c.rec.mu.Lock()
		c.rec.acked = append(c.rec.acked, ackedWrite{id: in.ID, write: in.Write, marker: in.Marker, version: out.Version, deleted: in.Kind == KindDelete})
		c.rec.mu.Unlock()
	}
}

func (c *client) put(ctx context.Context, rep *replica, id string, ifMatch int) {
	w := int(c.writes.Add(1))
	in := Input{ID: id, Kind: KindPut, Write: w, Marker: "w" + strconv.Itoa(w), IfMatch: ifMatch}
	hdr := map[string]string{}
	if ifMatch > 0 {
		hdr["If-Match"] = fmt.Sprintf(`W/"%d"`, ifMatch)
	}
	call := c.rec.now()
	resp, data, err := c.do(ctx, http.MethodPut, rep.base+"/"+resourceType+"/"+id, hdr, body(id, in.Marker))
	ret := c.rec.now()
	if err != nil {
		c.writeError(call, ret, in, err)
		return
	}
	out := Output{Status: resp.StatusCode}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusCreated:
		out.Version = etagVersion(resp.Header.Get("ETag"))
		var r resource
		if err := json.Unmarshal(data, &r); err != nil || r.ID != id || out.Version == 0 {
			c.rec.problem("%s: %d with a body that does not match its ETag %q: %s", Describe(in, out), resp.StatusCode, resp.Header.Get("ETag"), data)
		}
		c.rec.checkMeta(id, out.Version, &r)
		out.Marker = r.marker()
		c.see(id, out.Version)
	case http.StatusPreconditionFailed, http.StatusConflict:
	default:
		if resp.StatusCode < 500 {
			c.rec.problem("%s: unexpected answer: %s", Describe(in, out), data)
		}
		out = Output{Unknown: true}
	}
	c.write(call, ret, in, out)
}

func (c *client) delete(ctx context.Context, rep *replica, id string) {
	w := int(c.writes.Add(1))
	in := Input{ID: id, Kind: KindDelete, Write: w}
	call := c.rec.now()
	resp, data, err := c.do(ctx, http.MethodDelete, rep.base+"/"+resourceType+"/"+id, nil, nil)
	ret := c.rec.now()
	if err != nil {
		c.writeError(call, ret, in, err)
		return
	}
	out := Output{Status: resp.StatusCode}
	switch resp.StatusCode {
	case http.StatusOK, http.StatusNoContent:
		out.Version = etagVersion(resp.Header.Get("ETag"))
		c.see(id, out.Version)
	case http.StatusConflict:
	default:
		if resp.StatusCode < 500 {
			c.rec.problem("%s: unexpected answer: %s", Describe(in, out), data)
		}
		out = Output{Unknown: true}
	}
	c.write(call, ret, in, out)
}

// txBundle is the transaction Bundle of entries.
func txBundle(entries []txEntry) []byte {
	type request struct {
		Method  string `json:"method"`
		URL     string `json:"url"`
		IfMatch string `json:"ifMatch,omitempty"`
	}
	type entry struct {
		Resource json.RawMessage `json:"resource"`
		Request  request         `json:"request"`
	}
	b := struct {
		ResourceType string  `json:"resourceType"`
		Type         string  `json:"type"`
		Entry        []entry `json:"entry"`
	}{ResourceType: "Bundle", Type: "transaction"}
	for _, e := range entries {
		r := request{Method: http.MethodPut, URL: resourceType + "/" + e.id}
		if e.ifMatch > 0 {
			r.IfMatch = fmt.Sprintf(`W/"%d"`, e.ifMatch)
		}
		b.Entry = append(b.Entry, entry{Resource: body(e.id, e.marker), Request: r})
	}
	data, _ := json.Marshal(b)
	return data
}

// txResponse is the part of a transaction-response Bundle the client
// checks.
type txResponse struct {
	ResourceType string `json:"resourceType"`
	Type         string `json:"type"`
	Entry        []struct {
		Resource *resource `json:"resource"`
		Response struct {
			Status string `json:"status"`
			Etag   string `json:"etag"`
		} `json:"response"`
	} `json:"entry"`
}

// tx sends a transaction Bundle of PUT entries. A committed transaction
// is recorded at once: per entry the claim (KindTxPut) and the
// completion, and the commit (KindTxEnd). A 409 or 412 means the
// transaction did not commit, but some of its entries may have written a
// version (hidden for good) before another one failed; without an
// answer, or with a 5xx, it may also have committed. Such a transaction
// is recorded after the run by resolveTxs, from what the bucket holds.
//
// The request does not end with the run: once its journal is written a
// transaction commits detached from its client, so a client that gave up
// would leave a commit that may land any time later. Transactions get
// the answer instead (within txHTTP's long timeout).
func (c *client) tx(ctx context.Context, rep *replica, entries []txEntry) {
	t := int(c.txs.Add(1))
	for i := range entries {
		w := int(c.writes.Add(1))
		entries[i].write, entries[i].marker = w, "w"+strconv.Itoa(w)
	}
	ins := make([]Input, len(entries))
	var tes []TxEntry
	for i, e := range entries {
		ins[i] = Input{ID: e.id, Kind: KindTxPut, Write: e.write, Marker: e.marker, IfMatch: e.ifMatch, Tx: t}
		tes = append(tes, TxEntry{ID: e.id, Write: e.write})
	}
	end := Input{Kind: KindTxEnd, Tx: t, Entries: tes}
	hdr := map[string]string{"Prefer": "return=representation"}
	call := c.rec.now()
	resp, data, err := c.doWith(context.WithoutCancel(ctx), c.txHTTP, http.MethodPost, rep.base+"/", hdr, txBundle(entries))
	ret := c.rec.now()
	outcome, status := txUnknown, 0
	outs := make([]Output, len(entries))
	for i := range outs {
		outs[i] = Output{Unknown: true}
	}
	switch {
	case err != nil && notSent(err):
		c.rec.mu.Lock()
		c.rec.notSent++
		c.rec.mu.Unlock()
		return
	case err != nil:
	case resp.StatusCode == http.StatusOK:
		status = resp.StatusCode
		var b txResponse
		if err := json.Unmarshal(data, &b); err != nil || b.ResourceType != "Bundle" || b.Type != "transaction-response" || len(b.Entry) != len(entries) {
			c.rec.problem("transaction t%d: 200 with a malformed transaction-response: %s", t, data)
			break
		}
		good := true
		for i, be := range b.Entry {
			code, _, _ := strings.Cut(be.Response.Status, " ")
			st, _ := strconv.Atoi(code)
			out := Output{Status: st, Version: etagVersion(be.Response.Etag)}
			if be.Resource != nil {
				out.Marker = be.Resource.marker()
			}
			if (st != http.StatusOK && st != http.StatusCreated) || out.Version == 0 || be.Resource == nil ||
				be.Resource.ID != entries[i].id {
				c.rec.problem("transaction t%d: entry %d: %s: malformed response entry: %s", t, i, Describe(ins[i], out), data)
				good = false
			}
			c.rec.checkMeta(entries[i].id, out.Version, be.Resource)
			outs[i] = out
		}
		if !good {
			for i := range outs {
				outs[i] = Output{Unknown: true}
			}
			break
		}
		outcome = txCommitted
		for i, e := range entries {
			c.see(e.id, outs[i].Version)
		}
	case resp.StatusCode == http.StatusConflict || resp.StatusCode == http.StatusPreconditionFailed:
		outcome, status = txFailed, resp.StatusCode
	default:
		status = resp.StatusCode
		if resp.StatusCode < 500 {
			c.rec.problem("transaction t%d: unexpected answer %d: %s", t, resp.StatusCode, data)
		}
	}
	if outcome == txCommitted {
		for i := range entries {
			c.write(call, ret, ins[i], outs[i])
		}
		c.rec.add(c.n, call, ret, end, Output{Status: http.StatusOK})
	}
	// Otherwise resolveTxs records the transaction once the run is over.
	c.rec.mu.Lock()
	c.rec.txs = append(c.rec.txs, txRecord{tx: t, entries: entries, outcome: outcome, status: status, client: c.n, call: call, ret: ret})
	c.rec.mu.Unlock()
}

// resolveTxs records the transactions whose clients did not learn that
// they committed, from what the bucket holds once every replica has
// stopped working on them: the version objects carry each entry's marker
// and transaction id, and the journal the outcome. An entry that wrote a
// version is recorded as a claim of that version (its pointer half of
// unknown outcome), one that wrote none not at all, and the commit only
// when the journal says committed, each over the transaction's interval
// plus UnknownWindow (a request the server had sent may land after its
// answer). The history stays as strict as the model: the claims still
// have to fit the version numbers, and the reads have to see the commit
// at one instant or not at all.
func resolveTxs(rec *recorder, st *storeSnapshot) []string {
	type at struct {
		id      string
		version int
		tx      string
	}
	byMarker := map[string]at{}
	for id, vs := range st.versions {
		for v, sv := range vs {
			if sv.tx != "" && !sv.deleted {
				byMarker[sv.marker] = at{id, v, sv.tx}
			}
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var bad []string
	window := int64(UnknownWindow)
	for i := range rec.txs {
		t := &rec.txs[i]
		if t.outcome == txCommitted {
			continue
		}
		txID := ""
		var tes []TxEntry
		for _, e := range t.entries {
			a, ok := byMarker[e.marker]
			if !ok {
				continue
			}
			if a.id != e.id || (txID != "" && a.tx != txID) {
				bad = append(bad, fmt.Sprintf("transaction t%d: %s (%s) is stored as %s version %d of transaction %s", t.tx, e.marker, e.id, a.id, a.version, a.tx))
				continue
			}
			txID = a.tx
			in := Input{ID: e.id, Kind: KindTxPut, Write: e.write, Marker: e.marker, IfMatch: e.ifMatch, Tx: t.tx}
			rec.ops = append(rec.ops,
				porcupine.Operation{ClientId: t.client, Input: in, Call: t.call, Output: Output{Version: a.version}, Return: t.ret + window},
				porcupine.Operation{ClientId: t.client + 1000, Input: Input{ID: e.id, Kind: KindComplete, Write: e.write}, Call: t.call, Output: Output{Unknown: true}, Return: t.ret + window})
			rec.byKind["tx-put (resolved)"]++
			tes = append(tes, TxEntry{ID: e.id, Write: e.write})
		}
		switch {
		case txID == "":
			t.resolved = "wrote nothing"
		case st.journals[txID].status == "committed":
			t.resolved = "committed"
			if len(tes) != len(t.entries) {
				bad = append(bad, fmt.Sprintf("transaction t%d committed (journal %s) with %d of its %d entries written", t.tx, txID, len(tes), len(t.entries)))
			}
			rec.ops = append(rec.ops, porcupine.Operation{ClientId: t.client, Input: Input{Kind: KindTxEnd, Tx: t.tx, Entries: tes},
				Call: t.call, Output: Output{Status: 200}, Return: t.ret + window})
			rec.byKind["tx-commit (resolved)"]++
		default:
			t.resolved = "aborted, " + strconv.Itoa(len(tes)) + " hidden"
			if len(tes) == len(t.entries) {
				t.resolved = "aborted, all hidden"
			}
		}
	}
	return bad
}

// writeError records a write that got no answer: unknown, unless the
// request provably never left the client.
func (c *client) writeError(call, ret int64, in Input, err error) {
	if notSent(err) {
		c.rec.mu.Lock()
		c.rec.notSent++
		c.rec.mu.Unlock()
		return
	}
	c.write(call, ret, in, Output{Unknown: true})
}

// finalHistory reads the whole instance history of id (every page).
func finalHistory(ctx context.Context, hc *http.Client, rec *recorder, base, id string) ([]Entry, int, error) {
	url := fmt.Sprintf("%s/%s/%s/_history?_count=1000", base, resourceType, id)
	var all []Entry
	for pages := 0; url != "" && pages < 100; pages++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err != nil {
			return nil, 0, err
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, 0, err
		}
		if resp.StatusCode == http.StatusNotFound && pages == 0 {
			return nil, http.StatusNotFound, nil
		}
		if resp.StatusCode != http.StatusOK {
			return nil, resp.StatusCode, fmt.Errorf("history of %s: %s: %s", id, resp.Status, data)
		}
		var b historyBundle
		if err := json.Unmarshal(data, &b); err != nil {
			return nil, 0, fmt.Errorf("history of %s: %w", id, err)
		}
		es, ok := b.entries(rec, id)
		if !ok {
			return nil, 0, fmt.Errorf("history of %s: malformed entry in %s", id, data)
		}
		all = append(all, es...)
		url = b.next()
	}
	return all, http.StatusOK, nil
}

// storedVersion is one version object as the bucket holds it.
type storedVersion struct {
	tx      string // transaction_id: "" for a single write
	marker  string
	deleted bool
}

// journal is one transaction journal as the bucket holds it.
type journal struct {
	status  string
	entries []journalEntry
}

// journalEntry is a version a journal lists.
type journalEntry struct {
	id      string
	version int
}

// storeSnapshot is what the bucket holds of the test's resources after
// the run, read directly from MinIO: every version object of each id
// (hidden ones too) and every transaction journal.
type storeSnapshot struct {
	versions map[string]map[int]storedVersion
	journals map[string]journal
}

// checkFinal checks the final histories against the acknowledged writes,
// the transactions and the bucket: each history is newest first; the
// stored versions are dense from 1; a version is missing from history
// exactly when it belongs to a transaction whose journal says aborted,
// and then it is an entry of a transaction that was not acknowledged; a
// visible version of a transaction belongs to a committed journal, all of
// whose versions are visible; every acknowledged write is at its version;
// a transaction that failed left nothing visible, one of unknown outcome
// all of its entries or none; no write is stored twice; no journal is
// still open.
func checkFinal(final map[string][]Entry, acked []ackedWrite, txs []txRecord, st *storeSnapshot) []string {
	var bad []string
	badf := func(format string, args ...any) { bad = append(bad, fmt.Sprintf(format, args...)) }
	// The writes of transactions that were not acknowledged, by id and
	// marker.
	unacked := map[string]map[string]bool{}
	for _, t := range txs {
		if t.outcome == txCommitted {
			continue
		}
		for _, e := range t.entries {
			if unacked[e.id] == nil {
				unacked[e.id] = map[string]bool{}
			}
			unacked[e.id][e.marker] = true
		}
	}
	visible := map[string]map[int]Entry{}
	for id, es := range final {
		visible[id] = map[int]Entry{}
		for i, e := range es {
			if i > 0 && e.Version >= es[i-1].Version {
				badf("%s: history entry %d is version %d after version %d (newest first)", id, i, e.Version, es[i-1].Version)
			}
			visible[id][e.Version] = e
		}
		stored := st.versions[id]
		top := 0
		for v := range stored {
			top = max(top, v)
		}
		if len(stored) != top {
			badf("%s: the bucket holds %d versions numbered up to %d (versions must be dense)", id, len(stored), top)
		}
		markers := map[string]int{}
		for v := 1; v <= top; v++ {
			sv, ok := stored[v]
			if !ok {
				continue
			}
			if !sv.deleted {
				if prev, dup := markers[sv.marker]; dup {
					badf("%s: write %s is stored twice, as versions %d and %d", id, sv.marker, prev, v)
				}
				markers[sv.marker] = v
			}
			status := ""
			if sv.tx != "" {
				j, ok := st.journals[sv.tx]
				if !ok {
					badf("%s: version %d belongs to transaction %s, which has no journal", id, v, sv.tx)
				}
				status = j.status
			}
			e, seen := visible[id][v]
			switch {
			case seen && (e.Deleted != sv.deleted || (!e.Deleted && e.Marker != sv.marker)):
				badf("%s: history shows version %d as %s, the bucket holds %s", id, v, entryText(e.Marker, e.Deleted), entryText(sv.marker, sv.deleted))
			case seen && sv.tx != "" && status != "committed":
				badf("%s: version %d of transaction %s (journal %q) is visible", id, v, sv.tx, status)
			case !seen && sv.tx == "":
				badf("%s: version %d, a single write (%s), is missing from history", id, v, entryText(sv.marker, sv.deleted))
			case !seen && status != "aborted":
				badf("%s: version %d of transaction %s (journal %q) is missing from history", id, v, sv.tx, status)
			case !seen && !unacked[id][sv.marker]:
				badf("%s: hidden version %d holds %s, which is no entry of an unacknowledged transaction", id, v, entryText(sv.marker, sv.deleted))
			}
		}
		for v := range visible[id] {
			if _, ok := stored[v]; !ok {
				badf("%s: history shows version %d, which the bucket does not hold", id, v)
			}
		}
	}
	for txID, j := range st.journals {
		if j.status != "committed" && j.status != "aborted" {
			badf("journal %s is %q after the repair", txID, j.status)
		}
		if j.status != "committed" {
			continue
		}
		for _, e := range j.entries {
			if _, tracked := final[e.id]; !tracked {
				continue
			}
			sv, ok := st.versions[e.id][e.version]
			_, seen := visible[e.id][e.version]
			if !ok || sv.tx != txID || !seen {
				badf("committed transaction %s: %s version %d is not its visible version", txID, e.id, e.version)
			}
		}
	}
	for _, a := range acked {
		es := final[a.id]
		e, ok := visible[a.id][a.version]
		switch {
		case !ok:
			badf("%s: acknowledged write w%d (version %d) is missing: the history has %d versions", a.id, a.write, a.version, len(es))
		case a.deleted && !e.Deleted:
			badf("%s: acknowledged delete w%d made version %d, which holds %s", a.id, a.write, a.version, e.Marker)
		case !a.deleted && (e.Deleted || e.Marker != a.marker):
			badf("%s: acknowledged write %s made version %d, which holds %s", a.id, a.marker, a.version, entryText(e.Marker, e.Deleted))
		}
	}
	inHistory := func(id, marker string) bool {
		for _, e := range final[id] {
			if !e.Deleted && e.Marker == marker {
				return true
			}
		}
		return false
	}
	for _, t := range txs {
		n := 0
		for _, e := range t.entries {
			if inHistory(e.id, e.marker) {
				n++
			}
		}
		switch {
		case t.outcome == txFailed && n > 0:
			badf("transaction t%d failed (%d) but %d of its %d writes are visible", t.tx, t.status, n, len(t.entries))
		case t.outcome == txUnknown && n > 0 && n < len(t.entries):
			badf("transaction t%d (outcome unknown) is visible in part: %d of its %d writes", t.tx, n, len(t.entries))
		}
	}
	slices.Sort(bad)
	return bad
}

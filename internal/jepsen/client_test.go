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
	// stats
	byKind   map[string]int
	unknown  map[Kind]int
	notSent  int
	problems []string // answers no correct server gives (4xx the client did not provoke)
}

type ackedWrite struct {
	id      string
	write   int
	marker  string
	version int
	deleted bool
}

func newRecorder() *recorder {
	return &recorder{t0: time.Now(), byKind: map[string]int{}, unknown: map[Kind]int{}}
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
	if in.Kind != KindComplete {
		r.byKind[key]++
	}
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
	rng      *rand.Rand
	rec      *recorder
	replicas []*replica
	epochs   [][]string    // the ids of each epoch
	epochLen time.Duration // how long clients work on one epoch's ids
	writes   *atomic.Int64
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
	resp, err := c.http.Do(req)
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
		case x < 68:
			c.put(ctx, rep, id, 0)
		case x < 88:
			// Mostly the version last seen (which may be stale by now),
			// sometimes an older one, to get both outcomes.
			v := max(c.seen[id], 1)
			if c.rng.IntN(5) == 0 && v > 1 {
				v--
			}
			c.put(ctx, rep, id, v)
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
		if err := json.Unmarshal(data, &r); err != nil || r.ID != in.ID || r.Meta.VersionID != strconv.Itoa(out.Version) {
			c.rec.problem("%s: 200 with a body that does not match its ETag %q: %s", Describe(in, out), resp.Header.Get("ETag"), data)
		}
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

// entries converts the bundle; ok is false when an entry is malformed.
func (b *historyBundle) entries() ([]Entry, bool) {
	out := make([]Entry, 0, len(b.Entry))
	for _, e := range b.Entry {
		en := Entry{Version: etagVersion(e.Response.Etag), Deleted: e.Request.Method == http.MethodDelete}
		if !en.Deleted {
			if e.Resource == nil || e.Resource.Meta.VersionID != strconv.Itoa(en.Version) {
				return nil, false
			}
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
			out.Entries, ok = b.entries()
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
		if err := json.Unmarshal(data, &r); err != nil || r.Meta.VersionID != strconv.Itoa(out.Version) {
			c.rec.problem("%s: %d with a body that does not match its ETag %q: %s", Describe(in, out), resp.StatusCode, resp.Header.Get("ETag"), data)
		}
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
func finalHistory(ctx context.Context, hc *http.Client, base, id string) ([]Entry, int, error) {
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
		es, ok := b.entries()
		if !ok {
			return nil, 0, fmt.Errorf("history of %s: malformed entry in %s", id, data)
		}
		all = append(all, es...)
		url = b.next()
	}
	return all, http.StatusOK, nil
}

// checkFinal checks the final histories against the acknowledged writes:
// versions dense N..1, every acknowledged write at its version exactly
// once, and no write (acknowledged or not) stored twice.
func checkFinal(final map[string][]Entry, acked []ackedWrite) []string {
	var bad []string
	for id, es := range final {
		seen := map[string]int{}
		for i, e := range es {
			if want := len(es) - i; e.Version != want {
				bad = append(bad, fmt.Sprintf("%s: history entry %d is version %d, want %d (versions must be dense, newest first)", id, i, e.Version, want))
				break
			}
			if !e.Deleted {
				if prev, dup := seen[e.Marker]; dup {
					bad = append(bad, fmt.Sprintf("%s: write %s is stored twice, as versions %d and %d", id, e.Marker, prev, e.Version))
				}
				seen[e.Marker] = e.Version
			}
		}
	}
	for _, a := range acked {
		es := final[a.id]
		i := len(es) - a.version
		if i < 0 || i >= len(es) {
			bad = append(bad, fmt.Sprintf("%s: acknowledged write w%d (version %d) is missing: the history has %d versions", a.id, a.write, a.version, len(es)))
			continue
		}
		e := es[i]
		switch {
		case a.deleted && !e.Deleted:
			bad = append(bad, fmt.Sprintf("%s: acknowledged delete w%d made version %d, which holds %s", a.id, a.write, a.version, e.Marker))
		case !a.deleted && (e.Deleted || e.Marker != a.marker):
			bad = append(bad, fmt.Sprintf("%s: acknowledged write %s made version %d, which holds %s", a.id, a.marker, a.version, entryText(e.Marker, e.Deleted)))
		}
	}
	slices.Sort(bad)
	return bad
}

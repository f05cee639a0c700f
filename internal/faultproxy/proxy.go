// Package faultproxy is a small HTTP reverse proxy for tests that sits
// between an S3 client and an S3-compatible server (MinIO) and injects the
// failures object storage shows in production: throttling (503 SlowDown),
// latency, connections cut before the request reaches the server, and
// requests that reach the server and take effect but whose response is lost
// ("timeout after the write landed"), the case that makes a retried
// conditional write fail its own precondition.
//
// The proxy forwards the request unchanged, Host header included, so
// SigV4 signatures computed for the proxy's address stay valid at the
// server. Faults are drawn per request from Rates with a seeded generator
// and counted by kind; SetRates switches them on and off while the proxy
// runs (for example off while the servers behind it start).
package faultproxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Fault is what the proxy does with one request.
type Fault int

// The faults, in the order Rates draws them.
const (
	// Pass forwards the request and its response unchanged.
	Pass Fault = iota
	// SlowDown answers 503 with the S3 error code SlowDown without
	// forwarding: the server never sees the request.
	SlowDown
	// Delay waits Rates.MaxDelay at most, then forwards.
	Delay
	// DropRequest closes the client connection without forwarding: the
	// server never sees the request.
	DropRequest
	// DropResponse forwards the request, waits for the server's complete
	// response (so a write has landed) and then closes the client
	// connection without answering.
	DropResponse
	// Hang forwards the request, waits for the server's response and then
	// holds the client connection open without answering for
	// Rates.HangFor (or until the client gives up), then closes it.
	Hang
	numFaults
)

var faultNames = [numFaults]string{"pass", "slowdown", "delay", "drop-request", "drop-response", "hang"}

func (f Fault) String() string {
	if f >= 0 && f < numFaults {
		return faultNames[f]
	}
	return fmt.Sprintf("Fault(%d)", int(f))
}

// Rates are the probabilities (0..1) of each fault per request; what is
// left to 1 passes. Only requests whose method is in Methods are touched
// (nil: every method).
type Rates struct {
	SlowDown, Delay, DropRequest, DropResponse, Hang float64
	// MaxDelay bounds Delay (default 200ms).
	MaxDelay time.Duration
	// HangFor is how long Hang holds a connection (default 5s).
	HangFor time.Duration
	// Methods restricts faults to these HTTP methods, e.g. PUT only.
	Methods []string
}

// ForwardTimeout bounds the forwarding of one request: a request the
// server has not answered by then is abandoned (answered 502), so nothing
// the proxy forwards lands later than this after it arrived.
const ForwardTimeout = 5 * time.Second

// Proxy is a running fault-injecting reverse proxy on 127.0.0.1.
type Proxy struct {
	target string // "http://host:port" of the server
	ln     net.Listener
	srv    *http.Server
	client *http.Client

	mu    sync.Mutex
	rates Rates
	rng   *rand.Rand

	counts [numFaults]atomic.Int64
	errors atomic.Int64 // requests the server could not be reached for
}

// New starts a proxy to target (an http:// URL) listening on a free
// 127.0.0.1 port. seed makes the sequence of fault decisions repeatable
// for a given request order. Faults are off until SetRates.
func New(target string, seed uint64) (*Proxy, error) {
	if !strings.HasPrefix(target, "http://") {
		return nil, fmt.Errorf("faultproxy: target %q must be an http:// URL", target)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("faultproxy: listening: %w", err)
	}
	p := &Proxy{
		target: strings.TrimSuffix(target, "/"),
		ln:     ln,
		rng:    rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		client: &http.Client{
			Transport: &http.Transport{
				Proxy:               nil,
				MaxIdleConnsPerHost: 64,
				IdleConnTimeout:     30 * time.Second,
				DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			},
			// Redirects are the client's business, not the proxy's.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// URL is the proxy's base URL, to be used as the S3 endpoint.
func (p *Proxy) URL() string { return "http://" + p.ln.Addr().String() }

// SetRates replaces the fault rates; the zero Rates turns faults off.
func (p *Proxy) SetRates(r Rates) {
	if r.MaxDelay <= 0 {
		r.MaxDelay = 200 * time.Millisecond
	}
	if r.HangFor <= 0 {
		r.HangFor = 5 * time.Second
	}
	p.mu.Lock()
	p.rates = r
	p.mu.Unlock()
}

// Counts returns how many requests met each fault so far (Pass included).
func (p *Proxy) Counts() map[Fault]int64 {
	out := make(map[Fault]int64, numFaults)
	for f := range numFaults {
		out[f] = p.counts[f].Load()
	}
	return out
}

// UpstreamErrors is the number of requests that could not be forwarded
// because the server did not answer (answered 502).
func (p *Proxy) UpstreamErrors() int64 { return p.errors.Load() }

// Close stops the proxy and cuts every connection through it.
func (p *Proxy) Close() error {
	err := p.srv.Close()
	p.client.CloseIdleConnections()
	return err
}

// decide draws the fault for one request and, for Delay, its length.
func (p *Proxy) decide(method string) (Fault, time.Duration, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.rates
	if len(r.Methods) > 0 && !slices.Contains(r.Methods, method) {
		return Pass, 0, 0
	}
	x := p.rng.Float64()
	for _, c := range []struct {
		f    Fault
		rate float64
	}{{SlowDown, r.SlowDown}, {Delay, r.Delay}, {DropRequest, r.DropRequest}, {DropResponse, r.DropResponse}, {Hang, r.Hang}} {
		if x < c.rate {
			var d time.Duration
			if c.f == Delay {
				d = time.Duration(p.rng.Int64N(int64(r.MaxDelay)) + 1)
			}
			return c.f, d, r.HangFor
		}
		x -= c.rate
	}
	return Pass, 0, 0
}

// slowDownBody is the error document S3 sends with a throttling 503.
const slowDownBody = `<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message><Resource>%s</Resource><RequestId>faultproxy</RequestId></Error>`

// ServeHTTP applies the drawn fault to one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fault, delay, hangFor := p.decide(r.Method)
	p.counts[fault].Add(1)
	switch fault {
	case SlowDown:
		// Drain the body so the connection stays usable for the retry.
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, slowDownBody, r.URL.Path)
		return
	case DropRequest:
		cut(w)
		return
	case Delay:
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	resp, body, err := p.forward(r)
	if err != nil {
		p.errors.Add(1)
		if r.Context().Err() != nil {
			return
		}
		http.Error(w, "faultproxy: "+err.Error(), http.StatusBadGateway)
		return
	}
	switch fault {
	case DropResponse:
		cut(w)
		return
	case Hang:
		t := time.NewTimer(hangFor)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
		}
		cut(w)
		return
	}
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
}

// forward sends r to the target and reads the whole response, so that the
// request has completed at the server whatever happens to the answer.
func (p *Proxy) forward(r *http.Request) (*http.Response, []byte, error) {
	// S3 request bodies here are small objects; reading them lets the
	// outgoing request carry an exact Content-Length.
	reqBody, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the request body: %w", err)
	}
	// The forwarded request must not die with the client's connection:
	// a write the client gave up on may still land, as it would on a real
	// network, and DropResponse needs the server's answer.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), ForwardTimeout)
	defer cancel()
	out, err := http.NewRequestWithContext(ctx, r.Method, p.target+r.URL.RequestURI(), bytes.NewReader(reqBody))
	if err != nil {
		return nil, nil, err
	}
	for k, vs := range r.Header {
		out.Header[k] = vs
	}
	out.Host = r.Host // part of the SigV4 signature
	out.ContentLength = int64(len(reqBody))
	resp, err := p.client.Do(out)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the response: %w", err)
	}
	resp.Header.Del("Content-Length") // set again from what is written
	return resp, body, nil
}

// cut closes the client connection without an HTTP answer.
func cut(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not an HTTP/1 connection: a 502 is the closest a handler gets.
		http.Error(w, "faultproxy: connection cut", http.StatusBadGateway)
		return
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // a reset, as a dropped connection looks like
	}
	_ = conn.Close()
}

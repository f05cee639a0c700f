// Package bulkclient is a Bulk Data export client: it kicks off an
// export, polls the status URL (honouring Retry-After, with backoff on
// 429/503 and transport errors), downloads every file of the manifest in
// parallel (gzip), verifies each file's line count against the manifest,
// and resumes an interrupted run from what it left in the output folder.
//
// The folder holds, besides the files, job.json (the status URL, written
// right after the kick-off) and manifest.json (once the job completed). A
// run in a folder with job.json polls that job instead of starting a new
// one; a file already there with the manifest's line count is not
// downloaded again. Files are written under a temporary name and renamed
// once complete and verified.
package bulkclient

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"fhirbucket/internal/clientkit"
)

// Defaults of Config.
const (
	DefaultParallel = 4
	DefaultRetries  = 8
)

// Config configures a Run.
type Config struct {
	// URL is the FHIR base of the server (required).
	URL string
	// Tenant, when set, is sent as X-Tenant-ID; Token as a bearer token.
	Tenant, Token string
	// Tokens, when set, gives the bearer token of each request (SMART
	// Backend Services: *smartclient.Source); not together with Token. A
	// 401 answer makes it forget its token (when it has an Invalidate
	// method) and the request is sent once more with a new one.
	Tokens clientkit.TokenSource
	// Level: "system" (default), "patient", or "group" with Group.
	Level, Group string
	// Types, Elements: _type and _elements; Since, Until: _since, _until
	// (FHIR instants, passed as given).
	Types, Elements []string
	Since, Until    string
	// Out is the output folder (required), created if missing.
	Out string
	// Parallel downloads at once (default DefaultParallel).
	Parallel int
	// Retries of one request after a 429, a 503, a 5xx download or no
	// answer (default DefaultRetries; negative: none).
	Retries int
	// RetryBase and RetryMax bound the backoff without Retry-After
	// (defaults 500ms and 30s); PollMax caps the wait between two polls
	// (default 1m).
	RetryBase, RetryMax, PollMax time.Duration
	// HTTP is the client (default one with a 10-minute timeout).
	HTTP *http.Client
	// OnEvent receives one-line messages (kick-off, resume, files).
	OnEvent func(msg string)
}

// Stats is what a run has done so far; safe to read while it runs.
type Stats struct {
	Progress                  atomic.Value // string: the last X-Progress
	Files, FilesDone, Skipped atomic.Int64
	Bytes                     atomic.Int64 // downloaded (decoded)
	Lines                     atomic.Int64
	Downloading               atomic.Bool
}

// Result of a completed run.
type Result struct {
	StatusURL  string
	Files      int // in the manifest
	Downloaded int
	Skipped    int // already complete
	Lines      int64
}

// Manifest is the part of the Bulk Data manifest the client uses.
type Manifest struct {
	TransactionTime string `json:"transactionTime"`
	Output          []File `json:"output"`
	Deleted         []File `json:"deleted,omitempty"`
	Error           []File `json:"error"`
}

// File is one manifest entry.
type File struct {
	Type  string `json:"type"`
	URL   string `json:"url"`
	Count int    `json:"count"`
}

type client struct {
	cfg   Config
	stats *Stats
}

// Run runs one export into cfg.Out, reporting into stats (may be nil).
func Run(ctx context.Context, cfg Config, stats *Stats) (*Result, error) {
	if cfg.URL == "" || cfg.Out == "" {
		return nil, errors.New("bulkclient: Config.URL and Config.Out are required")
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	if cfg.Parallel <= 0 {
		cfg.Parallel = DefaultParallel
	}
	switch {
	case cfg.Retries == 0:
		cfg.Retries = DefaultRetries
	case cfg.Retries < 0:
		cfg.Retries = 0
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = 500 * time.Millisecond
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 30 * time.Second
	}
	if cfg.PollMax <= 0 {
		cfg.PollMax = time.Minute
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 10 * time.Minute}
	}
	if cfg.Token != "" && cfg.Tokens != nil {
		return nil, fmt.Errorf("bulkclient: Token and Tokens: give one, not both")
	}
	if cfg.OnEvent == nil {
		cfg.OnEvent = func(string) {}
	}
	if stats == nil {
		stats = &Stats{}
	}
	c := &client{cfg: cfg, stats: stats}
	if err := os.MkdirAll(cfg.Out, 0o755); err != nil {
		return nil, err
	}
	man, status, err := c.manifest(ctx)
	if err != nil {
		return nil, err
	}
	return c.downloadAll(ctx, man, status)
}

type jobFile struct {
	StatusURL string `json:"statusUrl"`
}

// manifest kicks off (or finds the job of an interrupted run) and polls
// until the manifest is there.
func (c *client) manifest(ctx context.Context) (*Manifest, string, error) {
	jobPath, manPath := filepath.Join(c.cfg.Out, "job.json"), filepath.Join(c.cfg.Out, "manifest.json")
	var job jobFile
	if data, err := os.ReadFile(jobPath); err == nil {
		if err := json.Unmarshal(data, &job); err != nil || job.StatusURL == "" {
			return nil, "", fmt.Errorf("%s: not a job file of an earlier run: remove it to start afresh", jobPath)
		}
		if data, err := os.ReadFile(manPath); err == nil {
			var m Manifest
			if err := json.Unmarshal(data, &m); err != nil {
				return nil, "", fmt.Errorf("%s: %w", manPath, err)
			}
			c.cfg.OnEvent("resuming the downloads of " + job.StatusURL)
			return &m, job.StatusURL, nil
		}
		c.cfg.OnEvent("resuming the export " + job.StatusURL)
	} else {
		st, err := c.kickoff(ctx)
		if err != nil {
			return nil, "", err
		}
		job.StatusURL = st
		data, _ := json.Marshal(job)
		if err := writeFile(jobPath, data); err != nil {
			return nil, "", err
		}
		c.cfg.OnEvent("export started: " + st)
	}
	body, err := c.poll(ctx, job.StatusURL)
	if err != nil {
		return nil, "", err
	}
	var m Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, "", fmt.Errorf("the manifest is not JSON: %w", err)
	}
	if err := writeFile(manPath, body); err != nil {
		return nil, "", err
	}
	return &m, job.StatusURL, nil
}

func writeFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (c *client) kickoffURL() (string, error) {
	u := c.cfg.URL
	switch c.cfg.Level {
	case "", "system":
		u += "/$export"
	case "patient":
		u += "/Patient/$export"
	case "group":
		if c.cfg.Group == "" {
			return "", errors.New("bulkclient: group level needs a Group id")
		}
		u += "/Group/" + url.PathEscape(c.cfg.Group) + "/$export"
	default:
		return "", fmt.Errorf("bulkclient: unknown level %q", c.cfg.Level)
	}
	q := url.Values{}
	if len(c.cfg.Types) > 0 {
		q.Set("_type", strings.Join(c.cfg.Types, ","))
	}
	if len(c.cfg.Elements) > 0 {
		q.Set("_elements", strings.Join(c.cfg.Elements, ","))
	}
	if c.cfg.Since != "" {
		q.Set("_since", c.cfg.Since)
	}
	if c.cfg.Until != "" {
		q.Set("_until", c.cfg.Until)
	}
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return u, nil
}

func (c *client) kickoff(ctx context.Context) (string, error) {
	u, err := c.kickoffURL()
	if err != nil {
		return "", err
	}
	resp, body, err := c.do(ctx, u, map[string]string{"Prefer": "respond-async", "Accept": "application/fhir+json"}, true)
	if err != nil {
		return "", fmt.Errorf("kick-off: %w", err)
	}
	if resp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("kick-off %s: %s: %s", u, resp.Status, snippet(body))
	}
	loc := resp.Header.Get("Content-Location")
	if loc == "" {
		return "", fmt.Errorf("kick-off %s: 202 without Content-Location", u)
	}
	return loc, nil
}

// poll asks the status URL until it answers 200 (the manifest) or fails.
// A 202 is followed after its Retry-After (else backoff); 429 and 503 too.
func (c *client) poll(ctx context.Context, status string) ([]byte, error) {
	for n := 0; ; n++ {
		resp, body, err := c.do(ctx, status, map[string]string{"Accept": "application/json"}, true)
		if err != nil {
			return nil, fmt.Errorf("polling %s: %w", status, err)
		}
		switch resp.StatusCode {
		case http.StatusOK:
			return body, nil
		case http.StatusAccepted:
			if p := resp.Header.Get("X-Progress"); p != "" {
				c.stats.Progress.Store(p)
			}
		default:
			return nil, fmt.Errorf("the export failed: %s: %s", resp.Status, snippet(body))
		}
		wait, ok := clientkit.RetryAfter(resp.Header.Get("Retry-After"), time.Now())
		if !ok {
			wait = clientkit.Backoff(c.cfg.RetryBase, c.cfg.PollMax, n)
		}
		if err := sleep(ctx, min(wait, c.cfg.PollMax)); err != nil {
			return nil, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// do sends a GET, retrying 429, 503 and transport errors (and with
// whole, reads the body; else the caller reads and closes it).
func (c *client) do(ctx context.Context, u string, hdr map[string]string, whole bool) (*http.Response, []byte, error) {
	inv, _ := c.cfg.Tokens.(interface{ Invalidate() })
	renewed := false
	for n := 0; ; n++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, nil, err
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		req.Header.Set("User-Agent", "fhirbucket-export")
		if c.cfg.Tenant != "" {
			req.Header.Set("X-Tenant-ID", c.cfg.Tenant)
		}
		if c.cfg.Token != "" {
			req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
		}
		if c.cfg.Tokens != nil {
			tok, err := c.cfg.Tokens.Token(ctx)
			if err != nil {
				return nil, nil, fmt.Errorf("getting an access token: %w", err)
			}
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := c.cfg.HTTP.Do(req)
		var wait time.Duration
		switch {
		case ctx.Err() != nil:
			return nil, nil, ctx.Err()
		case err == nil && resp.StatusCode == http.StatusUnauthorized && inv != nil && !renewed:
			// The token expired or was revoked early: once, a new one.
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			inv.Invalidate()
			renewed = true
			n--
			continue
		case err != nil:
			if n >= c.cfg.Retries {
				return nil, nil, err
			}
			wait = clientkit.Backoff(c.cfg.RetryBase, c.cfg.RetryMax, n)
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable:
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if n >= c.cfg.Retries {
				return resp, body, nil
			}
			var ok bool
			if wait, ok = clientkit.RetryAfter(resp.Header.Get("Retry-After"), time.Now()); !ok {
				wait = clientkit.Backoff(c.cfg.RetryBase, c.cfg.RetryMax, n)
			}
		default:
			if !whole {
				return resp, nil, nil
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
			return resp, body, err
		}
		if err := sleep(ctx, wait); err != nil {
			return nil, nil, err
		}
	}
}

func snippet(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// fileName is the local name of a manifest file: the server's name
// parameter, else the URL's last path segment; never a path.
func fileName(u string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return "", err
	}
	name := pu.Query().Get("name")
	if name == "" {
		name = filepath.Base(pu.Path)
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) || name == "job.json" || name == "manifest.json" {
		return "", fmt.Errorf("no usable file name in %q", u)
	}
	return name, nil
}

// countLines counts the lines of a complete local file; -1 when absent.
func countLines(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	return lines(f)
}

func lines(r io.Reader) int64 {
	var n int64
	br := bufio.NewReaderSize(r, 1<<16)
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 && chunk[len(chunk)-1] == '\n' {
			n++
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return n
		}
	}
}

func (c *client) downloadAll(ctx context.Context, m *Manifest, status string) (*Result, error) {
	files := append(append(append([]File{}, m.Output...), m.Deleted...), m.Error...)
	res := &Result{StatusURL: status, Files: len(files)}
	c.stats.Files.Store(int64(len(files)))
	c.stats.Downloading.Store(true)
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, c.cfg.Parallel)
	for _, f := range files {
		name, err := fileName(f.URL)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		path := filepath.Join(c.cfg.Out, name)
		if countLines(path) == int64(f.Count) {
			c.stats.Skipped.Add(1)
			c.stats.FilesDone.Add(1)
			mu.Lock()
			res.Skipped++
			res.Lines += int64(f.Count)
			mu.Unlock()
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return res, ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			n, err := c.download(ctx, f, path)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				c.cfg.OnEvent(fmt.Sprintf("%s: failed: %v", name, err))
				return
			}
			res.Downloaded++
			res.Lines += n
			c.stats.FilesDone.Add(1)
			c.cfg.OnEvent(fmt.Sprintf("%s: %d lines", name, n))
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("%d of %d files failed: %w", len(errs), len(files), errors.Join(errs...))
	}
	return res, nil
}

// countingWriter counts the bytes and lines written through it.
type countingWriter struct {
	w     io.Writer
	stats *Stats
	lines int64
}

func (cw *countingWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.stats.Bytes.Add(int64(n))
	for _, b := range p[:n] {
		if b == '\n' {
			cw.lines++
		}
	}
	return n, err
}

// download fetches one file into path (through path.part), asking for
// gzip, and checks its line count. A failed attempt is retried from the
// start.
func (c *client) download(ctx context.Context, f File, path string) (int64, error) {
	var last error
	for n := 0; n <= c.cfg.Retries; n++ {
		if n > 0 {
			if err := sleep(ctx, clientkit.Backoff(c.cfg.RetryBase, c.cfg.RetryMax, n-1)); err != nil {
				return 0, err
			}
		}
		lines, retry, err := c.fetch(ctx, f, path)
		if err == nil {
			return lines, nil
		}
		if !retry || ctx.Err() != nil {
			return 0, err
		}
		last = err
	}
	return 0, last
}

func (c *client) fetch(ctx context.Context, f File, path string) (lines int64, retry bool, err error) {
	resp, _, err := c.do(ctx, f.URL, map[string]string{"Accept": "application/fhir+ndjson", "Accept-Encoding": "gzip"}, false)
	if err != nil {
		return 0, true, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, resp.StatusCode >= 500, fmt.Errorf("%s: %s", resp.Status, snippet(body))
	}
	var body io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return 0, true, fmt.Errorf("gzip: %w", err)
		}
		body = zr
	}
	tmp := path + ".part"
	out, err := os.Create(tmp)
	if err != nil {
		return 0, false, err
	}
	cw := &countingWriter{w: out, stats: c.stats}
	_, err = io.Copy(cw, body)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	c.stats.Lines.Add(cw.lines)
	if err != nil {
		os.Remove(tmp)
		return 0, true, err
	}
	if cw.lines != int64(f.Count) {
		os.Remove(tmp)
		return 0, true, fmt.Errorf("%d lines, the manifest says %d", cw.lines, f.Count)
	}
	return cw.lines, false, os.Rename(tmp, path)
}

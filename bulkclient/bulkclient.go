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

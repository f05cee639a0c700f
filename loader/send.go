package loader

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/internal/clientkit"
)

const (
	// maxAnswerBytes bounds the answer read for one Bundle: a
	// batch-response to a large transaction file can be big, but not
	// without limit.
	maxAnswerBytes = 256 << 20
	userAgent      = "fhirbucket-load"
)

// answer is one HTTP response, read whole.
type answer struct {
	status int
	header http.Header
	body   []byte
	// readErr is set when the status arrived but the body could not be
	// read to its end.
	readErr error
}

// transportError is a failure to get any answer.
type transportError struct {
	err error
	// sent reports whether the whole request had been written: the
	// server may then have applied it.
	sent bool
}

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// send posts one Bundle, retrying what may be retried, and records what
// became of its entries.
func (l *Loader) send(ctx context.Context, j job) {
	if ctx.Err() != nil {
		// Interrupted before this Bundle was sent: it is left for a later
		// run, not a failure.
		return
	}
	retries := 0
	var a *answer
	for {
		var err error
		a, err = l.attempt(ctx, j)
		var wait time.Duration
		switch {
		case ctx.Err() != nil:
			l.record(j.file, true, len(j.entries), j.failAll(0, "interrupted before an answer"))
			return
		case err != nil:
			var te *transportError
			canRetry := errors.As(err, &te) && (!te.sent || j.idempotent())
			if !canRetry || retries >= l.cfg.Retries {
				msg := "no answer: " + err.Error()
				if canRetry {
					msg += fmt.Sprintf(" (after %d retries)", retries)
				} else if te != nil && te.sent {
					msg += " (the request was sent and has POST entries, so it was not sent again: the server may have applied it)"
				}
				l.record(j.file, true, len(j.entries), j.failAll(0, msg))
				return
			}
			wait = l.backoff(retries)
		case a.status == http.StatusTooManyRequests || a.status == http.StatusServiceUnavailable:
			if retries >= l.cfg.Retries {
				msg := answerDiagnostics(a)
				if retries > 0 {
					msg += fmt.Sprintf(" (after %d retries)", retries)
				}
				l.record(j.file, true, len(j.entries), j.failAll(a.status, msg))
				return
			}
			var ok bool
			if wait, ok = retryAfter(a.header.Get("Retry-After"), time.Now()); !ok {
				wait = l.backoff(retries)
			}
		default:
			l.record(j.file, true, len(j.entries), j.interpret(a))
			return
		}
		retries++
		l.addRetry()
		if l.sleep(ctx, wait) != nil {
			l.record(j.file, true, len(j.entries), j.failAll(0, "interrupted before an answer"))
			return
		}
	}
}

// attempt sends the Bundle once and reads the answer within the timeout.
// The error is a *transportError when no answer came, or ctx's.
func (l *Loader) attempt(ctx context.Context, j job) (*answer, error) {
	actx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	defer cancel()
	var wrote atomic.Bool
	trace := &httptrace.ClientTrace{WroteRequest: func(i httptrace.WroteRequestInfo) {
		if i.Err == nil {
			wrote.Store(true)
		}
	}}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(actx, trace), http.MethodPost, l.base+"/", bytes.NewReader(j.body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/fhir+json")
	req.Header.Set("Accept", "application/fhir+json")
	req.Header.Set("Prefer", "return=minimal")
	req.Header.Set("User-Agent", userAgent)
	if l.cfg.Tenant != "" {
		req.Header.Set("X-Tenant-ID", l.cfg.Tenant)
	}
	if l.cfg.Token != "" {
		req.Header.Set("Authorization", "Bearer "+l.cfg.Token)
	}
	if l.cfg.Tokens != nil {
		tok, err := l.cfg.Tokens.Token(actx)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, fmt.Errorf("getting an access token: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := l.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if actx.Err() != nil {
			err = fmt.Errorf("no answer within %s: %w", l.cfg.Timeout, err)
		}
		return nil, &transportError{err: err, sent: wrote.Load()}
	}
	defer resp.Body.Close()
	a := &answer{status: resp.StatusCode, header: resp.Header}
	a.body, a.readErr = io.ReadAll(io.LimitReader(resp.Body, maxAnswerBytes+1))
	if a.readErr == nil && len(a.body) > maxAnswerBytes {
		a.readErr = fmt.Errorf("answer larger than %d MiB", maxAnswerBytes>>20)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return a, nil
}

// backoff is the wait before retry number n+1 without a Retry-After.
func (l *Loader) backoff(n int) time.Duration {
	return clientkit.Backoff(l.cfg.RetryBase, l.cfg.RetryMax, n)
}

// retryAfter parses a Retry-After header (clientkit.RetryAfter).
func retryAfter(v string, now time.Time) (time.Duration, bool) { return clientkit.RetryAfter(v, now) }

// idempotent reports whether sending the Bundle twice leaves the same
// data as sending it once: no entry creates with POST.
func (j job) idempotent() bool {
	for _, e := range j.entries {
		if m, _, _ := strings.Cut(e.request, " "); m != "PUT" && m != "DELETE" && m != "GET" && m != "HEAD" {
			return false
		}
	}
	return true
}

// failAll is the failure of every entry of the Bundle.
func (j job) failAll(status int, diagnostics string) []Failure {
	f := Failure{File: j.file.in.Path, Entry: -1, Entries: len(j.entries), Status: status, Diagnostics: diagnostics}
	if len(j.entries) > 0 {
		f.Line = j.entries[0].line
	}
	return []Failure{f}
}

// interpret reads a final answer (not to be retried) into failures.
func (j job) interpret(a *answer) []Failure {
	if a.status < 200 || a.status > 299 {
		return j.failAll(a.status, answerDiagnostics(a))
	}
	if a.readErr != nil {
		return j.failAll(a.status, "reading the answer: "+a.readErr.Error())
	}
	b, err := fhir.ParseBundle(a.body)
	if err != nil {
		return j.failAll(a.status, "the answer is not a Bundle: "+err.Error())
	}
	if want := j.kind + "-response"; b.Type != want {
		return j.failAll(a.status, fmt.Sprintf("the answer is a Bundle of type %q, want %q", b.Type, want))
	}
	var out []Failure
	for i, ref := range j.entries {
		f := Failure{File: j.file.in.Path, Entry: i, Line: ref.line, Entries: 1, Request: ref.request}
		if i >= len(b.Entry) {
			f.Diagnostics = fmt.Sprintf("the answer has %d entries, no response for this one", len(b.Entry))
			out = append(out, f)
			continue
		}
		r := b.Entry[i].Response
		if r == nil {
			f.Diagnostics = "the answer's entry has no response"
			out = append(out, f)
			continue
		}
		code, _, _ := strings.Cut(strings.TrimSpace(r.Status), " ")
		f.Status, err = strconv.Atoi(code)
		if err != nil || f.Status < 100 || f.Status > 599 {
			f.Status = 0
			f.Diagnostics = fmt.Sprintf("response.status %q is not an HTTP status", r.Status)
			out = append(out, f)
			continue
		}
		if f.Status >= 200 && f.Status <= 299 {
			continue
		}
		f.Diagnostics = outcomeDiagnostics(r.Outcome)
		if f.Diagnostics == "" {
			f.Diagnostics = strings.TrimSpace(r.Status)
		}
		out = append(out, f)
	}
	return out
}

// answerDiagnostics says why an HTTP answer failed: its
// OperationOutcome's diagnostics, else the start of its body, else the
// status text.
func answerDiagnostics(a *answer) string {
	if d := outcomeDiagnostics(a.body); d != "" {
		return d
	}
	text := strconv.Itoa(a.status) + " " + http.StatusText(a.status)
	if s := snippet(a.body); s != "" {
		return text + ": " + s
	}
	return text
}

// outcomeDiagnostics joins the diagnostics (or details.text, or code) of
// an OperationOutcome's error issues, or of all its issues when none is
// an error; "" when raw is not an OperationOutcome.
func outcomeDiagnostics(raw []byte) string {
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Severity    string `json:"severity"`
			Code        string `json:"code"`
			Diagnostics string `json:"diagnostics"`
			Details     *struct {
				Text string `json:"text"`
			} `json:"details"`
		} `json:"issue"`
	}
	if len(raw) == 0 || json.Unmarshal(raw, &oo) != nil || oo.ResourceType != "OperationOutcome" {
		return ""
	}
	var errs, all []string
	for _, is := range oo.Issue {
		s := is.Diagnostics
		if s == "" && is.Details != nil {
			s = is.Details.Text
		}
		if s == "" {
			s = is.Code
		}
		if s == "" {
			continue
		}
		all = append(all, s)
		if is.Severity == fhir.SeverityError || is.Severity == fhir.SeverityFatal {
			errs = append(errs, s)
		}
	}
	if len(errs) > 0 {
		return strings.Join(errs, "; ")
	}
	return strings.Join(all, "; ")
}

// snippet is the start of a non-JSON body on one line, for messages.
func snippet(body []byte) string {
	const maxLen = 200
	s := strings.Join(strings.Fields(string(body)), " ")
	if len(s) > maxLen {
		s = strings.ToValidUTF8(s[:maxLen], "") + "…"
	}
	return s
}

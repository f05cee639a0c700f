// Package clientkit is what the command-line HTTP clients of fhirbucket
// (load, export) share: the bearer tokens' source, waits between retries (capped exponential
// backoff with jitter, Retry-After) and a status line redrawn in place on
// a terminal.
package clientkit

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// TokenSource hands out bearer tokens, renewing them as they expire
// (SMART Backend Services: *smartclient.Source).
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// MaxRetryAfter caps the wait a Retry-After header can impose.
const MaxRetryAfter = 10 * time.Minute

// Backoff is the wait before retry number n+1 without a Retry-After: base
// doubled n times, capped at max, less up to half of it at random so that
// parallel clients spread out.
func Backoff(base, max time.Duration, n int) time.Duration {
	d := base
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	d = min(d, max)
	return d/2 + rand.N(d/2+1)
}

// RetryAfter parses a Retry-After header: delay-seconds or an HTTP date.
// ok is false when it is absent or neither; the wait is capped at
// MaxRetryAfter and never negative.
func RetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0, false
		}
		if n > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter, true
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return 0, false
	}
	return min(max(d, 0), MaxRetryAfter), true
}

// RedrawEvery is the shortest time between two redraws of a Bar.
const RedrawEvery = 100 * time.Millisecond

// Bar is one status line redrawn in place with "\r" at most ten times a
// second from line, until Stop. Println prints a line above it.
type Bar struct {
	w    io.Writer
	line func() string

	mu      sync.Mutex
	lastLen int    // length of the line on screen
	last    string // the line on screen
	stop    chan struct{}
	done    chan struct{}
}

// StartBar starts redrawing line on w.
func StartBar(w io.Writer, line func() string) *Bar {
	b := &Bar{w: w, line: line, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		t := time.NewTicker(RedrawEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				b.redraw(false)
			case <-b.stop:
				return
			}
		}
	}()
	return b
}

// Println clears the bar's line, prints s on a line of its own, and lets
// the next redraw put the bar below it.
func (b *Bar) Println(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.lastLen > 0 {
		fmt.Fprint(b.w, "\r"+strings.Repeat(" ", b.lastLen)+"\r")
		b.last, b.lastLen = "", 0
	}
	fmt.Fprintln(b.w, s)
}

// Stop draws the line one last time and ends it; it waits for the redraw
// loop to end.
func (b *Bar) Stop() {
	close(b.stop)
	<-b.done
	b.redraw(true)
	b.mu.Lock()
	fmt.Fprintln(b.w)
	b.mu.Unlock()
}

func (b *Bar) redraw(force bool) {
	line := b.line()
	b.mu.Lock()
	defer b.mu.Unlock()
	if line == b.last && !force {
		return
	}
	pad := ""
	if n := b.lastLen - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	fmt.Fprint(b.w, "\r"+line+pad)
	b.last, b.lastLen = line, len(line)
}

// Gauge is a bar of width characters, done of total filled.
func Gauge(done, total int64, width int) string {
	filled := 0
	if total > 0 {
		filled = int(min(done, total) * int64(width) / total)
	}
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", width-filled) + "]"
}

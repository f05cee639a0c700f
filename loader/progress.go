package loader

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// redrawEvery is the shortest time between two redraws of the bar.
const redrawEvery = 100 * time.Millisecond

// Progress shows a load as it goes, in one of two forms: a bar redrawn in
// place with "\r" for a terminal, or one plain line per finished file for
// logs and pipes (no control characters at all). Wire FileDone to
// Config.OnFileDone, and call Stop once the load is over.
type Progress struct {
	w      io.Writer
	bar    bool
	totals func() Totals

	mu      sync.Mutex
	lastLen int    // length of the bar line on screen
	last    string // the bar line on screen
	stop    chan struct{}
	done    chan struct{}
}

// StartProgress starts showing progress on w; with bar it redraws the
// bar from totals at most ten times a second until Stop.
func StartProgress(w io.Writer, bar bool, totals func() Totals) *Progress {
	p := &Progress{w: w, bar: bar, totals: totals, stop: make(chan struct{}), done: make(chan struct{})}
	if !bar {
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		t := time.NewTicker(redrawEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.redraw(false)
			case <-p.stop:
				return
			}
		}
	}()
	return p
}

// FileDone reports a finished file: a line of its own in plain mode; in
// bar mode only a file with failures gets a line, printed above the bar.
func (p *Progress) FileDone(r FileResult, t Totals) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar && !r.Failed() {
		return
	}
	var line string
	switch {
	case r.Err != "":
		line = fmt.Sprintf("[%d/%d] %s: failed: %s", t.FilesDone, t.Files, r.Path, oneLine(r.Err))
	default:
		line = fmt.Sprintf("[%d/%d] %s: %d entries, %d failed, %d bundles, %s",
			t.FilesDone, t.Files, r.Path, r.Entries, r.EntriesFailed, r.Bundles, r.Elapsed.Round(time.Millisecond))
	}
	if p.bar {
		p.clearLocked()
	}
	fmt.Fprintln(p.w, line)
}

// Stop draws the bar one last time and ends its line; it waits for the
// redraw loop to end.
func (p *Progress) Stop() {
	if !p.bar {
		return
	}
	close(p.stop)
	<-p.done
	p.redraw(true)
	p.mu.Lock()
	fmt.Fprintln(p.w)
	p.mu.Unlock()
}

func (p *Progress) redraw(force bool) {
	line := barLine(p.totals())
	p.mu.Lock()
	defer p.mu.Unlock()
	if line == p.last && !force {
		return
	}
	pad := ""
	if n := p.lastLen - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	fmt.Fprint(p.w, "\r"+line+pad)
	p.last, p.lastLen = line, len(line)
}

// clearLocked blanks the bar's line and returns to its start.
func (p *Progress) clearLocked() {
	if p.lastLen == 0 {
		return
	}
	fmt.Fprint(p.w, "\r"+strings.Repeat(" ", p.lastLen)+"\r")
	p.last, p.lastLen = "", 0
}

// barLine is the bar: files done of total as a gauge, then the counts.
func barLine(t Totals) string {
	const width = 20
	filled := 0
	if t.Files > 0 {
		filled = t.FilesDone * width / t.Files
	}
	return fmt.Sprintf("[%s%s] files %d/%d  entries %d  %.0f/s  errors: %d entries, %d files  %s",
		strings.Repeat("#", filled), strings.Repeat(".", width-filled),
		t.FilesDone, t.Files, t.Entries, t.Rate(), t.EntriesFailed, t.FilesFailed, t.Elapsed.Round(time.Second))
}

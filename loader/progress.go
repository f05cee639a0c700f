package loader

import (
	"fmt"
	"io"
	"time"

	"fhirbucket/internal/clientkit"
)

// Progress shows a load as it goes, in one of two forms: a bar redrawn in
// place with "\r" for a terminal (clientkit.Bar), or one plain line per
// finished file for logs and pipes (no control characters at all). Wire
// FileDone to Config.OnFileDone, and call Stop once the load is over.
type Progress struct {
	w   io.Writer
	bar *clientkit.Bar
}

// StartProgress starts showing progress on w; with bar it redraws the
// bar from totals at most ten times a second until Stop.
func StartProgress(w io.Writer, bar bool, totals func() Totals) *Progress {
	p := &Progress{w: w}
	if bar {
		p.bar = clientkit.StartBar(w, func() string { return barLine(totals()) })
	}
	return p
}

// FileDone reports a finished file: a line of its own in plain mode; in
// bar mode only a file with failures gets a line, printed above the bar.
func (p *Progress) FileDone(r FileResult, t Totals) {
	if p.bar != nil && !r.Failed() {
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
	if p.bar != nil {
		p.bar.Println(line)
		return
	}
	fmt.Fprintln(p.w, line)
}

// Stop draws the bar one last time and ends its line.
func (p *Progress) Stop() {
	if p.bar != nil {
		p.bar.Stop()
	}
}

// barLine is the bar: files done of total as a gauge, then the counts.
func barLine(t Totals) string {
	return fmt.Sprintf("%s files %d/%d  entries %d  %.0f/s  errors: %d entries, %d files  %s",
		clientkit.Gauge(int64(t.FilesDone), int64(t.Files), 20),
		t.FilesDone, t.Files, t.Entries, t.Rate(), t.EntriesFailed, t.FilesFailed, t.Elapsed.Round(time.Second))
}

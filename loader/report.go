package loader

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// DefaultMaxFailures is how many failures WriteSummary lists by default.
const DefaultMaxFailures = 50

// String is the failure on one line: where, which request, status, why.
func (f Failure) String() string {
	var b strings.Builder
	b.WriteString(f.File)
	switch {
	case f.Line > 0 && f.Entry >= 0:
		fmt.Fprintf(&b, " line %d entry[%d]", f.Line, f.Entry)
	case f.Line > 0 && f.Entries > 1:
		fmt.Fprintf(&b, " from line %d (%d entries)", f.Line, f.Entries)
	case f.Line > 0:
		fmt.Fprintf(&b, " line %d", f.Line)
	case f.Entry >= 0:
		fmt.Fprintf(&b, " entry[%d]", f.Entry)
	case f.Entries == 1:
		b.WriteString(" (its one entry)")
	case f.Entries > 1:
		fmt.Fprintf(&b, " (all %d entries)", f.Entries)
	}
	if f.Request != "" {
		b.WriteString(" " + f.Request)
	}
	if f.Status != 0 {
		fmt.Fprintf(&b, ": %d", f.Status)
	}
	if f.Diagnostics != "" {
		b.WriteString(": " + oneLine(f.Diagnostics))
	}
	return b.String()
}

// WriteSummary writes the totals and the first maxFailures failures (<= 0
// means DefaultMaxFailures), with a count of those left out.
func (r *Report) WriteSummary(w io.Writer, maxFailures int) error {
	if maxFailures <= 0 {
		maxFailures = DefaultMaxFailures
	}
	var b strings.Builder
	fmt.Fprintf(&b, "files: %d", r.FilesDone)
	if r.FilesDone != r.Files {
		fmt.Fprintf(&b, " of %d", r.Files)
	}
	if r.FilesFailed > 0 {
		fmt.Fprintf(&b, " (%d with failures)", r.FilesFailed)
	}
	fmt.Fprintf(&b, ", bundles: %d, entries: %d ok, %d failed", r.Bundles, r.EntriesOK(), r.EntriesFailed)
	if r.Retries > 0 {
		fmt.Fprintf(&b, ", retries: %d", r.Retries)
	}
	fmt.Fprintf(&b, "\nelapsed: %s, %.1f entries/s\n", r.Elapsed.Round(time.Millisecond), r.Rate())
	if len(r.Failures) > 0 {
		fmt.Fprintf(&b, "failures (%d):\n", len(r.Failures))
		for i, f := range r.Failures {
			if i == maxFailures {
				fmt.Fprintf(&b, "  … and %d more\n", len(r.Failures)-maxFailures)
				break
			}
			b.WriteString("  " + f.String() + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// oneLine folds white space (line breaks included) so that a message
// keeps to its line.
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n\t") {
		return s
	}
	return strings.Join(strings.Fields(s), " ")
}

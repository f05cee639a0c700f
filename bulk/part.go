package bulk

import (
	"context"
	"fmt"

	"fhirbucket/storage"
)

// Limits bound one part file.
type Limits struct {
	// MaxLines is the most lines of a part (default DefaultMaxLines).
	MaxLines int
	// MaxBytes is the most bytes of a part (default DefaultMaxBytes); a
	// single line longer than that is a part of its own.
	MaxBytes int64
}

// Defaults of Limits.
const (
	DefaultMaxLines = 50_000
	DefaultMaxBytes = 128 << 20
)

func (l Limits) withDefaults() Limits {
	if l.MaxLines <= 0 {
		l.MaxLines = DefaultMaxLines
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	return l
}

// Part is one committed part file.
type Part struct {
	N     int    `json:"n"`
	Count int    `json:"count"`
	Bytes int64  `json:"bytes"`
	Last  string `json:"last,omitempty"` // the caller's name of its last line
}

// PartWriter streams NDJSON lines into numbered part objects
// (key(n), n = first, first+1, …) through storage.NewUpload, so that
// memory stays flat whatever the export size. The caller decides when a
// part ends: it asks Fits before each line and Commits when the line does
// not fit (or at its own checkpoints), which lets it checkpoint its
// resume point exactly at part boundaries. Not safe for concurrent use.
type PartWriter struct {
	b     storage.Bucket
	key   func(n int) string
	lim   Limits
	n     int
	up    storage.Upload
	lines int
	bytes int64
	last  string
}

// NewPartWriter returns a writer whose next part is number first.
func NewPartWriter(b storage.Bucket, key func(n int) string, first int, lim Limits) *PartWriter {
	return &PartWriter{b: b, key: key, lim: lim.withDefaults(), n: first}
}

// Next is the number of the part being written (or to be written next).
func (w *PartWriter) Next() int { return w.n }

// Empty reports whether the current part has no line yet.
func (w *PartWriter) Empty() bool { return w.lines == 0 }

// Fits reports whether a line of n bytes (without its newline) fits the
// current part: always for an empty part.
func (w *PartWriter) Fits(n int) bool {
	return w.lines == 0 || (w.lines < w.lim.MaxLines && w.bytes+int64(n)+1 <= w.lim.MaxBytes)
}

// Add appends line and a newline to the current part, beginning it when
// it is empty; name is the caller's name of the line (reported as
// Part.Last).
func (w *PartWriter) Add(ctx context.Context, line []byte, name string) error {
	if w.up == nil {
		up, err := storage.NewUpload(ctx, w.b, w.key(w.n), storage.PutOptions{ContentType: "application/fhir+ndjson"})
		if err != nil {
			return err
		}
		w.up = up
	}
	if _, err := w.up.Write(line); err != nil {
		return err
	}
	if _, err := w.up.Write([]byte{'\n'}); err != nil {
		return err
	}
	w.lines++
	w.bytes += int64(len(line)) + 1
	w.last = name
	return nil
}

// Commit makes the current part visible and returns it; (nil, nil) when
// it is empty. The next Add begins the next part.
func (w *PartWriter) Commit(ctx context.Context) (*Part, error) {
	if w.up == nil {
		return nil, nil
	}
	if _, err := w.up.Commit(ctx); err != nil {
		w.Abort(ctx)
		return nil, fmt.Errorf("bulk: writing part %d: %w", w.n, err)
	}
	p := &Part{N: w.n, Count: w.lines, Bytes: w.bytes, Last: w.last}
	w.up, w.lines, w.bytes, w.last = nil, 0, 0, ""
	w.n++
	return p, nil
}

// Abort discards the part being written.
func (w *PartWriter) Abort(ctx context.Context) {
	if w.up != nil {
		_ = w.up.Abort(context.WithoutCancel(ctx))
	}
	w.up, w.lines, w.bytes, w.last = nil, 0, 0, ""
}

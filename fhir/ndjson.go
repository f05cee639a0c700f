package fhir

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// DefaultMaxLine is the NDJSON line limit used when NewNDJSONReader gets
// maxLine <= 0: the default resource size limit.
const DefaultMaxLine = DefaultMaxBytes

// NDJSONReader reads newline-delimited JSON (one resource per line) as
// used by bulk data, one raw line at a time, holding at most one line in
// memory.
type NDJSONReader struct {
	br      *bufio.Reader
	maxLine int
	lineNo  int
	line    []byte
	err     error // sticky read error
}

// NewNDJSONReader returns a reader of r whose lines may be at most maxLine
// bytes (not counting the line end; <= 0 means DefaultMaxLine).
func NewNDJSONReader(r io.Reader, maxLine int) *NDJSONReader {
	if maxLine <= 0 {
		maxLine = DefaultMaxLine
	}
	return &NDJSONReader{br: bufio.NewReaderSize(r, 64<<10), maxLine: maxLine}
}

// Next returns the next non-blank line, without its line end ("\n" or
// "\r\n"; a UTF-8 byte order mark before the first line is dropped), and
// its 1-based line number in the input. The slice is valid until the next
// call. At the end of input it returns io.EOF. A line longer than maxLine
// yields an error wrapping ErrTooLarge that names the line; the line is
// skipped and the next call goes on with the following one. Next does not
// check that a line is JSON: Validate does.
func (r *NDJSONReader) Next() (line []byte, lineNo int, err error) {
	for {
		if r.err != nil {
			return nil, r.lineNo, r.err
		}
		r.line = r.line[:0]
		tooLong := false
		var readErr error
		for {
			chunk, err := r.br.ReadSlice('\n')
			if !tooLong {
				if len(r.line)+len(chunk) > r.maxLine+2 { // +2: room for \r\n
					tooLong = true
					r.line = r.line[:0]
				} else {
					r.line = append(r.line, chunk...)
				}
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			readErr = err
			break
		}
		atEOF := readErr == io.EOF
		if readErr != nil && !atEOF {
			r.err = fmt.Errorf("fhir: ndjson line %d: %w", r.lineNo+1, readErr)
			return nil, r.lineNo + 1, r.err
		}
		if atEOF && len(r.line) == 0 && !tooLong {
			r.err = io.EOF
			return nil, r.lineNo, io.EOF
		}
		r.lineNo++
		if atEOF {
			r.err = io.EOF // returned on the next call
		}
		l := bytes.TrimSuffix(r.line, []byte{'\n'})
		l = bytes.TrimSuffix(l, []byte{'\r'})
		if r.lineNo == 1 {
			l = bytes.TrimPrefix(l, []byte("\xef\xbb\xbf"))
		}
		if tooLong || len(l) > r.maxLine {
			return nil, r.lineNo, fmt.Errorf("%w: ndjson line %d is longer than %d bytes", ErrTooLarge, r.lineNo, r.maxLine)
		}
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		return l, r.lineNo, nil
	}
}

// NDJSONWriter writes resources as newline-delimited JSON, buffered; call
// Flush when done. A resource containing line breaks (pretty-printed) is
// compacted first: only insignificant white space changes.
type NDJSONWriter struct {
	bw    *bufio.Writer
	tmp   bytes.Buffer
	lines int64
	bytes int64
}

// NewNDJSONWriter returns a writer to w.
func NewNDJSONWriter(w io.Writer) *NDJSONWriter {
	return &NDJSONWriter{bw: bufio.NewWriterSize(w, 64<<10)}
}

// Write writes one resource as one line. Errors wrap ErrInvalid when the
// resource is not JSON.
func (w *NDJSONWriter) Write(resource []byte) error {
	line := resource
	if bytes.ContainsAny(resource, "\r\n") {
		w.tmp.Reset()
		if err := json.Compact(&w.tmp, resource); err != nil {
			return invalidf("ndjson: resource is not JSON: %v", err)
		}
		line = w.tmp.Bytes()
	}
	if len(bytes.TrimSpace(line)) == 0 {
		return invalidf("ndjson: empty resource")
	}
	if _, err := w.bw.Write(line); err != nil {
		return err
	}
	if err := w.bw.WriteByte('\n'); err != nil {
		return err
	}
	w.lines++
	w.bytes += int64(len(line)) + 1
	return nil
}

// Flush writes buffered data to the underlying writer.
func (w *NDJSONWriter) Flush() error { return w.bw.Flush() }

// Lines returns the number of resources written.
func (w *NDJSONWriter) Lines() int64 { return w.lines }

// Bytes returns the number of bytes written, line ends included.
func (w *NDJSONWriter) Bytes() int64 { return w.bytes }

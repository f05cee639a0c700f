package storage

import (
	"context"
	"io"
)

// ContextReader returns a reader that reads from r until ctx is done, and
// from then on fails with ctx.Err() without calling r again. Drivers wrap
// Put bodies in it, so a cancelled Put of a body of unknown size stops
// copying (or buffering) at the next Read instead of draining the body.
//
// The check happens before every Read: a Read already blocked in r is not
// interrupted.
func ContextReader(ctx context.Context, r io.Reader) io.Reader {
	return contextReader{ctx, r}
}

type contextReader struct {
	ctx context.Context
	r   io.Reader
}

func (c contextReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

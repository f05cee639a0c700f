package storage_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"fhirbucket/storage"
)

// countingReader counts the Read calls that reach it.
type countingReader struct {
	r     io.Reader
	calls int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.calls++
	return c.r.Read(p)
}

func TestContextReader(t *testing.T) {
	t.Run("live context reads everything", func(t *testing.T) {
		got, err := io.ReadAll(storage.ContextReader(t.Context(), strings.NewReader("hello")))
		if err != nil || string(got) != "hello" {
			t.Fatalf("ReadAll = %q, %v; want %q, nil", got, err, "hello")
		}
	})
	t.Run("cancelled mid-copy stops at the next read", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		src := &countingReader{r: strings.NewReader("abcdef")}
		r := storage.ContextReader(ctx, src)
		buf := make([]byte, 2)
		if n, err := r.Read(buf); n != 2 || err != nil {
			t.Fatalf("first Read = %d, %v; want 2, nil", n, err)
		}
		cancel()
		if n, err := r.Read(buf); n != 0 || !errors.Is(err, context.Canceled) {
			t.Fatalf("Read after cancel = %d, %v; want 0, context.Canceled", n, err)
		}
		if src.calls != 1 {
			t.Errorf("the wrapped reader was called %d times, want 1: no Read after cancel", src.calls)
		}
	})
	t.Run("deadline error is the context's", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 0)
		defer cancel()
		<-ctx.Done()
		_, err := io.ReadAll(storage.ContextReader(ctx, strings.NewReader("x")))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("ReadAll = %v, want context.DeadlineExceeded", err)
		}
	})
}

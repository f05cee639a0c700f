package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"fhirbucket/storage"
)

func testContextCancelled(t *testing.T, b storage.Bucket) {
	put(t, b, "exists", "x", storage.PutOptions{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	canceled := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: got %v, want context.Canceled", what, err)
		}
	}
	_, err := b.Put(ctx, "new", strings.NewReader("y"), storage.PutOptions{Size: 1})
	canceled("Put", err)
	_, err = b.Put(ctx, "exists", strings.NewReader("y"), storage.PutOptions{Size: 1})
	canceled("Put overwrite", err)
	rc, _, err := b.Get(ctx, "exists")
	if err == nil {
		rc.Close()
	}
	canceled("Get", err)
	_, err = b.List(ctx, storage.ListOptions{})
	canceled("List", err)
	_, err = b.Stat(ctx, "exists")
	canceled("Stat", err)

	if _, err := b.Stat(t.Context(), "new"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("cancelled Put created the key: Stat = %v", err)
	}
	if got, _ := get(t, b, "exists"); got != "x" {
		t.Errorf("cancelled Put overwrote the key: %q", got)
	}
}

// cancellingReader yields n bytes, cancels, then keeps yielding up to
// limit bytes: a body whose upload is cut off by its caller. The limit
// keeps a driver that buffers the whole body before looking at ctx from
// reading forever; it must still fail.
type cancellingReader struct {
	n, limit int
	cancel   func()
}

func (r *cancellingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		r.cancel()
	}
	if r.n <= -r.limit {
		return 0, io.EOF
	}
	if len(p) > 4096 {
		p = p[:4096]
	}
	for i := range p {
		p[i] = 'x'
	}
	r.n -= len(p)
	return len(p), nil
}

func testContextCancelledMidBody(t *testing.T, b storage.Bucket) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, err := b.Put(ctx, "cut", &cancellingReader{n: 64 << 10, limit: 4 << 20, cancel: cancel}, storage.PutOptions{Size: -1})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Put cut off by cancellation: got %v, want context.Canceled", err)
	}
	if _, err := b.Stat(t.Context(), "cut"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("cancelled Put created the key: Stat = %v", err)
	}
}

// randomReader returns a deterministic pseudo-random stream of n bytes,
// so large bodies never need to be held in memory twice.
func randomReader(seed uint64, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}), n)
}

func testLargeObject(t *testing.T, b storage.Bucket) {
	const size = 5 << 20
	want := sha256.New()
	if _, err := io.Copy(want, randomReader(1, size)); err != nil {
		t.Fatal(err)
	}
	a, err := b.Put(t.Context(), "large/blob", randomReader(1, size), storage.PutOptions{Size: size, ContentType: "application/octet-stream"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != size {
		t.Errorf("Put size = %d, want %d", a.Size, size)
	}
	rc, ga, err := b.Get(t.Context(), "large/blob")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := sha256.New()
	n, err := io.Copy(got, rc)
	if err != nil {
		t.Fatal(err)
	}
	if n != size || ga.Size != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Errorf("Get read %d bytes (attrs size %d), content equal %v; want %d identical bytes", n, ga.Size, bytes.Equal(got.Sum(nil), want.Sum(nil)), size)
	}
}

// onlyReader hides every method but Read (no Seek, no Len, no WriteTo).
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func testUnknownSize(t *testing.T, b storage.Bucket) {
	for _, size := range []int64{0, 1, 300 << 10} {
		key := fmt.Sprintf("unknown/%d", size)
		var buf bytes.Buffer
		io.Copy(&buf, randomReader(uint64(size), size))
		a, err := b.Put(t.Context(), key, onlyReader{bytes.NewReader(buf.Bytes())}, storage.PutOptions{Size: -1})
		if err != nil {
			t.Fatalf("Put of %d bytes with Size -1: %v", size, err)
		}
		if a.Size != size {
			t.Errorf("Put attrs size = %d, want %d", a.Size, size)
		}
		got, ga := get(t, b, key)
		if got != buf.String() || ga.Size != size {
			t.Errorf("Get of %d-byte body returned %d bytes (attrs size %d), equal %v", size, len(got), ga.Size, got == buf.String())
		}
	}
}

// testAtomicOverwrite reads a key while it is overwritten with bodies of
// different lengths and bytes: every read must see one whole version,
// with attributes that describe it.
func testAtomicOverwrite(t *testing.T, b storage.Bucket) {
	const key = "atomic/k"
	bodies := []string{strings.Repeat("a", 64<<10), strings.Repeat("b", 96<<10), strings.Repeat("c", 1)}
	put(t, b, key, bodies[0], storage.PutOptions{})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var problems []string
	reads := 0
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				data, a, err := storage.ReadAll(ctx, b, key)
				if ctx.Err() != nil {
					return
				}
				mu.Lock()
				reads++
				switch {
				case err != nil:
					problems = append(problems, err.Error())
				case !slices.Contains(bodies, string(data)):
					problems = append(problems, fmt.Sprintf("torn read of %d bytes starting %q", len(data), data[:min(len(data), 8)]))
				case a.Size != int64(len(data)):
					problems = append(problems, fmt.Sprintf("attrs size %d for a %d-byte body", a.Size, len(data)))
				}
				mu.Unlock()
			}
		})
	}
	readsSoFar := func() int { mu.Lock(); defer mu.Unlock(); return reads }
	// At least 30 writes, and more until the readers have overlapped
	// them (bounded, for a slow remote store).
	for i := 0; i < 30 || (readsSoFar() < 20 && i < 1000); i++ {
		put(t, b, key, bodies[i%len(bodies)], storage.PutOptions{})
	}
	cancel()
	wg.Wait()
	if len(problems) > 0 {
		t.Errorf("%d of %d reads were wrong, first: %s", len(problems), reads, problems[0])
	}
	if reads == 0 {
		t.Error("no read completed")
	}
}

package storagetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"fhirbucket/storage"
)

// race runs fn in n goroutines released at the same moment and returns
// their results in goroutine order.
func race[T any](n int, fn func(i int) T) []T {
	out := make([]T, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			out[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return out
}

type putResult struct {
	attrs storage.Attrs
	err   error
}

// checkOneWinner asserts that exactly one put won, the others lost with
// ErrPreconditionFailed or ErrConflict, and the stored object is the
// winner's.
func checkOneWinner(t *testing.T, b storage.Bucket, key string, results []putResult, body func(i int) string) {
	t.Helper()
	winner := -1
	for i, r := range results {
		switch {
		case r.err == nil:
			if winner >= 0 {
				t.Fatalf("writers %d and %d both won", winner, i)
			}
			winner = i
		case errors.Is(r.err, storage.ErrPreconditionFailed), errors.Is(r.err, storage.ErrConflict):
		default:
			t.Errorf("writer %d: unexpected error %v", i, r.err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer won")
	}
	got, a := get(t, b, key)
	if got != body(winner) || a.ETag != results[winner].attrs.ETag {
		t.Errorf("stored %q (ETag %q), want the winner's %q (ETag %q)", got, a.ETag, body(winner), results[winner].attrs.ETag)
	}
}

const racers = 16

func testRaceCreateOnly(t *testing.T, b storage.Bucket) {
	const key = "race/create"
	body := func(i int) string { return fmt.Sprintf("writer %02d", i) }
	results := race(racers, func(i int) putResult {
		a, err := b.Put(context.Background(), key, strings.NewReader(body(i)), storage.PutOptions{IfNoneMatch: "*", Size: int64(len(body(i)))})
		return putResult{a, err}
	})
	checkOneWinner(t, b, key, results, body)
}

func testRaceIfMatch(t *testing.T, b storage.Bucket) {
	const key = "race/replace"
	base := put(t, b, key, "base", storage.PutOptions{})
	body := func(i int) string { return fmt.Sprintf("replacement %02d", i) }
	results := race(racers, func(i int) putResult {
		a, err := b.Put(context.Background(), key, strings.NewReader(body(i)), storage.PutOptions{IfMatch: base.ETag, Size: int64(len(body(i)))})
		return putResult{a, err}
	})
	checkOneWinner(t, b, key, results, body)
}

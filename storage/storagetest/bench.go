package storagetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fhirbucket/storage"
)

// BenchConcurrency are the numbers of concurrent callers RunBenchmarks
// measures.
var BenchConcurrency = []int{1, 8, 32}

// benchBody is a ~2 KiB payload, the size of a typical FHIR resource.
var benchBody = strings.Repeat(`{"resourceType":"Observation","status":"final"},`, 2048/48)

// RunBenchmarks measures a driver with sub-benchmarks "put" (overwrites
// over 1,000 keys), "put-if-none-match" (create-only puts of fresh keys)
// and "get" (reads of 1,000 existing keys), each at the concurrencies of
// BenchConcurrency, named e.g. "put/c8". Each reports ops/s. newBucket is
// called once per sub-benchmark run and must return an empty namespace.
func RunBenchmarks(b *testing.B, newBucket func(tb testing.TB) storage.Bucket) {
	const keySpace = 1000
	keyOf := func(kind string, i int64) string { return fmt.Sprintf("bench/%s/%06d", kind, i) }
	cases := []struct {
		name  string
		setup func(tb testing.TB, bk storage.Bucket)
		op    func(ctx context.Context, bk storage.Bucket, i int64) error
	}{
		{"put", nil, func(ctx context.Context, bk storage.Bucket, i int64) error {
			_, err := bk.Put(ctx, keyOf("put", i%keySpace), strings.NewReader(benchBody), storage.PutOptions{Size: int64(len(benchBody)), ContentType: fhirJSON})
			return err
		}},
		{"put-if-none-match", nil, func(ctx context.Context, bk storage.Bucket, i int64) error {
			_, err := bk.Put(ctx, keyOf("create", i), strings.NewReader(benchBody), storage.PutOptions{Size: int64(len(benchBody)), ContentType: fhirJSON, IfNoneMatch: "*"})
			return err
		}},
		{"get", func(tb testing.TB, bk storage.Bucket) {
			keys := make([]string, keySpace)
			for i := range keys {
				keys[i] = keyOf("get", int64(i))
			}
			putParallel(tb, bk, keys, 16)
		}, func(ctx context.Context, bk storage.Bucket, i int64) error {
			_, _, err := storage.ReadAll(ctx, bk, keyOf("get", i%keySpace))
			return err
		}},
	}
	for _, c := range cases {
		for _, conc := range BenchConcurrency {
			b.Run(fmt.Sprintf("%s/c%d", c.name, conc), func(b *testing.B) {
				bk := newBucket(b)
				if c.setup != nil {
					c.setup(b, bk)
				}
				ctx := context.Background()
				var (
					next     atomic.Int64
					firstErr atomic.Pointer[error]
					wg       sync.WaitGroup
				)
				b.ResetTimer()
				start := time.Now()
				for range conc {
					wg.Go(func() {
						for {
							i := next.Add(1) - 1
							if i >= int64(b.N) {
								return
							}
							if err := c.op(ctx, bk, i); err != nil {
								firstErr.CompareAndSwap(nil, &err)
								return
							}
						}
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				if err := firstErr.Load(); err != nil {
					b.Fatal(*err)
				}
				b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
			})
		}
	}
}

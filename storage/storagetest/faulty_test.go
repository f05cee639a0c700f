package storagetest_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
	"fhirbucket/storage/storagetest"
)

// A Faulty bucket without rules, or with delays only, is still a
// conforming bucket.
func TestFaultyConformance(t *testing.T) {
	t.Run("no-rules", func(t *testing.T) {
		storagetest.RunConformanceTests(t, func(t *testing.T) storage.Bucket {
			return storagetest.NewFaulty(memstore.New())
		})
	})
	t.Run("delays", func(t *testing.T) {
		storagetest.RunConformanceTests(t, func(t *testing.T) storage.Bucket {
			f := storagetest.NewFaulty(memstore.New())
			for _, op := range []storage.Op{storage.OpGet, storage.OpPut, storage.OpHead, storage.OpList, storage.OpDelete} {
				f.Add(storagetest.Fault{Op: op, Delay: time.Microsecond})
			}
			return f
		})
	})
}

func TestFaultyRules(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name  string
		fault storagetest.Fault
		// call makes one request for key and returns its error.
		call func(ctx context.Context, b storage.Bucket, key string) error
		keys []string
		// wantFail lists, per call, whether it must fail with errBoom.
		wantFail []bool
		// wantStored lists the keys that must exist afterwards.
		wantStored []string
	}{
		{
			name:       "put-every-call-nothing-written",
			fault:      storagetest.Fault{Op: storage.OpPut, Err: errBoom},
			call:       putCall,
			keys:       []string{"a", "b"},
			wantFail:   []bool{true, true},
			wantStored: nil,
		},
		{
			name:       "put-nth-only",
			fault:      storagetest.Fault{Op: storage.OpPut, Nth: 2, Err: errBoom},
			call:       putCall,
			keys:       []string{"a", "b", "c"},
			wantFail:   []bool{false, true, false},
			wantStored: []string{"a", "c"},
		},
		{
			name:       "put-after-write-lands",
			fault:      storagetest.Fault{Op: storage.OpPut, AfterWrite: true, Err: errBoom},
			call:       putCall,
			keys:       []string{"a"},
			wantFail:   []bool{true},
			wantStored: []string{"a"},
		},
		{
			name:       "key-contains",
			fault:      storagetest.Fault{Op: storage.OpPut, KeyContains: "/history/", Err: errBoom},
			call:       putCall,
			keys:       []string{"r/current", "r/history/1", "r/history/2"},
			wantFail:   []bool{false, true, true},
			wantStored: []string{"r/current"},
		},
		{
			name:       "match-func",
			fault:      storagetest.Fault{Op: storage.OpPut, Match: func(k string) bool { return strings.HasSuffix(k, ".json") }, Err: errBoom},
			call:       putCall,
			keys:       []string{"x.json", "x.txt"},
			wantFail:   []bool{true, false},
			wantStored: []string{"x.txt"},
		},
		{
			name:       "other-op-untouched",
			fault:      storagetest.Fault{Op: storage.OpGet, Err: errBoom},
			call:       putCall,
			keys:       []string{"a"},
			wantFail:   []bool{false},
			wantStored: []string{"a"},
		},
		{
			name:  "delete-after-write",
			fault: storagetest.Fault{Op: storage.OpDelete, AfterWrite: true, Err: errBoom},
			call: func(ctx context.Context, b storage.Bucket, key string) error {
				if _, err := b.(*storagetest.Faulty).Inner().Put(ctx, key, strings.NewReader("x"), storage.PutOptions{Size: 1}); err != nil {
					return err
				}
				return b.Delete(ctx, key)
			},
			keys:       []string{"a"},
			wantFail:   []bool{true},
			wantStored: nil,
		},
		{
			name:  "get-fails-stat-works",
			fault: storagetest.Fault{Op: storage.OpGet, Err: errBoom},
			call: func(ctx context.Context, b storage.Bucket, key string) error {
				if err := putCall(ctx, b, key); err != nil {
					return err
				}
				if _, err := b.Stat(ctx, key); err != nil {
					return fmt.Errorf("stat must pass: %v", err)
				}
				_, _, err := storage.ReadAll(ctx, b, key)
				return err
			},
			keys:       []string{"a"},
			wantFail:   []bool{true},
			wantStored: []string{"a"},
		},
		{
			name:  "list",
			fault: storagetest.Fault{Op: storage.OpList, KeyContains: "p/", Err: storage.ErrUnavailable},
			call: func(ctx context.Context, b storage.Bucket, key string) error {
				_, err := b.List(ctx, storage.ListOptions{Prefix: key})
				if errors.Is(err, storage.ErrUnavailable) {
					return fmt.Errorf("%w: %w", errBoom, err)
				}
				return err
			},
			keys:     []string{"p/", "q/"},
			wantFail: []bool{true, false},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inner := memstore.New()
			f := storagetest.NewFaulty(inner)
			rule := f.Add(tc.fault)
			fails := 0
			for i, key := range tc.keys {
				err := tc.call(t.Context(), f, key)
				if tc.wantFail[i] {
					fails++
					if !errors.Is(err, errBoom) {
						t.Errorf("call %d (%q): got %v, want the injected error", i, key, err)
					}
					var se *storage.Error
					if err != nil && !errors.As(err, &se) {
						t.Errorf("call %d: injected error %v is not a *storage.Error", i, err)
					}
				} else if err != nil {
					t.Errorf("call %d (%q): unexpected error %v", i, key, err)
				}
			}
			if rule.Fired() != fails {
				t.Errorf("rule fired %d times, want %d", rule.Fired(), fails)
			}
			if tc.call != nil && tc.fault.Op == storage.OpPut && rule.Seen() != countMatching(tc.fault, tc.keys) {
				t.Errorf("rule saw %d calls, want %d", rule.Seen(), countMatching(tc.fault, tc.keys))
			}
			var stored []string
			for a, err := range storage.Walk(t.Context(), inner, storage.ListOptions{}) {
				if err != nil {
					t.Fatal(err)
				}
				stored = append(stored, a.Key)
			}
			if strings.Join(stored, ",") != strings.Join(tc.wantStored, ",") {
				t.Errorf("stored keys %q, want %q", stored, tc.wantStored)
			}
		})
	}
}

func putCall(ctx context.Context, b storage.Bucket, key string) error {
	_, err := b.Put(ctx, key, strings.NewReader("x"), storage.PutOptions{Size: 1})
	return err
}

func countMatching(f storagetest.Fault, keys []string) int {
	n := 0
	for _, k := range keys {
		if strings.Contains(k, f.KeyContains) && (f.Match == nil || f.Match(k)) {
			n++
		}
	}
	return n
}

func TestFaultyReset(t *testing.T) {
	f := storagetest.NewFaulty(memstore.New())
	rule := f.Add(storagetest.Fault{Op: storage.OpPut, Err: storage.ErrUnavailable})
	if err := putCall(t.Context(), f, "a"); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("before Reset: %v", err)
	}
	f.Reset()
	if err := putCall(t.Context(), f, "a"); err != nil {
		t.Fatalf("after Reset: %v", err)
	}
	if rule.Fired() != 1 {
		t.Errorf("Fired = %d, want 1", rule.Fired())
	}
}

func TestFaultyDelayHonoursContext(t *testing.T) {
	f := storagetest.NewFaulty(memstore.New())
	f.Add(storagetest.Fault{Op: storage.OpPut, Delay: time.Hour})
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	err := putCall(ctx, f, "slow")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want context.DeadlineExceeded", err)
	}
	if _, err := f.Inner().Stat(t.Context(), "slow"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("a put abandoned during its delay was written: %v", err)
	}
}

// Nth counting is exact under concurrency: of 64 concurrent puts, exactly
// one fires the Nth=10 rule and all 64 are seen.
func TestFaultyConcurrentCounting(t *testing.T) {
	f := storagetest.NewFaulty(memstore.New())
	rule := f.Add(storagetest.Fault{Op: storage.OpPut, Nth: 10, Err: storage.ErrUnavailable})
	var wg sync.WaitGroup
	var mu sync.Mutex
	failed := 0
	for i := range 64 {
		wg.Go(func() {
			if err := putCall(t.Context(), f, fmt.Sprintf("k%d", i)); errors.Is(err, storage.ErrUnavailable) {
				mu.Lock()
				failed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if failed != 1 || rule.Fired() != 1 || rule.Seen() != 64 {
		t.Errorf("failed=%d fired=%d seen=%d, want 1, 1, 64", failed, rule.Fired(), rule.Seen())
	}
}

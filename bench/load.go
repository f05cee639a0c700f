package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/storage"
)

// kinds of request the counter tells apart. A conditional put is its own
// kind because S3 servers price it differently (MinIO takes a lock).
const (
	kGet = iota
	kPut
	kCondPut
	kHead
	kList
	kDelete
	numKinds
)

// counts is a snapshot of requests by kind.
type counts [numKinds]int64

func (c counts) sub(o counts) counts {
	for i := range c {
		c[i] -= o[i]
	}
	return c
}

func (c counts) total() int64 {
	var n int64
	for _, v := range c {
		n += v
	}
	return n
}

// counter wraps a bucket and counts calls by kind; unlike storage.Counter
// it separates conditional from unconditional puts, which the ratios
// need.
type counter struct {
	storage.Bucket
	n [numKinds]atomic.Int64
}

func (c *counter) snapshot() counts {
	var s counts
	for i := range s {
		s[i] = c.n[i].Load()
	}
	return s
}

func (c *counter) Get(ctx context.Context, key string) (io.ReadCloser, storage.Attrs, error) {
	c.n[kGet].Add(1)
	return c.Bucket.Get(ctx, key)
}

func (c *counter) Put(ctx context.Context, key string, body io.Reader, opts storage.PutOptions) (storage.Attrs, error) {
	if opts.IfMatch != "" || opts.IfNoneMatch != "" {
		c.n[kCondPut].Add(1)
	} else {
		c.n[kPut].Add(1)
	}
	return c.Bucket.Put(ctx, key, body, opts)
}

func (c *counter) Stat(ctx context.Context, key string) (storage.Attrs, error) {
	c.n[kHead].Add(1)
	return c.Bucket.Stat(ctx, key)
}

func (c *counter) List(ctx context.Context, opts storage.ListOptions) (storage.ListPage, error) {
	c.n[kList].Add(1)
	return c.Bucket.List(ctx, opts)
}

func (c *counter) Delete(ctx context.Context, key string) error {
	c.n[kDelete].Add(1)
	return c.Bucket.Delete(ctx, key)
}

// measurement is the outcome of one timed load cell.
type measurement struct {
	ops     int
	elapsed time.Duration
	lat     []time.Duration // sorted
}

func (m measurement) rate() float64 {
	if m.elapsed <= 0 {
		return 0
	}
	return float64(m.ops) / m.elapsed.Seconds()
}

// quantile returns the q-quantile (nearest rank) of the sorted latencies
// in milliseconds.
func (m measurement) quantile(q float64) float64 {
	if len(m.lat) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(m.lat)))) - 1
	i = max(0, min(i, len(m.lat)-1))
	return float64(m.lat[i]) / float64(time.Millisecond)
}

// load runs op on conc goroutines, op index i counting up from start,
// until d has passed or maxOps operations were started (maxOps <= 0: no
// bound), after a warm-up of conc untimed operations that opens the
// connections. The first error stops the cell and is returned.
func load(ctx context.Context, conc int, d time.Duration, maxOps int, start *atomic.Int64, op func(ctx context.Context, i int64) error) (measurement, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	for range conc {
		wg.Go(func() {
			if err := op(ctx, start.Add(1)-1); err != nil {
				fail(err)
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return measurement{}, firstErr
	}

	var (
		started  atomic.Int64
		mu       sync.Mutex
		lat      []time.Duration
		deadline = time.Now().Add(d)
	)
	t0 := time.Now()
	for range conc {
		wg.Go(func() {
			local := make([]time.Duration, 0, 1024)
			defer func() {
				mu.Lock()
				lat = append(lat, local...)
				mu.Unlock()
			}()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if maxOps > 0 && started.Add(1) > int64(maxOps) {
					return
				}
				s := time.Now()
				if err := op(ctx, start.Add(1)-1); err != nil {
					fail(err)
					return
				}
				local = append(local, time.Since(s))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(t0)
	if firstErr != nil {
		return measurement{}, firstErr
	}
	if err := ctx.Err(); err != nil {
		return measurement{}, err
	}
	slices.Sort(lat)
	return measurement{ops: len(lat), elapsed: elapsed, lat: lat}, nil
}

// example is one official example resource used as a realistic body.
type example struct {
	name string
	typ  string
	body []byte
}

// MaxExampleBytes is the largest example the runner sends: the few
// examples above it (whole terminologies, large bundles) would measure
// JSON parsing rather than storage.
const MaxExampleBytes = 16 << 10

// loadExamples reads the *.json examples of dir in name order, keeping
// those of at most MaxExampleBytes that the validator accepts.
func loadExamples(dir string, v *fhir.Validator) ([]example, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []example
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			return nil, err
		}
		if len(data) > MaxExampleBytes {
			continue
		}
		info, err := v.Validate(data)
		if err != nil {
			continue
		}
		out = append(out, example{name: filepath.Base(n), typ: info.Type, body: data})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("bench: no usable FHIR examples (*.json of at most %d bytes) in %s: %w", MaxExampleBytes, dir, errNoExamples)
	}
	return out, nil
}

var errNoExamples = errors.New("no examples")

package fhirstore

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"fhirbucket/internal/s3test"
	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
)

// benchBackends are the backends the write/read benchmarks run on.
var benchBackends = []struct {
	name string
	open func(b testing.TB) storage.Bucket
	raw  int // raw requests measured per rate estimate
}{
	{"memstore", func(testing.TB) storage.Bucket { return memstore.New() }, 20000},
	{"minio", func(b testing.TB) storage.Bucket { return s3test.MinIO(b).NewNamespace(b) }, 400},
}

// parallel runs op(i) for i in [0, n) on conc goroutines and returns the
// elapsed time; the first error fails b.
func parallel(b *testing.B, n, conc int, op func(i int64) error) time.Duration {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	start := time.Now()
	for range conc {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				if err := op(i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	return time.Since(start)
}

// BenchmarkStore measures create, update and read at concurrency 1, 8 and
// 32, and on the same bucket in the same run the raw requests they are
// made of, reporting how close each operation gets to its request budget:
//
//	create: ratio = creates/s ÷ (raw If-None-Match PUTs/s ÷ 4)
//	update: ratio = updates/s ÷ 1/(1/GETs/s + 4/PUTs/s)
//	read:   ratio = reads/s ÷ raw GETs/s
func BenchmarkStore(b *testing.B) {
	body := patient("", "Bench")
	for _, bk := range benchBackends {
		for _, conc := range []int{1, 8, 32} {
			for _, op := range []string{"create", "update", "read"} {
				b.Run(fmt.Sprintf("%s/%s/c%d", bk.name, op, conc), func(b *testing.B) {
					ctx := context.Background()
					bucket := bk.open(b)
					s := newStore(b, bucket)
					// Raw rates on the same bucket.
					payload := bytes.Repeat([]byte("x"), 400)
					var runID = strconv.FormatInt(time.Now().UnixNano(), 36)
					putD := parallel(b, bk.raw, conc, func(i int64) error {
						_, err := bucket.Put(ctx, "raw/"+runID+"/"+strconv.FormatInt(i, 10), bytes.NewReader(payload),
							storage.PutOptions{IfNoneMatch: "*", ContentType: "application/json", Size: int64(len(payload))})
						return err
					})
					getD := parallel(b, bk.raw, conc, func(i int64) error {
						_, _, err := storage.ReadAll(ctx, bucket, "raw/"+runID+"/"+strconv.FormatInt(i%64, 10))
						return err
					})
					putRate := float64(bk.raw) / putD.Seconds()
					getRate := float64(bk.raw) / getD.Seconds()

					ids := make([]string, 64)
					if op != "create" {
						for i := range ids {
							ids[i] = fmt.Sprintf("b%02d", i)
							if _, _, err := s.Update(ctx, "acme", "Patient", ids[i], patient(ids[i], "seed"), WriteOptions{}); err != nil {
								b.Fatal(err)
							}
						}
					}
					// Spread writers over ids so that concurrency measures
					// throughput, not contention on one resource.
					b.ResetTimer()
					d := parallel(b, b.N, conc, func(i int64) error {
						var err error
						switch op {
						case "create":
							_, err = s.Create(ctx, "acme", "Patient", body)
						case "update":
							id := ids[i%int64(len(ids))]
							_, _, err = s.Update(ctx, "acme", "Patient", id, patient(id, "u"), WriteOptions{})
						case "read":
							_, err = s.Read(ctx, "acme", "Patient", ids[i%int64(len(ids))])
						}
						return err
					})
					b.StopTimer()
					rate := float64(b.N) / d.Seconds()
					var budget float64
					switch op {
					case "create":
						budget = putRate / 4
					case "update":
						budget = 1 / (1/getRate + 4/putRate)
					case "read":
						budget = getRate
					}
					b.ReportMetric(rate, "ops/s")
					b.ReportMetric(putRate, "rawPUT/s")
					b.ReportMetric(getRate, "rawGET/s")
					b.ReportMetric(rate/budget, "ratio")
				})
			}
		}
	}
}

// seedHistory writes n versions (spread round robin over resources ids,
// step apart in time) directly in the object layout, in key order (cheap
// for memstore), and returns the store's tenant base keys of the system
// events in order.
func seedHistory(b testing.TB, bucket storage.Bucket, n, resources int, start time.Time, step time.Duration) []string {
	type obj struct {
		key  string
		data []byte
	}
	objs := make([]obj, 0, 3*n+resources)
	var sys []string
	for i := range n {
		id := fmt.Sprintf("r%05d", i%resources)
		v := i/resources + 1
		ts := start.Add(time.Duration(i) * step).Truncate(time.Millisecond)
		content := fmt.Appendf(nil, `{"resourceType":"Patient","id":%q,"meta":{"versionId":"%d","lastUpdated":%q},"active":true}`, id, v, formatTime(ts))
		r := &Resource{Type: "Patient", ID: id, Version: v, Tenant: "acme", Content: content, CreatedAt: start, LastModified: ts, Method: MethodPut}
		env := encodeEnvelope(r)
		ev := encodeEvent(r)
		sk := systemEventKey("acme", "Patient", id, v, ts)
		sys = append(sys, sk)
		objs = append(objs,
			obj{"acme/" + versionKey("Patient", id, v), env},
			obj{"acme/" + typeEventKey("acme", "Patient", id, v, ts), ev},
			obj{"acme/" + sk, ev})
		if i >= n-resources {
			objs = append(objs, obj{"acme/" + currentKey("Patient", id), env})
		}
	}
	slices.SortFunc(objs, func(a, b obj) int {
		switch {
		case a.key < b.key:
			return -1
		case a.key > b.key:
			return 1
		}
		return 0
	})
	ctx := context.Background()
	for _, o := range objs {
		if _, err := bucket.Put(ctx, o.key, bytes.NewReader(o.data), storage.PutOptions{ContentType: contentTypeJSON, Size: int64(len(o.data))}); err != nil {
			b.Fatal(err)
		}
	}
	slices.Sort(sys)
	return sys
}

// BenchmarkHistoryPage measures one page (_count=50) of system, type and
// instance history over histories of 1,000 to 100,000 events (memstore),
// first page and a page from the middle, and reports the storage requests
// per page: they stay flat as the history grows.
func BenchmarkHistoryPage(b *testing.B) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, n := range []int{1000, 10000, 100000} {
		mem := memstore.New()
		sys := seedHistory(b, mem, n, 1000, start, 7*time.Millisecond)
		c := storage.NewCounter(mem)
		end := start.Add(time.Duration(n)*7*time.Millisecond + time.Hour)
		s := newStore(b, c, func(cfg *Config) { cfg.Now = func() time.Time { return end } })
		mid := sys[len(sys)/2][len(systemEventPrefix):]
		midTS, _ := parseEventName(mid, true)
		typeMid := typeEventKey("acme", "Patient", midTS.id, midTS.version, time.UnixMilli(midTS.ts))[len(typeEventPrefix("Patient")):]
		cases := []struct {
			name string
			q    HistoryQuery
		}{
			{"system/first", HistoryQuery{Count: 50}},
			{"system/middle", HistoryQuery{Count: 50, Cursor: base64.RawURLEncoding.EncodeToString([]byte(eventCursor + "1000:" + mid))}},
			{"type/first", HistoryQuery{Type: "Patient", Count: 50}},
			{"type/middle", HistoryQuery{Type: "Patient", Count: 50, Cursor: base64.RawURLEncoding.EncodeToString([]byte(eventCursor + "1000:" + typeMid))}},
			{"instance/first", HistoryQuery{Type: "Patient", ID: "r00007", Count: 50}},
		}
		for _, tc := range cases {
			b.Run(fmt.Sprintf("events=%d/%s", n, tc.name), func(b *testing.B) {
				ctx := context.Background()
				before := c.Counts()
				b.ResetTimer()
				for range b.N {
					p, err := s.History(ctx, "acme", tc.q)
					if err != nil {
						b.Fatal(err)
					}
					if len(p.Entries) == 0 {
						b.Fatal("empty page")
					}
				}
				b.StopTimer()
				cost := c.Counts().Sub(before)
				b.ReportMetric(float64(cost.List)/float64(b.N), "LISTs/page")
				b.ReportMetric(float64(cost.Get)/float64(b.N), "GETs/page")
			})
		}
	}
}

// TestHistoryCostFlat is the assertion behind BenchmarkHistoryPage: pages
// of a 100,000-event history cost no more requests than those of a
// 1,000-event history. A cold first page (a process that has not seen the
// history yet, an hour after the last write) pays for finding the newest
// events: O(log of the time span) LISTs; later pages start from the
// cursor and need one or two.
func TestHistoryCostFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("seeds 100,000 events")
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, n := range []int{2000, 100000} {
		mem := memstore.New()
		seedHistory(t, mem, n, 1000, start, 7*time.Millisecond)
		c := storage.NewCounter(mem)
		end := start.Add(time.Duration(n)*7*time.Millisecond + time.Hour)
		s := newStore(t, c, func(cfg *Config) { cfg.Now = func() time.Time { return end } })
		for _, q := range []HistoryQuery{{Count: 50}, {Type: "Patient", Count: 50}} {
			var first, rest storage.Counts
			var maxList int64
			prev := ""
			for page := range 20 {
				var p *HistoryPage
				var err error
				cost := costOf(c, func() { p, err = s.History(t.Context(), "acme", q) })
				if err != nil || len(p.Entries) != 50 || p.Next == "" {
					t.Fatalf("n=%d: page %d entries, next %q, %v", n, len(p.Entries), p.Next, err)
				}
				if cost.Get != 50 {
					t.Errorf("n=%d page %d: %d GETs", n, page, cost.Get)
				}
				if page == 0 {
					first = cost
				} else {
					rest = addCounts(rest, cost)
					maxList = max(maxList, cost.List)
				}
				top := p.Entries[0].ID + "/" + p.Entries[0].VersionID()
				if top == prev {
					t.Fatal("pages repeat")
				}
				prev = top
				q.Cursor = p.Next
			}
			t.Logf("%d events, %+v: first page %+v, next 19 pages %+v (at most %d LISTs each)", n, q.Type, first, rest, maxList)
			if first.List > 30 || maxList > 3 {
				t.Errorf("n=%d: first page %d LISTs, later pages up to %d", n, first.List, maxList)
			}
		}
	}
}

func addCounts(a, b storage.Counts) storage.Counts {
	return storage.Counts{Get: a.Get + b.Get, Put: a.Put + b.Put, Head: a.Head + b.Head, List: a.List + b.List, Delete: a.Delete + b.Delete}
}

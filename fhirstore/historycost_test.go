package fhirstore

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
)

// segment is a run of n events, step apart, starting gap after the
// previous run ended.
type segment struct {
	n    int
	gap  time.Duration
	step time.Duration
}

// seedTimes writes one Patient version per timestamp (round robin over
// resources ids) directly in the object layout, in key order, like
// seedHistory, and returns the time of the last event.
func seedSegments(t testing.TB, bucket storage.Bucket, start time.Time, resources int, segs []segment) time.Time {
	t.Helper()
	var times []time.Time
	at := start
	for _, sg := range segs {
		at = at.Add(sg.gap)
		for i := range sg.n {
			times = append(times, at.Add(time.Duration(i)*sg.step).Truncate(time.Millisecond))
		}
		at = at.Add(time.Duration(sg.n) * sg.step)
	}
	type obj struct {
		key  string
		data []byte
	}
	objs := make([]obj, 0, 3*len(times)+resources)
	for i, ts := range times {
		id := fmt.Sprintf("r%05d", i%resources)
		v := i/resources + 1
		content := fmt.Appendf(nil, `{"resourceType":"Patient","id":%q,"meta":{"versionId":"%d","lastUpdated":%q},"active":true}`, id, v, formatTime(ts))
		r := &Resource{Type: "Patient", ID: id, Version: v, Tenant: "acme", Content: content, CreatedAt: start, LastModified: ts, Method: MethodPut}
		env := encodeEnvelope(r)
		ev := encodeEvent(r)
		objs = append(objs,
			obj{"acme/" + versionKey("Patient", id, v), env},
			obj{"acme/" + typeEventKey("acme", "Patient", id, v, ts), ev},
			obj{"acme/" + systemEventKey("acme", "Patient", id, v, ts), ev})
		if i >= len(times)-resources {
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
	for _, o := range objs {
		if _, err := bucket.Put(t.Context(), o.key, bytes.NewReader(o.data), storage.PutOptions{ContentType: contentTypeJSON, Size: int64(len(o.data))}); err != nil {
			t.Fatal(err)
		}
	}
	return times[len(times)-1]
}

// TestHistoryCostDensityChanges pages through whole type and system
// histories whose density changes by orders of magnitude (long sparse
// spans, bursts in one second, quiet gaps) and asserts that every page
// with a cursor costs at most 3 LISTs and Count GETs, and that the pages
// together are exactly the history, newest first.
func TestHistoryCostDensityChanges(t *testing.T) {
	if testing.Short() {
		t.Skip("seeds and pages through tens of thousands of events")
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		segs     []segment
		count    int
		maxLists int64 // per page with a cursor
	}{
		{"sparse then burst", []segment{{10000, 0, 10 * time.Second}, {2000, time.Minute, 500 * time.Microsecond}}, 50, 3},
		{"burst then sparse", []segment{{2000, 0, 500 * time.Microsecond}, {10000, time.Minute, 10 * time.Second}}, 50, 3},
		{"dense then a few fast writes", []segment{{10000, 0, time.Millisecond}, {100, time.Second, 100 * time.Microsecond}}, 50, 3},
		{"bursts across month gaps", []segment{{3000, 0, 100 * time.Microsecond}, {50, 30 * 24 * time.Hour, time.Hour}, {3000, 30 * 24 * time.Hour, 2 * time.Millisecond}, {7, 24 * time.Hour, time.Second}}, 50, 3},
		{"sparse then burst, small pages", []segment{{3000, 0, 10 * time.Second}, {2000, time.Minute, 500 * time.Microsecond}, {3000, time.Minute, 10 * time.Second}}, 7, 3},
		{"burst then sparse, large pages", []segment{{5000, 0, 200 * time.Microsecond}, {5000, time.Minute, 10 * time.Second}}, 400, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := memstore.New()
			last := seedSegments(t, mem, start, 500, tc.segs)
			c := storage.NewCounter(mem)
			now := last.Add(time.Hour)
			for _, lvl := range []struct {
				q      HistoryQuery
				prefix string
			}{
				{HistoryQuery{Type: "Patient", Count: tc.count}, typeEventPrefix("Patient")},
				{HistoryQuery{Count: tc.count}, systemEventPrefix},
			} {
				want := expectedEvents(t, mem, "acme/", lvl.prefix, 0)
				s := newStore(t, c, func(cfg *Config) { cfg.Now = func() time.Time { return now } })
				q := lvl.q
				var got []entryID
				var lists []int64
				var first storage.Counts
				for page := 0; ; page++ {
					if page > len(want) {
						t.Fatal("paging does not end")
					}
					var p *HistoryPage
					var err error
					cost := costOf(c, func() { p, err = s.History(t.Context(), "acme", q) })
					if err != nil {
						t.Fatalf("page %d: %v", page, err)
					}
					if cost.Get > int64(len(p.Entries)) || len(p.Entries) > tc.count || cost.Put+cost.Head+cost.Delete != 0 {
						t.Errorf("page %d: %d entries cost %+v", page, len(p.Entries), cost)
					}
					if page == 0 {
						first = cost
					} else {
						lists = append(lists, cost.List)
						if cost.List > tc.maxLists {
							t.Errorf("%s level %q page %d: %d LISTs", tc.name, q.Type, page, cost.List)
						}
					}
					for _, e := range p.Entries {
						got = append(got, entryID{e.Type, e.ID, e.Version})
					}
					if p.Next == "" {
						break
					}
					if len(p.Entries) != tc.count {
						t.Errorf("page %d: %d entries, Count %d, and a next page", page, len(p.Entries), tc.count)
					}
					q.Cursor = p.Next
				}
				if !slices.Equal(got, want) {
					t.Errorf("level %q: %d entries, want %d; first differences: %v", q.Type, len(got), len(want), firstDiff(got, want))
				}
				hist := map[int64]int{}
				for _, l := range lists {
					hist[l]++
				}
				t.Logf("level %q: first page %d LISTs; pages 2..%d: LISTs per page -> pages %v, max %d", q.Type, first.List, len(lists)+1, hist, slices.Max(append(lists, 0)))
			}
		})
	}
}

// TestHistoryRegionLateEvents: events written between page requests with
// timestamps inside the window a cursor carries (as a roll-forward of an
// old claim writes them), more than a LIST page of them, are all listed,
// in order, and nothing is repeated.
func TestHistoryRegionLateEvents(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, late := range []int{3, 1500} {
		t.Run(fmt.Sprint(late), func(t *testing.T) {
			mem := memstore.New()
			last := seedSegments(t, mem, start, 100, []segment{{2000, 0, 10 * time.Millisecond}, {500, time.Minute, time.Second}})
			now := last.Add(time.Hour)
			s := newStore(t, mem, func(cfg *Config) { cfg.Now = func() time.Time { return now } })
			for _, lvl := range []struct {
				q        HistoryQuery
				withType bool
			}{{HistoryQuery{Type: "Patient", Count: 50}, false}, {HistoryQuery{Count: 50}, true}} {
				q := lvl.q
				var got []entryID
				for page := 0; ; page++ {
					p, err := s.History(t.Context(), "acme", q)
					if err != nil {
						t.Fatal(err)
					}
					for _, e := range p.Entries {
						got = append(got, entryID{e.Type, e.ID, e.Version})
					}
					if p.Next == "" {
						break
					}
					q.Cursor = p.Next
					if page == 3 && !lvl.withType {
						raw, _ := base64.RawURLEncoding.DecodeString(p.Next)
						c, ok := parseEventCursor(string(raw), false)
						if !ok || c.region < 0 {
							t.Fatalf("cursor %q has no region", raw)
						}
						bound, _ := parseEventName(c.name, false)
						// Late versions of new resources, in the
						// millisecond of the bound and below it.
						var segs []segment
						segs = append(segs, segment{late, 0, time.Duration(bound.ts-c.region) * time.Millisecond / time.Duration(2*late+1)})
						seedSegmentsAs(t, mem, time.UnixMilli(c.region), "late", segs)
					}
				}
				want := expectedEvents(t, mem, "acme/", map[bool]string{false: typeEventPrefix("Patient"), true: systemEventPrefix}[lvl.withType], 0)
				if !slices.Equal(got, want) {
					t.Errorf("%+v: %d entries, want %d; first differences: %v", lvl.q, len(got), len(want), firstDiff(got, want))
				}
			}
		})
	}
}

// seedSegmentsAs writes version 1 of Patient {idPrefix}{i} at each time of
// segs, directly in the object layout.
func seedSegmentsAs(t testing.TB, bucket storage.Bucket, start time.Time, idPrefix string, segs []segment) {
	t.Helper()
	at := start
	i := 0
	for _, sg := range segs {
		at = at.Add(sg.gap)
		for j := range sg.n {
			ts := at.Add(time.Duration(j) * sg.step).Truncate(time.Millisecond)
			id := fmt.Sprintf("%s%05d", idPrefix, i)
			i++
			content := fmt.Appendf(nil, `{"resourceType":"Patient","id":%q,"meta":{"versionId":"1","lastUpdated":%q}}`, id, formatTime(ts))
			r := &Resource{Type: "Patient", ID: id, Version: 1, Tenant: "acme", Content: content, CreatedAt: ts, LastModified: ts, Method: MethodPut}
			for key, data := range map[string][]byte{
				versionKey("Patient", id, 1):                 encodeEnvelope(r),
				currentKey("Patient", id):                    encodeEnvelope(r),
				typeEventKey("acme", "Patient", id, 1, ts):   encodeEvent(r),
				systemEventKey("acme", "Patient", id, 1, ts): encodeEvent(r),
			} {
				if _, err := bucket.Put(t.Context(), "acme/"+key, bytes.NewReader(data), storage.PutOptions{ContentType: contentTypeJSON, Size: int64(len(data))}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// TestHistoryCursorValidation: malformed type/system cursors -> ErrInvalid.
func TestHistoryCursorValidation(t *testing.T) {
	s := newStore(t, newMem())
	name := "1767225600000_p1_1_" + strings.Repeat("a", 32) + ".json"
	for _, tc := range []struct {
		cursor string
		typ    string
		ok     bool
	}{
		{"e2:10:1767225599000:5:-1:" + name, "Patient", true},
		{"e2:10:-1:5:-1:" + name, "Patient", true},
		{"e2:10:1767225599000:5:1767225598000:" + name, "Patient", true},
		{"e1:10:" + name, "Patient", true},
		{"e2:10:1767225600001:5:-1:" + name, "Patient", false},            // region above the bound
		{"e2:10:1767225599000:5:1767225599000:" + name, "Patient", false}, // dense not below region
		{"e2:10:-1:5:3:" + name, "Patient", false},                        // dense without region
		{"e2:10:1767225599000:0:-1:" + name, "Patient", false},            // probe < 1
		{"e2:0:1767225599000:5:-1:" + name, "Patient", false},             // window < 1
		{"e2:10:-2:5:-1:" + name, "Patient", false},
		{"e2:010:-1:5:-1:" + name, "Patient", false},
		{"e2:10:-1:5:" + name, "Patient", false},
		{"e2:10:-1:5:-1:" + name, "", false}, // a type-level name at system level
		{"e3:10:-1:5:-1:" + name, "Patient", false},
	} {
		_, err := s.History(t.Context(), "acme", HistoryQuery{Type: tc.typ, Cursor: base64.RawURLEncoding.EncodeToString([]byte(tc.cursor))})
		if tc.ok && err != nil || !tc.ok && !errors.Is(err, ErrInvalid) {
			t.Errorf("cursor %q at %q: %v", tc.cursor, tc.typ, err)
		}
	}
}

package fhirstore

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/storage"
)

// HistoryQuery selects a page of history.
type HistoryQuery struct {
	// Type is the resource type; "" means system level.
	Type string
	// ID, with Type, selects instance level.
	ID string
	// Since, when not zero, keeps only versions with lastUpdated >= Since.
	Since time.Time
	// Count is the page size: <= 0 means DefaultHistoryCount, at most
	// MaxCount.
	Count int
	// Cursor is HistoryPage.Next of the previous page ("" = first page).
	// It is opaque, tied to the level it came from; a bad cursor ->
	// ErrInvalid.
	Cursor string
}

// HistoryPage is one page of history.
type HistoryPage struct {
	Entries []*Resource // newest first; tombstones included (Deleted() true)
	Next    string      // "" when there are no more
}

// Cursor forms (base64url, no padding, of):
//
//	i1:{version}              instance level: the next (lower) version to return
//	e2:{window ms}:{region}:{probe}:{dense}:{name}
//	                          type/system level: the event name of the last entry
//	                          returned (the exclusive upper bound of the next page),
//	                          the listing window that filled the last page, and the
//	                          look-ahead state below it (see parseEventCursor)
//	e1:{window ms}:{name}     the same without look-ahead state (older cursors)
const (
	instanceCursor = "i1:"
	eventCursor    = "e1:" // still accepted, without a region
	regionCursor   = "e2:"
)

// History returns one page of history at instance (Type and ID), type
// (Type) or system level, newest first, tombstones included.
//
// Instance level reads current.json and then the versions below it (no
// LIST): the first page costs exactly Count GETs (current.json is the first
// entry), later pages Count GETs. A version claimed by an unfinished write
// is not listed until it is rolled forward, as for Read.
//
// Type and system level page over the event keys, which start with the
// zero-padded timestamp. S3 lists only upwards, so a page finds the newest
// events below its bound by listing time windows [lo, bound) (see
// collectEvents); the cost is in finding lo. Events are never read: the key
// names the version, and the page then GETs the Count version objects in
// parallel (bounded by Config.Parallelism). Keys are compared in full, so
// events sharing one millisecond are split across pages without loss or
// repetition.
//
// A page's cursor carries a region: a {ts} below which down to the bound
// every event was listed by that page and fits in one LIST page, holding
// at least the next page's events. The next page lists exactly that window
// (1 LIST), then spends what is left of 3 LISTs looking further down
// (extendRegion) until the region again holds enough for the page after,
// carrying the state of that search (window size, and where a stretch
// too dense to add begins) in its cursor. Searching across a change of
// density (a burst after a quiet month, a few writes after a bulk load)
// takes O(log) LISTs, but they are spread over the pages still served from
// above the change, so no single page pays for it.
//
// Cost: Count GETs plus, with a cursor, at most 3 LISTs (measured over
// whole histories with density changes by a factor of 20,000 and month
// gaps, Count 7 and 50: 1 LIST on most pages, never more than 3). When
// Count is a large part of a LIST page (measured: 400) the region holds
// only two or three pages, the look-ahead cannot get far enough ahead of a
// density change, and a page there may cost O(log) LISTs (6 measured).
// Events written between page requests with timestamps inside a region
// (a roll-forward of an old claim) only make it hold more: if it then
// overflows a LIST page the page searches, as without a region. A first
// page costs what it did before this look-ahead existed, O(log of the
// time span) LISTs when this process has not seen the history yet
// (measured: 26 for 100,000 events written over 12 minutes, an hour old),
// 1 or 2 otherwise; for Count <= 61 it finds the second page's events as
// well (which usually costs no more), and when the events it listed do not
// fill the second page it spends up to 2 more LISTs looking ahead.
// Neither depends on the number of events, except that a single
// millisecond holding more than 1,000 events is read through.
//
// Decisions: Count defaults to DefaultHistoryCount (50) and is capped at
// MaxCount (1000); Since keeps versions with lastUpdated >= Since at
// millisecond precision; a cursor from another level or query -> ErrInvalid
// when it does not parse for this level (it is not signed: a cursor only
// ever selects what the caller may read anyway).
func (s *Store) History(ctx context.Context, tenant string, q HistoryQuery) (*HistoryPage, error) {
	b, err := s.TenantBucket(tenant)
	if err != nil {
		return nil, err
	}
	sc := scope{b: b, tenant: tenant}
	if q.Type != "" && !fhir.IsResourceType(q.Type) {
		return nil, fmt.Errorf("%w: %q is not a FHIR R4 resource type", ErrInvalid, q.Type)
	}
	if q.ID != "" && (q.Type == "" || !fhir.ValidID(q.ID)) {
		return nil, fmt.Errorf("%w: instance history needs a resource type and a valid id, got %q/%q", ErrInvalid, q.Type, q.ID)
	}
	count := q.Count
	if count <= 0 {
		count = DefaultHistoryCount
	}
	count = min(count, MaxCount)
	var cursor string
	if q.Cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(q.Cursor)
		if err != nil {
			return nil, fmt.Errorf("%w: bad history cursor %q", ErrInvalid, q.Cursor)
		}
		cursor = string(raw)
	}
	if q.ID != "" {
		return s.instanceHistory(ctx, sc, q, count, cursor)
	}
	return s.eventHistory(ctx, sc, q, count, cursor)
}

func (s *Store) instanceHistory(ctx context.Context, sc scope, q HistoryQuery, count int, cursor string) (*HistoryPage, error) {
	var entries []*Resource
	top := 0
	if cursor == "" {
		cur, err := s.readCurrent(ctx, sc, q.Type, q.ID)
		if err != nil {
			return nil, err
		}
		if cur.res == nil {
			return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, q.Type, q.ID)
		}
		entries = append(entries, cur.res)
		top = cur.res.Version - 1
	} else {
		v, ok := strings.CutPrefix(cursor, instanceCursor)
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 1 || strconv.Itoa(n) != v {
			return nil, fmt.Errorf("%w: bad instance history cursor", ErrInvalid)
		}
		top = n
	}
	n := min(count-len(entries), top)
	older := make([]*Resource, n)
	err := s.forEach(ctx, n, func(ctx context.Context, i int) error {
		r, err := s.readVersion(ctx, sc, q.Type, q.ID, top-i)
		if errors.Is(err, ErrNotFound) {
			s.log.WarnContext(ctx, "fhirstore: version missing below current (run verify)",
				"tenant", sc.tenant, "type", q.Type, "id", q.ID, "version", top-i)
			return nil
		}
		older[i] = r
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, r := range older {
		if r != nil {
			entries = append(entries, r)
		}
	}
	page := &HistoryPage{}
	for _, r := range entries {
		if !q.Since.IsZero() && r.LastModified.Before(q.Since) {
			// lastUpdated never decreases along the versions (see write),
			// so nothing older can match either.
			return page, nil
		}
		page.Entries = append(page.Entries, r)
	}
	if low := top - n; low >= 1 {
		page.Next = base64.RawURLEncoding.EncodeToString([]byte(instanceCursor + strconv.Itoa(low)))
	}
	return page, nil
}

// sinceMS is the smallest {ts} whose versions satisfy lastUpdated >= since.
func sinceMS(since time.Time) int64 {
	if since.IsZero() {
		return 0
	}
	ms := since.UnixMilli()
	if time.UnixMilli(ms).Before(since) {
		ms++
	}
	return max(ms, 0)
}

func (s *Store) eventHistory(ctx context.Context, sc scope, q HistoryQuery, count int, cursor string) (*HistoryPage, error) {
	prefix, withType := systemEventPrefix, true
	if q.Type != "" {
		prefix, withType = typeEventPrefix(q.Type), false
	}
	hintKey := sc.tenant + "\x00" + prefix
	w := s.window
	if h, ok := s.windowHint.Load(hintKey); ok {
		w = h.(int64)
	}
	upper := "" // exclusive upper bound (full key); "" = none
	cur := eventCursorState{region: -1, dense: -1}
	if cursor != "" {
		var ok bool
		if cur, ok = parseEventCursor(cursor, withType); !ok {
			return nil, fmt.Errorf("%w: bad history cursor for this level", ErrInvalid)
		}
		w, upper = cur.w, prefix+cur.name
	}
	lb := &listCounter{Bucket: sc.b}
	floor := sinceMS(q.Since)
	need := count + 1
	if cursor == "" && 2*need <= regionKeys/4 {
		// A first page of small pages also finds the events of the
		// second: that costs about the same LISTs (windows hold up to a
		// LIST page), and the second page then starts from a window known
		// to fill it.
		need = 2 * (count + 1)
	}
	names, bottom, w, err := s.collectEvents(ctx, lb, hintKey, prefix, upper, floor, need, w, cur.region)
	if err != nil {
		return nil, err
	}
	s.windowHint.Store(hintKey, w)
	if len(names) > 0 {
		if r, ok := parseEventName(names[0], withType); ok {
			s.noteNewest(hintKey, r.ts)
		}
	}
	page := &HistoryPage{}
	if len(names) > count {
		// names[count:] are every event below the next page's bound down
		// to bottom: make sure that window holds enough for the next page
		// (and fits in one LIST page), so that the next page costs one
		// LIST, searching further down with what is left of this page's
		// budget.
		known := names[count:]
		bottom, known = trimRegion(known, bottom, withType)
		next := eventCursorState{w: w, region: bottom, probe: cur.probe, dense: cur.dense, name: names[count-1]}
		if next.probe <= 0 || bottom != cur.region {
			// A new window: start the look-ahead from this page's density.
			next.probe, next.dense = w, -1
		}
		budget := cursorPageLists - lb.n
		if cursor == "" {
			budget = min(firstPageProbes, max(firstPageProbes-lb.n, need-len(known)))
		}
		if bottom > floor && budget > 0 {
			next.region, next.probe, next.dense, err = extendRegion(ctx, lb, prefix, withType, floor, bottom, len(known), regionTarget(count+1), budget, next.probe, next.dense)
			if err != nil {
				return nil, err
			}
		}
		names = names[:count]
		page.Next = base64.RawURLEncoding.EncodeToString([]byte(next.String()))
	}
	refs := make([]eventRef, len(names))
	for i, n := range names {
		r, _ := parseEventName(n, withType) // collectEvents kept only names that parse
		if !withType {
			r.typ = q.Type
		}
		refs[i] = r
	}
	entries := make([]*Resource, len(refs))
	err = s.forEach(ctx, len(refs), func(ctx context.Context, i int) error {
		r, err := s.readVersion(ctx, sc, refs[i].typ, refs[i].id, refs[i].version)
		if errors.Is(err, ErrNotFound) {
			s.log.WarnContext(ctx, "fhirstore: history event names a missing version (run verify)",
				"tenant", sc.tenant, "event", prefix+names[i])
			return nil
		}
		entries[i] = r
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e != nil {
			page.Entries = append(page.Entries, e)
		}
	}
	return page, nil
}

// collectEvents returns up to need event names (without prefix) below
// upper (exclusive; "" = unbounded) and with {ts} >= floor, newest first,
// together with the window size to start the next page with.
//
// It lists windows [lo, hi) of {ts} downwards from the upper bound. A
// window that fits in one LIST page is taken whole (its keys are the
// newest remaining). A window that holds more (overflow) is not read
// through: its first page ends at some {ts} L, so the newest keys lie in
// [L, hi), and they are searched for by probing [x, hi) with x galloping
// up from L in steps sized from the density of the page (doubling), never
// above the midpoint of what is left: a probe that overflows moves L up,
// an empty one moves hi down, and one that fits is the answer. Empty
// windows with no known events below grow eightfold (after looking up,
// once, where the history starts, so that the growth stops there);
// windows with events double. Only a single millisecond holding more than
// a LIST page of events is read through.
//
// It returns every event it listed (not only need), newest first, and
// bottom: the {ts} down to which they are all the events below upper (-1
// when the last window was an overfull millisecond read in part). With
// region >= 0 (from a cursor) the first window is [region, upper).
//
// Cost: a first page of a process that has no hint takes O(log(time
// span)) LISTs; with a region that holds enough, one LIST. Searching
// across a change of density costs O(log) LISTs here (the gallop above
// starts at the bottom of an overflowing window); pages with a cursor
// avoid it by looking ahead (extendRegion). It never depends on the
// number of events, except for the read-through of one overfull
// millisecond.
func (s *Store) collectEvents(ctx context.Context, b storage.Bucket, hintKey, prefix, upper string, floor int64, need int, w, region int64) ([]string, int64, int64, error) {
	withType := prefix == systemEventPrefix
	var hi int64 // windows are [lo, hi) in ms, further cut by hiKey
	if upper == "" {
		hi = s.now().UnixMilli() + 1
	} else {
		r, _ := parseEventName(strings.TrimPrefix(upper, prefix), withType)
		hi = r.ts + 1
	}
	hi = min(hi, maxTS+1)
	hiKey := upper
	w = min(max(w, 1), maxTS) // a cursor's window is outside input
	firstLo := int64(-1)
	if region >= 0 && region < hi {
		// The cursor names a window below its bound that held few enough
		// events for one LIST page when the previous page listed it.
		firstLo = region
	} else if upper == "" {
		// A first page starts at the newest event this process has seen
		// (written or listed), when that is further back than the window:
		// one LIST then covers a quiet period of any length. It is only a
		// hint; newer events of other processes are in that window too.
		if h, ok := s.newestHint.Load(hintKey); ok && h.(int64) < hi-w && h.(int64) >= floor {
			firstLo = h.(int64)
		}
	}
	var out []string
	// bottom is the {ts} down to which every event below upper has been
	// listed (all of them are in out), -1 when that is not known.
	bottom := int64(-1)
	oldest := int64(-1) // {ts} of the oldest event, once looked up
	// While known >= 0 the newest events below hi are being searched for:
	// events exist at known (an overflowing window ended there), so the
	// newest lie in [known, hi). Each probe lists [x, hi) with x galloping
	// up from known (steps of g, doubling) but never above the midpoint,
	// so the search costs O(log) probes whether the events end just above
	// known (a cluster) or just below hi.
	known, g := int64(-1), int64(1)
	for hi > floor && len(out) < need {
		lo := max(hi-w, floor)
		hinted := firstLo >= 0
		switch {
		case hinted:
			lo, firstLo = max(firstLo, floor), -1
		case known >= 0:
			lo = max(known+min(g, (hi-known)/2), floor)
		}
		names, overflow, err := listWindow(ctx, b, prefix, lo, hiKey, 0)
		if err != nil {
			return nil, 0, 0, err
		}
		if overflow && hi-lo > 1 {
			// Size steps from the density of the upper half of this page
			// (twice what is still needed): where the page ends is where
			// the search goes on.
			half := names[len(names)/2:]
			first, _ := parseEventName(half[0], withType)
			last, _ := parseEventName(half[len(half)-1], withType)
			est := max((last.ts-first.ts+1)*int64(2*(need-len(out)))/int64(len(half)), 1)
			if known < 0 || est < w/4 {
				// A first overflow, or events much denser than on the
				// previous page (a cluster): restart the gallop at the new
				// density.
				g = est
			} else {
				g = min(g*2, maxTS)
			}
			known, w = last.ts, est
			continue
		}
		bottom = lo
		if overflow {
			// More than a page of events in one millisecond: only reading
			// all of it finds its newest.
			if names, _, err = listWindow(ctx, b, prefix, lo, hiKey, need-len(out)); err != nil {
				return nil, 0, 0, err
			}
			bottom = -1 // the millisecond is not known in full
		}
		for i := len(names) - 1; i >= 0; i-- {
			if _, ok := parseEventName(names[i], withType); ok {
				out = append(out, names[i])
			}
		}
		searching := known >= 0
		if !hinted {
			w = max(w, hi-lo)
		}
		hi, hiKey = lo, prefix+padTS(lo)
		switch {
		case len(names) > 0:
			known = -1 // the newest events are found; continue below them
			if len(names) > 4*need && w > 1 {
				w = max(w/2, 1) // denser than needed: start smaller next time
			} else if len(out) < need {
				w = min(w*2, maxTS)
			}
		case searching:
			// Empty: the newest events are below lo; keep searching.
		default:
			if oldest < 0 {
				first, err := b.List(ctx, storage.ListOptions{Prefix: prefix, MaxKeys: 1})
				if err != nil {
					return nil, 0, 0, fmt.Errorf("fhirstore: listing %s: %w", prefix, err)
				}
				if len(first.Objects) == 0 {
					return out, -1, w, nil
				}
				oldest = 0
				if r, ok := parseEventName(strings.TrimPrefix(first.Objects[0].Key, prefix), withType); ok {
					oldest = r.ts
				}
				floor = max(floor, oldest)
			}
			w = min(w*8, maxTS)
		}
	}
	if len(out) >= need {
		// Carry the window that held this page (with some slack) to the
		// next one: history density changes slowly.
		newest, _ := parseEventName(out[0], withType)
		oldestOut, _ := parseEventName(out[need-1], withType)
		w = max((newest.ts-oldestOut.ts+1)*3/2, 1)
	}
	return out, bottom, w, nil
}

// listWindow lists the event names (without prefix) with {ts} >= lo and
// key < hiKey ("" = unbounded), in ascending order. With keep == 0 it
// lists at most one page and reports overflow when the window holds more;
// with keep > 0 it lists the whole window and returns its last keep names.
func listWindow(ctx context.Context, b storage.Bucket, prefix string, lo int64, hiKey string, keep int) ([]string, bool, error) {
	opts := storage.ListOptions{Prefix: prefix, StartAfter: prefix + padTS(lo)}
	var names []string
	for {
		page, err := b.List(ctx, opts)
		if err != nil {
			return nil, false, fmt.Errorf("fhirstore: listing %s: %w", prefix, err)
		}
		for _, o := range page.Objects {
			if hiKey != "" && o.Key >= hiKey {
				return names, false, nil
			}
			names = append(names, strings.TrimPrefix(o.Key, prefix))
		}
		if page.Next == "" {
			return names, false, nil
		}
		if keep == 0 {
			return names, true, nil
		}
		if len(names) > keep {
			names = slices.Clone(names[len(names)-keep:])
		}
		opts.StartAfter = page.Next
	}
}

// noteNewest records ts as the newest event {ts} of the listing hintKey if
// it is newer than what is recorded.
func (s *Store) noteNewest(hintKey string, ts int64) {
	for {
		old, loaded := s.newestHint.LoadOrStore(hintKey, ts)
		if !loaded || old.(int64) >= ts || s.newestHint.CompareAndSwap(hintKey, old, ts) {
			return
		}
	}
}

// Costs of one type or system history page, in LISTs (see History).
const (
	// regionKeys is the most events a look-ahead window below a page's
	// bound may hold: one fewer than a LIST page, so that listing it
	// shows its end (a full page whose last key is the window's last
	// would look like an overflow).
	regionKeys = storage.MaxListKeys - 1
	// cursorPageLists is what a page with a cursor spends at most, in
	// steady state: one LIST for its events, the rest to look ahead.
	cursorPageLists = 3
	// firstPageProbes bounds the look-ahead of a first page: it never
	// makes a first page cost more than 2 LISTs.
	firstPageProbes = 2
)

// listCounter counts the LISTs made through it.
type listCounter struct {
	storage.Bucket
	n int
}

func (l *listCounter) List(ctx context.Context, opts storage.ListOptions) (storage.ListPage, error) {
	l.n++
	return l.Bucket.List(ctx, opts)
}

// parseEventCursor parses the type/system cursor forms:
//
//	e2:{window}:{region}:{probe}:{dense}:{name}
//	e1:{window}:{name} (no region)
//
// name is the event name of the last entry returned (the exclusive upper
// bound of the next page), window the listing window that filled the last
// page, region -1 or a {ts} <= name's such that every event in [region,
// name) was listed by the last page and fits in one LIST page, probe the
// window size of the next look-ahead below region, and dense -1 or a {ts}
// below region from which up to region there are too many events to add.
func parseEventCursor(cursor string, withType bool) (c eventCursorState, ok bool) {
	var fields []string
	switch {
	case strings.HasPrefix(cursor, eventCursor):
		fields = strings.SplitN(cursor[len(eventCursor):], ":", 2)
		if len(fields) != 2 {
			return c, false
		}
		fields = []string{fields[0], "-1", "1", "-1", fields[1]}
	case strings.HasPrefix(cursor, regionCursor):
		fields = strings.SplitN(cursor[len(regionCursor):], ":", 5)
		if len(fields) != 5 {
			return c, false
		}
	default:
		return c, false
	}
	var nums [4]int64
	for i := range nums {
		n, err := strconv.ParseInt(fields[i], 10, 64)
		if err != nil || strconv.FormatInt(n, 10) != fields[i] {
			return c, false
		}
		nums[i] = n
	}
	c = eventCursorState{w: nums[0], region: nums[1], probe: nums[2], dense: nums[3], name: fields[4]}
	r, ok := parseEventName(c.name, withType)
	if !ok || c.w < 1 || c.probe < 1 || c.region < -1 || c.region > r.ts || c.dense < -1 || (c.dense >= 0 && c.dense >= c.region) {
		return c, false
	}
	return c, true
}

// eventCursorState is a parsed type/system cursor (see parseEventCursor).
type eventCursorState struct {
	w, region, probe, dense int64
	name                    string
}

func (c eventCursorState) String() string {
	return regionCursor + strconv.FormatInt(c.w, 10) + ":" + strconv.FormatInt(c.region, 10) + ":" +
		strconv.FormatInt(c.probe, 10) + ":" + strconv.FormatInt(c.dense, 10) + ":" + c.name
}

// regionTarget is how many known events below a page's bound the
// look-ahead aims for: two pages, or 3/4 of a LIST page when that is more,
// but never more than one LIST page.
func regionTarget(need int) int {
	return min(regionKeys, max(2*need, regionKeys*3/4))
}

// trimRegion keeps, of the known events below the next page's bound
// (newest first, every event down to bottom), at most one LIST page: it
// raises bottom to a millisecond boundary. It returns bottom -1 when no
// boundary does (more than a LIST page in one millisecond).
func trimRegion(known []string, bottom int64, withType bool) (int64, []string) {
	if bottom < 0 || len(known) <= regionKeys {
		return bottom, known
	}
	cut, _ := parseEventName(known[regionKeys], withType)
	top, _ := parseEventName(known[0], withType)
	if top.ts == cut.ts {
		return -1, nil
	}
	i := regionKeys
	for i > 0 {
		r, _ := parseEventName(known[i-1], withType)
		if r.ts > cut.ts {
			break
		}
		i--
	}
	return cut.ts + 1, known[:i]
}

// extendRegion looks ahead below bottom, where every event below the next
// page's bound has been listed (n of them), with at most budget LISTs, until
// at least target events are known: it lists windows [x, bottom) and moves
// bottom down to x over each window that keeps the known events within
// regionKeys. While dense is -1, x is bottom-probe: an empty window makes
// probe eightfold, a thin one doubles it. A window with too many events is
// not read on: its page ends at some {ts} L, which becomes dense, and the
// edge of the dense stretch is searched for above it, as collectEvents
// does: x gallops up from dense in steps of probe (sized from the density
// of the page, then doubling), never above the midpoint between dense and
// bottom. It returns the new bottom, probe and dense, to go on with on the
// next page.
//
// This spreads the search for the events below a change of density over
// the pages that are still served from the events above it, so that no
// single page pays for the whole search.
func extendRegion(ctx context.Context, b storage.Bucket, prefix string, withType bool, floor, bottom int64, n, target, budget int, probe, dense int64) (int64, int64, int64, error) {
	probe = min(max(probe, 1), maxTS) // from a cursor: outside input
	if dense >= bottom {
		dense = -1
	}
	for ; budget > 0 && n < target && bottom > floor; budget-- {
		room := regionKeys - n
		x := max(bottom-probe, floor)
		if dense >= 0 {
			x = max(dense+min(probe, (bottom-dense)/2), floor)
		}
		names, overflow, err := listWindow(ctx, b, prefix, x, prefix+padTS(bottom), 0)
		if err != nil {
			return 0, 0, 0, err
		}
		if overflow {
			half := names[len(names)/2:]
			first, _ := parseEventName(half[0], withType)
			last, _ := parseEventName(half[len(half)-1], withType)
			if dense < 0 {
				probe = max((last.ts-first.ts+1)*int64(room)/int64(2*len(half)), 1)
			} else {
				probe = min(probe*2, maxTS)
			}
			dense = max(last.ts, x)
			continue
		}
		k := len(names)
		if k > room {
			// Keep the newest events that fit, up to a millisecond
			// boundary: the region is full.
			cut, _ := parseEventName(names[k-room-1], withType)
			kept := 0
			for i := k - 1; i >= 0; i-- {
				r, _ := parseEventName(names[i], withType)
				if r.ts <= cut.ts {
					break
				}
				kept++
			}
			probe = max((bottom-x)*int64(room)/int64(2*k), 1)
			bottom, n, dense = cut.ts+1, n+kept, -1
			continue
		}
		bottom, n = x, n+k
		if dense >= bottom {
			dense = -1 // the window reached the dense stretch: start over below
		}
		switch {
		case dense >= 0:
		case k == 0:
			probe = min(probe*8, maxTS)
		case k < room/4:
			probe = min(probe*2, maxTS)
		case k > room*3/4:
			probe = max(probe/2, 1)
		}
	}
	if dense >= bottom {
		dense = -1
	}
	return bottom, probe, dense, nil
}

package fhirstore

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/internal/layout"
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
// eventSearch.collect); the cost is in finding lo. Events are never read: the key
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
		vis, err := s.visible(ctx, sc, cur.res)
		if err != nil {
			return nil, err
		}
		if vis == nil {
			return nil, fmt.Errorf("%w: %s/%s", ErrNotFound, q.Type, q.ID)
		}
		if vis == cur.res {
			entries = append(entries, cur.res)
		}
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
	if older, err = s.filterVisible(ctx, sc, older); err != nil {
		return nil, err
	}
	entries = append(entries, older...)
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
	prefix, withType := layout.SystemEventsPrefix, true
	if q.Type != "" {
		prefix, withType = layout.TypeEventPrefix(q.Type), false
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
	es := &eventSearch{b: storage.NewCounter(sc.b), prefix: prefix, withType: withType,
		floor: sinceMS(q.Since), now: s.now, newest: -1}
	if h, ok := s.newestHint.Load(hintKey); ok {
		es.newest = h.(int64)
	}
	need := count + 1
	if cursor == "" && 2*need <= regionKeys/4 {
		// A first page of small pages also finds the events of the
		// second: that costs about the same LISTs (windows hold up to a
		// LIST page), and the second page then starts from a window known
		// to fill it.
		need = 2 * (count + 1)
	}
	found, err := es.collect(ctx, upper, need, w, cur.region)
	if err != nil {
		return nil, err
	}
	names, bottom, w := found.names, found.bottom, found.w
	s.windowHint.Store(hintKey, w)
	if len(names) > 0 {
		if r, ok := parseEvent(names[0], withType); ok {
			s.noteNewest(hintKey, r.TS)
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
		budget := cursorPageLists - es.lists()
		if cursor == "" {
			budget = min(firstPageProbes, max(firstPageProbes-es.lists(), need-len(known)))
		}
		if bottom > es.floor && budget > 0 {
			ahead, err := es.extendRegion(ctx, lookAhead{bottom: bottom, probe: next.probe, dense: next.dense},
				len(known), regionTarget(count+1), budget)
			if err != nil {
				return nil, err
			}
			next.region, next.probe, next.dense = ahead.bottom, ahead.probe, ahead.dense
		}
		names = names[:count]
		page.Next = base64.RawURLEncoding.EncodeToString([]byte(next.String()))
	}
	refs := make([]layout.Event, len(names))
	for i, n := range names {
		r, _ := parseEvent(n, withType) // collect kept only names that parse
		if !withType {
			r.Type = q.Type
		}
		refs[i] = r
	}
	entries := make([]*Resource, len(refs))
	err = s.forEach(ctx, len(refs), func(ctx context.Context, i int) error {
		r, err := s.readVersion(ctx, sc, refs[i].Type, refs[i].ID, refs[i].Version)
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
	if page.Entries, err = s.filterVisible(ctx, sc, entries); err != nil {
		return nil, err
	}
	return page, nil
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
	r, ok := parseEvent(c.name, withType)
	if !ok || c.w < 1 || c.probe < 1 || c.region < -1 || c.region > r.TS || c.dense < -1 || (c.dense >= 0 && c.dense >= c.region) {
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

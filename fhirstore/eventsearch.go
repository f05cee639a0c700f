package fhirstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/internal/layout"
	"fhirbucket/storage"
)

// eventSearch is one page's search of a type or system history listing
// for its newest events below a bound (see History for the costs it is
// built to keep).
type eventSearch struct {
	// b is the tenant's bucket, counting the LISTs this page made: a page
	// with a cursor spends at most cursorPageLists of them.
	b        *storage.Counter
	prefix   string // layout.TypeEventPrefix(type) or layout.SystemEventsPrefix
	withType bool   // system events: the names carry the type
	floor    int64  // only events with {ts} >= floor (Since)
	now      func() time.Time
	// newest is the newest event {ts} this process has written or listed
	// in this listing, -1 when none: a cost hint for a first page.
	newest int64
}

// found is what collect returns: every event it listed (names without the
// prefix, newest first), bottom, the {ts} down to which they are all the
// events below the bound (-1 when unknown), and the window size to start
// the next page with.
type found struct {
	names     []string
	bottom, w int64
}

// lists is the number of LISTs this page has made.
func (e *eventSearch) lists() int { return int(e.b.Counts().List) }

// parseEvent parses an event name (see layout.ParseEventName) and checks
// that its type and id are a FHIR resource type and id: a name that does
// not is no event of this store.
func parseEvent(name string, withType bool) (layout.Event, bool) {
	r, ok := layout.ParseEventName(name, withType)
	if !ok || (withType && !fhir.IsResourceType(r.Type)) || !fhir.ValidID(r.ID) {
		return r, false
	}
	return r, true
}

// collect returns up to need event names (without prefix) below
// upper (exclusive; "" = unbounded) and with {ts} >= e.floor, newest first,
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
// region >= 0 (from a cursor) the first window is [region, upper); with no
// upper bound and no region the first window starts at e.newest when that
// is further back than w.
//
// Cost: a first page of a process that has no hint takes O(log(time
// span)) LISTs; with a region that holds enough, one LIST. Searching
// across a change of density costs O(log) LISTs here (the gallop above
// starts at the bottom of an overflowing window); pages with a cursor
// avoid it by looking ahead (extendRegion). It never depends on the
// number of events, except for the read-through of one overfull
// millisecond.
func (e *eventSearch) collect(ctx context.Context, upper string, need int, w, region int64) (found, error) {
	b, prefix, withType, floor := e.b, e.prefix, e.withType, e.floor
	var hi int64 // windows are [lo, hi) in ms, further cut by hiKey
	if upper == "" {
		hi = e.now().UnixMilli() + 1
	} else {
		r, _ := parseEvent(strings.TrimPrefix(upper, prefix), withType)
		hi = r.TS + 1
	}
	hi = min(hi, layout.MaxTS+1)
	hiKey := upper
	w = min(max(w, 1), layout.MaxTS) // a cursor's window is outside input
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
		if e.newest >= 0 && e.newest < hi-w && e.newest >= floor {
			firstLo = e.newest
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
		names, overflow, err := e.listWindow(ctx, lo, hiKey, 0)
		if err != nil {
			return found{}, err
		}
		if overflow && hi-lo > 1 {
			// Size steps from the density of the upper half of this page
			// (twice what is still needed): where the page ends is where
			// the search goes on.
			half := names[len(names)/2:]
			first, _ := parseEvent(half[0], withType)
			last, _ := parseEvent(half[len(half)-1], withType)
			est := max((last.TS-first.TS+1)*int64(2*(need-len(out)))/int64(len(half)), 1)
			if known < 0 || est < w/4 {
				// A first overflow, or events much denser than on the
				// previous page (a cluster): restart the gallop at the new
				// density.
				g = est
			} else {
				g = min(g*2, layout.MaxTS)
			}
			known, w = last.TS, est
			continue
		}
		bottom = lo
		if overflow {
			// More than a page of events in one millisecond: only reading
			// all of it finds its newest.
			if names, _, err = e.listWindow(ctx, lo, hiKey, need-len(out)); err != nil {
				return found{}, err
			}
			bottom = -1 // the millisecond is not known in full
		}
		for i := len(names) - 1; i >= 0; i-- {
			if _, ok := parseEvent(names[i], withType); ok {
				out = append(out, names[i])
			}
		}
		searching := known >= 0
		if !hinted {
			w = max(w, hi-lo)
		}
		hi, hiKey = lo, prefix+layout.FormatTS(lo)
		switch {
		case len(names) > 0:
			known = -1 // the newest events are found; continue below them
			if len(names) > 4*need && w > 1 {
				w = max(w/2, 1) // denser than needed: start smaller next time
			} else if len(out) < need {
				w = min(w*2, layout.MaxTS)
			}
		case searching:
			// Empty: the newest events are below lo; keep searching.
		default:
			if oldest < 0 {
				first, err := b.List(ctx, storage.ListOptions{Prefix: prefix, MaxKeys: 1})
				if err != nil {
					return found{}, fmt.Errorf("fhirstore: listing %s: %w", prefix, err)
				}
				if len(first.Objects) == 0 {
					return found{names: out, bottom: -1, w: w}, nil
				}
				oldest = 0
				if r, ok := parseEvent(strings.TrimPrefix(first.Objects[0].Key, prefix), withType); ok {
					oldest = r.TS
				}
				floor = max(floor, oldest)
			}
			w = min(w*8, layout.MaxTS)
		}
	}
	if len(out) >= need {
		// Carry the window that held this page (with some slack) to the
		// next one: history density changes slowly.
		newest, _ := parseEvent(out[0], withType)
		oldestOut, _ := parseEvent(out[need-1], withType)
		w = max((newest.TS-oldestOut.TS+1)*3/2, 1)
	}
	return found{names: out, bottom: bottom, w: w}, nil
}

// listWindow lists the event names (without prefix) with {ts} >= lo and
// key < hiKey ("" = unbounded), in ascending order. With keep == 0 it
// lists at most one page and reports overflow when the window holds more;
// with keep > 0 it lists the whole window and returns its last keep names.
func (e *eventSearch) listWindow(ctx context.Context, lo int64, hiKey string, keep int) ([]string, bool, error) {
	b, prefix := e.b, e.prefix
	opts := storage.ListOptions{Prefix: prefix, StartAfter: prefix + layout.FormatTS(lo)}
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
	cut, _ := parseEvent(known[regionKeys], withType)
	top, _ := parseEvent(known[0], withType)
	if top.TS == cut.TS {
		return -1, nil
	}
	i := regionKeys
	for i > 0 {
		r, _ := parseEvent(known[i-1], withType)
		if r.TS > cut.TS {
			break
		}
		i--
	}
	return cut.TS + 1, known[:i]
}

// lookAhead is how far below a page's bound the events are known, carried
// from page to page in the cursor (see parseEventCursor): bottom is the
// region, probe the window size of the next look-ahead below it, and dense
// -1 or a {ts} below bottom from which up to bottom there are too many
// events to add.
type lookAhead struct {
	bottom, probe, dense int64
}

// extendRegion looks ahead below la.bottom, where every event below the next
// page's bound has been listed (n of them), with at most budget LISTs, until
// at least target events are known: it lists windows [x, bottom) and moves
// bottom down to x over each window that keeps the known events within
// regionKeys. While dense is -1, x is bottom-probe: an empty window makes
// probe eightfold, a thin one doubles it. A window with too many events is
// not read on: its page ends at some {ts} L, which becomes dense, and the
// edge of the dense stretch is searched for above it, as collect
// does: x gallops up from dense in steps of probe (sized from the density
// of the page, then doubling), never above the midpoint between dense and
// bottom. It returns the new bottom, probe and dense, to go on with on the
// next page.
//
// This spreads the search for the events below a change of density over
// the pages that are still served from the events above it, so that no
// single page pays for the whole search.
func (e *eventSearch) extendRegion(ctx context.Context, la lookAhead, n, target, budget int) (lookAhead, error) {
	prefix, withType, floor := e.prefix, e.withType, e.floor
	bottom, probe, dense := la.bottom, la.probe, la.dense
	probe = min(max(probe, 1), layout.MaxTS) // from a cursor: outside input
	if dense >= bottom {
		dense = -1
	}
	for ; budget > 0 && n < target && bottom > floor; budget-- {
		room := regionKeys - n
		x := max(bottom-probe, floor)
		if dense >= 0 {
			x = max(dense+min(probe, (bottom-dense)/2), floor)
		}
		names, overflow, err := e.listWindow(ctx, x, prefix+layout.FormatTS(bottom), 0)
		if err != nil {
			return lookAhead{}, err
		}
		if overflow {
			half := names[len(names)/2:]
			first, _ := parseEvent(half[0], withType)
			last, _ := parseEvent(half[len(half)-1], withType)
			if dense < 0 {
				probe = max((last.TS-first.TS+1)*int64(room)/int64(2*len(half)), 1)
			} else {
				probe = min(probe*2, layout.MaxTS)
			}
			dense = max(last.TS, x)
			continue
		}
		k := len(names)
		if k > room {
			// Keep the newest events that fit, up to a millisecond
			// boundary: the region is full.
			cut, _ := parseEvent(names[k-room-1], withType)
			kept := 0
			for i := k - 1; i >= 0; i-- {
				r, _ := parseEvent(names[i], withType)
				if r.TS <= cut.TS {
					break
				}
				kept++
			}
			probe = max((bottom-x)*int64(room)/int64(2*k), 1)
			bottom, n, dense = cut.TS+1, n+kept, -1
			continue
		}
		bottom, n = x, n+k
		if dense >= bottom {
			dense = -1 // the window reached the dense stretch: start over below
		}
		switch {
		case dense >= 0:
		case k == 0:
			probe = min(probe*8, layout.MaxTS)
		case k < room/4:
			probe = min(probe*2, layout.MaxTS)
		case k > room*3/4:
			probe = max(probe/2, 1)
		}
	}
	if dense >= bottom {
		dense = -1
	}
	return lookAhead{bottom: bottom, probe: probe, dense: dense}, nil
}

package layout

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// History events.

const (
	// TypeEventsPrefix holds the type-history events of every type.
	TypeEventsPrefix = "history/type/"
	// SystemEventsPrefix holds the system-history events.
	SystemEventsPrefix = "history/system/"
)

// TSDigits is the width of the zero-padded epoch-millisecond {ts} segment.
const TSDigits = 13

// MaxTS is the largest {ts} that fits in TSDigits (year 2286).
const MaxTS = 9999999999999

// TypeEventPrefix is history/type/{type}/, the events of one type.
func TypeEventPrefix(typ string) string { return TypeEventsPrefix + typ + "/" }

// FormatTS renders epoch milliseconds as {ts}: zero-padded to TSDigits, so
// that key order is time order.
func FormatTS(ms int64) string {
	s := strconv.FormatInt(ms, 10)
	if len(s) < TSDigits {
		s = strings.Repeat("0", TSDigits-len(s)) + s
	}
	return s
}

// EventSuffix is the {suffix} shared by the two events of one version: the
// first 128 bits, as 32 lowercase hex digits, of SHA-256 over the byte
// string
//
//	tenant "\x00" type "\x00" id "\x00" version
//
// where version is decimal without padding. NUL cannot occur in any of the
// four parts (they are validated), so the encoding is injective, and the
// suffix is a pure function of the version: emitting an event twice writes
// the same key.
func EventSuffix(tenant, typ, id string, version int) string {
	h := sha256.New()
	h.Write([]byte(tenant))
	h.Write([]byte{0})
	h.Write([]byte(typ))
	h.Write([]byte{0})
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write([]byte(strconv.Itoa(version)))
	sum := h.Sum(nil)
	return hex.EncodeToString(sum[:16])
}

// TypeEventKey is history/type/{type}/{ts}_{id}_{version}_{suffix}.json for
// the version whose lastUpdated is ts.
func TypeEventKey(tenant, typ, id string, version int, ts time.Time) string {
	return TypeEventPrefix(typ) + FormatTS(ts.UnixMilli()) + "_" + id + "_" + strconv.Itoa(version) + "_" +
		EventSuffix(tenant, typ, id, version) + jsonExt
}

// SystemEventKey is
// history/system/{ts}_{type}_{id}_{version}_{suffix}.json for the version
// whose lastUpdated is ts.
func SystemEventKey(tenant, typ, id string, version int, ts time.Time) string {
	return SystemEventsPrefix + FormatTS(ts.UnixMilli()) + "_" + typ + "_" + id + "_" + strconv.Itoa(version) + "_" +
		EventSuffix(tenant, typ, id, version) + jsonExt
}

// Event is what an event key says: everything a history page needs, so a
// page never reads the event objects.
type Event struct {
	TS      int64  // lastUpdated, epoch milliseconds
	Type    string // "" for a type event: its type is in the prefix
	ID      string
	Version int
	Suffix  string
}

// ParseEventName parses the last segment of an event key (the key without
// TypeEventPrefix or SystemEventsPrefix). withType tells whether the name
// carries the type (system events) or not (type events). It checks the
// shape: {ts} of TSDigits digits, a canonical version >= 1, a suffix of 32
// characters, non-empty type and id; the caller checks that the type and
// id are a FHIR type and id.
func ParseEventName(name string, withType bool) (Event, bool) {
	var e Event
	name, ok := strings.CutSuffix(name, jsonExt)
	if !ok {
		return e, false
	}
	parts := strings.Split(name, "_")
	want := 4
	if withType {
		want = 5
	}
	if len(parts) != want || len(parts[0]) != TSDigits {
		return e, false
	}
	ts, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil || ts < 0 {
		return e, false
	}
	e.TS = ts
	rest := parts[1:]
	if withType {
		e.Type = rest[0]
		rest = rest[1:]
		if e.Type == "" {
			return e, false
		}
	}
	e.ID = rest[0]
	v, ok := parseCount(rest[1])
	if !ok || e.ID == "" || len(rest[2]) != 32 {
		return e, false
	}
	e.Version = v
	e.Suffix = rest[2]
	return e, true
}

package fhirstore

import (
	"time"

	"fhirbucket/internal/layout"
)

// Short names for the keys of package layout, as the tests of this package
// use them.

func currentKey(typ, id string) string                 { return layout.CurrentKey(typ, id) }
func versionKey(typ, id string, v int) string          { return layout.VersionKey(typ, id, v) }
func typeEventPrefix(typ string) string                { return layout.TypeEventPrefix(typ) }
func padTS(ms int64) string                            { return layout.FormatTS(ms) }
func eventSuffix(tenant, typ, id string, v int) string { return layout.EventSuffix(tenant, typ, id, v) }

const systemEventPrefix = layout.SystemEventsPrefix

func typeEventKey(tenant, typ, id string, v int, ts time.Time) string {
	return layout.TypeEventKey(tenant, typ, id, v, ts)
}

func systemEventKey(tenant, typ, id string, v int, ts time.Time) string {
	return layout.SystemEventKey(tenant, typ, id, v, ts)
}

// eventRef is a parsed event name.
type eventRef struct {
	ts      int64
	typ, id string
	version int
	suffix  string
}

// parseEventName parses an event name as the history pages do.
func parseEventName(name string, withType bool) (eventRef, bool) {
	r, ok := parseEvent(name, withType)
	return eventRef{ts: r.TS, typ: r.Type, id: r.ID, version: r.Version, suffix: r.Suffix}, ok
}

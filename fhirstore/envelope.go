package fhirstore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"fhirbucket/fhir"
)

// contentTypeJSON is the content type of every envelope and event object.
const contentTypeJSON = "application/json"

// timeLayout is the envelope and event timestamp format: RFC 3339 in UTC
// with exactly millisecond precision, so that a time survives a round trip
// through storage unchanged and agrees with the {ts} of the event keys.
const timeLayout = "2006-01-02T15:04:05.000Z"

// tsDigits is the width of the zero-padded epoch-millisecond {ts} segment.
const tsDigits = 13

// maxTS is the largest {ts} that fits in tsDigits (year 2286).
const maxTS = 9999999999999

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// truncMS drops everything below the millisecond and converts to UTC: the
// resolution of meta.lastUpdated, envelope times and event keys.
func truncMS(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()).UTC() }

// Keys below the tenant base, exactly as docs/object-layout.md states.

func resourcePrefix(typ, id string) string { return "resources/" + typ + "/" + id + "/" }
func currentKey(typ, id string) string     { return resourcePrefix(typ, id) + "current.json" }
func historyPrefix(typ, id string) string  { return resourcePrefix(typ, id) + "_history/" }
func versionKey(typ, id string, v int) string {
	return historyPrefix(typ, id) + strconv.Itoa(v) + ".json"
}

func typeEventPrefix(typ string) string { return "history/type/" + typ + "/" }

const systemEventPrefix = "history/system/"

func padTS(ms int64) string {
	s := strconv.FormatInt(ms, 10)
	if len(s) < tsDigits {
		s = strings.Repeat("0", tsDigits-len(s)) + s
	}
	return s
}

// eventSuffix is the {suffix} shared by the two events of one version: the
// first 128 bits, as 32 lowercase hex digits, of SHA-256 over the byte string
//
//	tenant "\x00" type "\x00" id "\x00" version
//
// where version is decimal without padding. NUL cannot occur in any of the
// four parts (they are validated), so the encoding is injective, and the
// suffix is a pure function of the version: emitting an event twice writes
// the same key.
func eventSuffix(tenant, typ, id string, version int) string {
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

func typeEventKey(tenant, typ, id string, version int, ts time.Time) string {
	return typeEventPrefix(typ) + padTS(ts.UnixMilli()) + "_" + id + "_" + strconv.Itoa(version) + "_" +
		eventSuffix(tenant, typ, id, version) + ".json"
}

func systemEventKey(tenant, typ, id string, version int, ts time.Time) string {
	return systemEventPrefix + padTS(ts.UnixMilli()) + "_" + typ + "_" + id + "_" + strconv.Itoa(version) + "_" +
		eventSuffix(tenant, typ, id, version) + ".json"
}

// eventRef is what an event key says: everything a history page needs.
type eventRef struct {
	ts      int64
	typ, id string
	version int
	suffix  string
}

// parseEventName parses the last segment of an event key. withType tells
// whether the name carries the type (system events) or not (type events,
// whose type is the caller's).
func parseEventName(name string, withType bool) (eventRef, bool) {
	var r eventRef
	name, ok := strings.CutSuffix(name, ".json")
	if !ok {
		return r, false
	}
	parts := strings.Split(name, "_")
	want := 4
	if withType {
		want = 5
	}
	if len(parts) != want || len(parts[0]) != tsDigits {
		return r, false
	}
	ts, err := strconv.ParseInt(parts[0], 10, 64)
	if err != nil || ts < 0 {
		return r, false
	}
	r.ts = ts
	rest := parts[1:]
	if withType {
		r.typ = rest[0]
		rest = rest[1:]
		if !fhir.IsResourceType(r.typ) {
			return r, false
		}
	}
	r.id = rest[0]
	v, err := strconv.Atoi(rest[1])
	if err != nil || v < 1 || strconv.Itoa(v) != rest[1] || !fhir.ValidID(r.id) || len(rest[2]) != 32 {
		return r, false
	}
	r.version = v
	r.suffix = rest[2]
	return r, true
}

// envelope is the stored form of one version, field for field as in
// docs/object-layout.md. It is decoded with encoding/json (Content stays
// raw) and encoded by appendEnvelope, which fixes the field order.
type envelope struct {
	ResourceType string          `json:"resource_type"`
	ID           string          `json:"id"`
	VersionID    string          `json:"version_id"`
	TenantID     string          `json:"tenant_id"`
	FHIRVersion  string          `json:"fhir_version"`
	Content      json.RawMessage `json:"content"`
	CreatedAt    string          `json:"created_at"`
	LastModified string          `json:"last_modified"`
	DeletedAt    *string         `json:"deleted_at"`
	ETag         string          `json:"etag"`
	Method       Method          `json:"method"`
}

// encodeEnvelope renders r as an envelope. It is written by hand rather
// than through json.Marshal so that the content, already checked and
// rewritten by the fhir package, is not parsed and re-compacted a second
// time on the write path. Every other field is an ASCII token validated
// before any I/O (type, id, tenant, version, times, method), so no escaping
// is needed; the strings are still quoted with strconv to stay safe.
func encodeEnvelope(r *Resource) []byte {
	var b bytes.Buffer
	b.Grow(len(r.Content) + 320)
	b.WriteString(`{"resource_type":`)
	writeJSONString(&b, r.Type)
	b.WriteString(`,"id":`)
	writeJSONString(&b, r.ID)
	b.WriteString(`,"version_id":`)
	writeJSONString(&b, r.VersionID())
	b.WriteString(`,"tenant_id":`)
	writeJSONString(&b, r.Tenant)
	b.WriteString(`,"fhir_version":`)
	writeJSONString(&b, fhir.Version)
	b.WriteString(`,"content":`)
	b.Write(r.Content)
	b.WriteString(`,"created_at":`)
	writeJSONString(&b, formatTime(r.CreatedAt))
	b.WriteString(`,"last_modified":`)
	writeJSONString(&b, formatTime(r.LastModified))
	b.WriteString(`,"deleted_at":`)
	if r.DeletedAt == nil {
		b.WriteString("null")
	} else {
		writeJSONString(&b, formatTime(*r.DeletedAt))
	}
	b.WriteString(`,"etag":`)
	writeJSONString(&b, r.ETag())
	b.WriteString(`,"method":`)
	writeJSONString(&b, string(r.Method))
	b.WriteString("}\n")
	return b.Bytes()
}

func writeJSONString(b *bytes.Buffer, s string) {
	q, _ := json.Marshal(s) // cannot fail for a string
	b.Write(q)
}

// decodeEnvelope parses an envelope and checks that it agrees with the key
// it was read from (typ, id, and version when want > 0) and the tenant.
func decodeEnvelope(data []byte, tenant, typ, id string, want int) (*Resource, error) {
	var e envelope
	if err := json.Unmarshal(data, &e); err != nil {
		return nil, fmt.Errorf("envelope of %s/%s: %w", typ, id, err)
	}
	v, err := strconv.Atoi(e.VersionID)
	if err != nil || v < 1 {
		return nil, fmt.Errorf("envelope of %s/%s: bad version_id %q", typ, id, e.VersionID)
	}
	if e.ResourceType != typ || e.ID != id || (want > 0 && v != want) || e.TenantID != tenant {
		return nil, fmt.Errorf("envelope of %s/%s version %d says %s/%s version %d of tenant %q (want tenant %q)",
			typ, id, want, e.ResourceType, e.ID, v, e.TenantID, tenant)
	}
	r := &Resource{Type: e.ResourceType, ID: e.ID, Version: v, Tenant: e.TenantID, Content: e.Content, Method: e.Method}
	if r.CreatedAt, err = time.Parse(time.RFC3339Nano, e.CreatedAt); err != nil {
		return nil, fmt.Errorf("envelope of %s/%s: created_at: %w", typ, id, err)
	}
	if r.LastModified, err = time.Parse(time.RFC3339Nano, e.LastModified); err != nil {
		return nil, fmt.Errorf("envelope of %s/%s: last_modified: %w", typ, id, err)
	}
	if e.DeletedAt != nil {
		d, err := time.Parse(time.RFC3339Nano, *e.DeletedAt)
		if err != nil {
			return nil, fmt.Errorf("envelope of %s/%s: deleted_at: %w", typ, id, err)
		}
		r.DeletedAt = &d
	}
	switch r.Method {
	case MethodPost, MethodPut, MethodDelete:
	default:
		return nil, fmt.Errorf("envelope of %s/%s: unknown method %q", typ, id, r.Method)
	}
	return r, nil
}

// encodeEvent renders the body of a history event of version r.
func encodeEvent(r *Resource) []byte {
	var b bytes.Buffer
	b.WriteString(`{"resource_type":`)
	writeJSONString(&b, r.Type)
	b.WriteString(`,"id":`)
	writeJSONString(&b, r.ID)
	b.WriteString(`,"version_id":`)
	writeJSONString(&b, r.VersionID())
	b.WriteString(`,"timestamp":`)
	writeJSONString(&b, formatTime(r.LastModified))
	b.WriteString(`,"method":`)
	writeJSONString(&b, string(r.Method))
	b.WriteString(`,"deleted":`)
	b.WriteString(strconv.FormatBool(r.Deleted()))
	b.WriteString("}\n")
	return b.Bytes()
}

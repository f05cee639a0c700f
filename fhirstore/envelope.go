package fhirstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"fhirbucket/fhir"
)

// contentTypeJSON is the content type of every envelope and event object.
const contentTypeJSON = "application/json"

// timeLayout is the envelope and event timestamp format: RFC 3339 in UTC
// with exactly millisecond precision, so that a time survives a round trip
// through storage unchanged and agrees with the {ts} of the event keys.
const timeLayout = "2006-01-02T15:04:05.000Z"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// truncMS drops everything below the millisecond and converts to UTC: the
// resolution of meta.lastUpdated, envelope times and event keys.
func truncMS(t time.Time) time.Time { return time.UnixMilli(t.UnixMilli()).UTC() }

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
	Tx           string          `json:"transaction_id,omitempty"`
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
	if r.Tx != "" {
		b.WriteString(`,"transaction_id":`)
		writeJSONString(&b, r.Tx)
	}
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
	r := &Resource{Type: e.ResourceType, ID: e.ID, Version: v, Tenant: e.TenantID, Content: e.Content, Method: e.Method, Tx: e.Tx}
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
	if r.Tx != "" {
		b.WriteString(`,"transaction_id":`)
		writeJSONString(&b, r.Tx)
	}
	b.WriteString("}\n")
	return b.Bytes()
}

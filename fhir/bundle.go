package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
)

// Bundle types (http://hl7.org/fhir/bundle-type) the server emits or
// accepts.
const (
	BundleSearchset           = "searchset"
	BundleHistory             = "history"
	BundleBatch               = "batch"
	BundleTransaction         = "transaction"
	BundleBatchResponse       = "batch-response"
	BundleTransactionResponse = "transaction-response"
)

// Meta is the part of Resource.meta the server writes on the documents it
// builds.
type Meta struct {
	VersionID   string `json:"versionId,omitempty"`
	LastUpdated string `json:"lastUpdated,omitempty"` // FormatInstant
}

// Bundle is a Bundle resource whose entries keep their resources as raw
// JSON, so a stored resource is sent out as it was stored.
type Bundle struct {
	ResourceType string        `json:"resourceType"` // "Bundle"
	ID           string        `json:"id,omitempty"`
	Meta         *Meta         `json:"meta,omitempty"`
	Type         string        `json:"type"`
	Timestamp    string        `json:"timestamp,omitempty"`
	Total        *int          `json:"total,omitempty"`
	Link         []BundleLink  `json:"link,omitempty"`
	Entry        []BundleEntry `json:"entry,omitempty"`
}

// BundleLink is Bundle.link (self, next, previous...).
type BundleLink struct {
	Relation string `json:"relation"`
	URL      string `json:"url"`
}

// BundleEntry is Bundle.entry.
type BundleEntry struct {
	FullURL  string               `json:"fullUrl,omitempty"`
	Resource json.RawMessage      `json:"resource,omitempty"`
	Search   *BundleEntrySearch   `json:"search,omitempty"`
	Request  *BundleEntryRequest  `json:"request,omitempty"`
	Response *BundleEntryResponse `json:"response,omitempty"`
}

// BundleEntrySearch is Bundle.entry.search.
type BundleEntrySearch struct {
	Mode  string      `json:"mode,omitempty"` // match, include, outcome
	Score json.Number `json:"score,omitempty"`
}

// BundleEntryRequest is Bundle.entry.request.
type BundleEntryRequest struct {
	Method          string `json:"method"` // GET, HEAD, POST, PUT, DELETE, PATCH
	URL             string `json:"url"`
	IfNoneMatch     string `json:"ifNoneMatch,omitempty"`
	IfModifiedSince string `json:"ifModifiedSince,omitempty"`
	IfMatch         string `json:"ifMatch,omitempty"`
	IfNoneExist     string `json:"ifNoneExist,omitempty"`
}

// BundleEntryResponse is Bundle.entry.response.
type BundleEntryResponse struct {
	Status       string          `json:"status"` // e.g. "201 Created"
	Location     string          `json:"location,omitempty"`
	Etag         string          `json:"etag,omitempty"`
	LastModified string          `json:"lastModified,omitempty"`
	Outcome      json.RawMessage `json:"outcome,omitempty"`
}

// ParseBundle decodes an incoming Bundle (batch or transaction) without
// schema validation: validate it with a Validator first. It checks the
// shape fhirbucket relies on: a JSON object with resourceType "Bundle" and
// a type, entries that are objects, a resource (when present) that is a
// JSON object, and a request (when present) with a method and url. Each
// entry's resource is kept as raw JSON. Errors wrap ErrInvalid and name
// the entry index (0-based, as in Bundle.entry[i]).
func ParseBundle(data []byte) (*Bundle, error) {
	var head struct {
		ResourceType string            `json:"resourceType"`
		ID           string            `json:"id"`
		Type         string            `json:"type"`
		Timestamp    string            `json:"timestamp"`
		Total        *int              `json:"total"`
		Link         []BundleLink      `json:"link"`
		Entry        []json.RawMessage `json:"entry"`
	}
	if d := nesting(data); d > DefaultMaxDepth {
		return nil, invalidf("Bundle: JSON nested deeper than %d levels", DefaultMaxDepth)
	}
	if err := decodeObject(data, &head); err != nil {
		return nil, invalidf("Bundle: %v", err)
	}
	if head.ResourceType != "Bundle" {
		return nil, invalidf("resourceType is %q, want \"Bundle\"", head.ResourceType)
	}
	if head.Type == "" {
		return nil, invalidf("Bundle.type is missing")
	}
	b := &Bundle{
		ResourceType: "Bundle", ID: head.ID, Type: head.Type, Timestamp: head.Timestamp,
		Total: head.Total, Link: head.Link,
		Entry: make([]BundleEntry, 0, len(head.Entry)),
	}
	for i, raw := range head.Entry {
		var e BundleEntry
		if err := decodeObject(raw, &e); err != nil {
			return nil, invalidf("Bundle.entry[%d]: %v", i, err)
		}
		if len(e.Resource) > 0 && !isJSONObject(e.Resource) {
			return nil, invalidf("Bundle.entry[%d].resource: not a JSON object", i)
		}
		if len(e.Response.outcomeOrNil()) > 0 && !isJSONObject(e.Response.Outcome) {
			return nil, invalidf("Bundle.entry[%d].response.outcome: not a JSON object", i)
		}
		if r := e.Request; r != nil {
			switch r.Method {
			case "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH":
			case "":
				return nil, invalidf("Bundle.entry[%d].request.method is missing", i)
			default:
				return nil, invalidf("Bundle.entry[%d].request.method %q is not GET, HEAD, POST, PUT, DELETE or PATCH", i, r.Method)
			}
			if r.URL == "" {
				return nil, invalidf("Bundle.entry[%d].request.url is missing", i)
			}
		}
		b.Entry = append(b.Entry, e)
	}
	return b, nil
}

func (r *BundleEntryResponse) outcomeOrNil() json.RawMessage {
	if r == nil {
		return nil
	}
	return r.Outcome
}

// decodeObject decodes data, which must be one JSON object, into v,
// keeping numbers as json.Number.
func decodeObject(data []byte, v any) error {
	if !isJSONObject(data) {
		return fmt.Errorf("not a JSON object")
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return fmt.Errorf("data after the JSON object")
	}
	return nil
}

func isJSONObject(raw []byte) bool {
	i := skipWS(raw, 0)
	return i < len(raw) && raw[i] == '{'
}

// nesting returns how deeply objects and arrays nest in data, skipping
// strings; it does not check the grammar.
func nesting(data []byte) int {
	depth, deepest := 0, 0
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '"':
			for i++; i < len(data) && data[i] != '"'; i++ {
				if data[i] == '\\' {
					i++
				}
			}
		case '{', '[':
			depth++
			deepest = max(deepest, depth)
		case '}', ']':
			depth--
		}
	}
	return deepest
}

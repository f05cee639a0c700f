package bundle

import (
	"encoding/json"
	"errors"
	"fmt"

	"fhirbucket/fhir"
)

// head is what NewPlan reads of the Bundle itself.
type head struct {
	typ     string
	entries [][]byte
}

// parseHead checks the Bundle's JSON and its resourceType, type and entry
// members, and returns the type and the raw entries.
func parseHead(data []byte) (*head, error) {
	if !json.Valid(data) {
		var v json.RawMessage
		err := json.Unmarshal(data, &v) // for the message: where and why
		if err == nil {
			err = fmt.Errorf("not valid JSON")
		}
		return nil, invalidf("Bundle: %v", err)
	}
	var h head
	var rt, typ, entry []byte
	err := forEachMember(data, func(name string, v []byte) error {
		var dst *[]byte
		switch name {
		case "resourceType":
			dst = &rt
		case "type":
			dst = &typ
		case "entry":
			dst = &entry
		default:
			return nil
		}
		if *dst != nil {
			return invalidf("Bundle: duplicate member %q", name)
		}
		*dst = v
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			return nil, err
		}
		return nil, invalidf("Bundle: %v", err)
	}
	if rt == nil {
		return nil, invalidf("resourceType is missing, want \"Bundle\"")
	}
	if s, ok := stringValue(rt); !ok || s != "Bundle" {
		return nil, invalidf("resourceType is %s, want \"Bundle\"", rt)
	}
	if typ == nil {
		return nil, invalidf("Bundle.type is missing")
	}
	var ok bool
	if h.typ, ok = stringValue(typ); !ok {
		return nil, invalidf("Bundle.type is %s, not a string", jsonKind(typ))
	}
	switch h.typ {
	case fhir.BundleBatch, fhir.BundleTransaction, fhir.BundleHistory:
	default:
		return nil, invalidf("Bundle.type is %q; POST [base] takes a batch, transaction or history Bundle", h.typ)
	}
	if entry != nil && string(entry) != "null" {
		if entry[0] != '[' {
			return nil, invalidf("Bundle.entry is %s, not an array", jsonKind(entry))
		}
		if h.entries, err = elements(entry); err != nil {
			return nil, invalidf("Bundle.entry: %v", err)
		}
	}
	return &h, nil
}

// entryMembers is what NewPlan reads of one Bundle.entry.
type entryMembers struct {
	fullURL  string
	request  *fhir.BundleEntryRequest
	resource []byte // raw, nil when absent
}

// parseEntryMembers reads fullUrl, request and resource of one entry
// (valid JSON); other members (search, response) are not looked at.
func parseEntryMembers(raw []byte) (*entryMembers, error) {
	if raw[0] != '{' {
		return nil, invalidf("the entry is %s, not an object", jsonKind(raw))
	}
	var m entryMembers
	var seenFull, seenReq, seenRes bool
	err := forEachMember(raw, func(name string, v []byte) error {
		var seen *bool
		switch name {
		case "fullUrl":
			seen = &seenFull
		case "request":
			seen = &seenReq
		case "resource":
			seen = &seenRes
		default:
			return nil
		}
		if *seen {
			return invalidf("duplicate member %q", name)
		}
		*seen = true
		switch name {
		case "fullUrl":
			s, ok := stringValue(v)
			if !ok {
				return invalidf("fullUrl is %s, not a string", jsonKind(v))
			}
			m.fullURL = s
		case "request":
			if v[0] != '{' {
				return invalidf("request is %s, not an object", jsonKind(v))
			}
			var r fhir.BundleEntryRequest
			if err := json.Unmarshal(v, &r); err != nil {
				var ute *json.UnmarshalTypeError
				if errors.As(err, &ute) && ute.Field != "" {
					return invalidf("request.%s is a JSON %s, not a string", ute.Field, ute.Value)
				}
				return invalidf("request: %v", err)
			}
			m.request = &r
		case "resource":
			m.resource = v
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			return nil, err
		}
		return nil, invalidf("%v", err)
	}
	return &m, nil
}

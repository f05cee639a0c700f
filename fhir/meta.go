package fhir

import (
	"fmt"
	"strconv"
	"time"
)

// instantLayout is FHIR instant as fhirbucket writes it: UTC, exactly
// millisecond precision, so instants sort as strings and compare equal
// after a round trip through storage.
const instantLayout = "2006-01-02T15:04:05.000Z"

// FormatInstant formats t as a FHIR instant in UTC with millisecond
// precision, e.g. 2026-11-26T13:40:01.123Z.
func FormatInstant(t time.Time) string {
	return t.UTC().Format(instantLayout)
}

// ParseInstant parses a FHIR instant or dateTime, as used in _since and
// meta.lastUpdated: YYYY, YYYY-MM, YYYY-MM-DD, or
// YYYY-MM-DDThh:mm:ss[.fraction](Z|+hh:mm|-hh:mm). A partial date means the
// start of that period in UTC. The result is in UTC. Errors wrap ErrInvalid.
func ParseInstant(s string) (time.Time, error) {
	t, ok := parseInstant(s)
	if !ok {
		return time.Time{}, invalidf("%q is not a FHIR instant or dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.sss](Z|+hh:mm))", s)
	}
	return t, nil
}

func digits(s string, n int) (int, bool) {
	if len(s) < n {
		return 0, false
	}
	v := 0
	for i := 0; i < n; i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
		v = v*10 + int(s[i]-'0')
	}
	return v, true
}

func parseInstant(s string) (time.Time, bool) {
	year, ok := digits(s, 4)
	if !ok || year == 0 {
		return time.Time{}, false
	}
	month, day := 1, 1
	rest := s[4:]
	if rest == "" {
		return time.Date(year, 1, 1, 0, 0, 0, 0, time.UTC), true
	}
	if rest[0] != '-' {
		return time.Time{}, false
	}
	if month, ok = digits(rest[1:], 2); !ok || month < 1 || month > 12 {
		return time.Time{}, false
	}
	rest = rest[3:]
	if rest == "" {
		return time.Date(year, time.Month(month), 1, 0, 0, 0, 0, time.UTC), true
	}
	if rest[0] != '-' {
		return time.Time{}, false
	}
	if day, ok = digits(rest[1:], 2); !ok || day < 1 || day > daysIn(year, month) {
		return time.Time{}, false
	}
	rest = rest[3:]
	if rest == "" {
		return time.Date(year, time.Month(month), day, 0, 0, 0, 0, time.UTC), true
	}
	// Thh:mm:ss
	if len(rest) < 9 || rest[0] != 'T' || rest[3] != ':' || rest[6] != ':' {
		return time.Time{}, false
	}
	hour, ok1 := digits(rest[1:], 2)
	minute, ok2 := digits(rest[4:], 2)
	sec, ok3 := digits(rest[7:], 2)
	// Leap second 60 is allowed by the FHIR pattern but not representable
	// in time.Time; it is rejected rather than silently moved.
	if !ok1 || !ok2 || !ok3 || hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, false
	}
	rest = rest[9:]
	nsec := 0
	if rest != "" && rest[0] == '.' {
		i := 1
		for i < len(rest) && isDigit(rest[i]) {
			// Digits beyond nanoseconds are accepted and truncated.
			if i <= 9 {
				nsec = nsec*10 + int(rest[i]-'0')
			}
			i++
		}
		if i == 1 {
			return time.Time{}, false
		}
		for k := i; k <= 9; k++ {
			nsec *= 10
		}
		rest = rest[i:]
	}
	var offset int
	switch {
	case rest == "Z":
	case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && rest[3] == ':':
		oh, ok1 := digits(rest[1:], 2)
		om, ok2 := digits(rest[4:], 2)
		if !ok1 || !ok2 || oh > 14 || om > 59 || oh == 14 && om != 0 {
			return time.Time{}, false
		}
		offset = (oh*60 + om) * 60
		if rest[0] == '-' {
			offset = -offset
		}
	default:
		return time.Time{}, false
	}
	t := time.Date(year, time.Month(month), day, hour, minute, sec, nsec, time.UTC)
	t = t.Add(-time.Duration(offset) * time.Second)
	// An offset can push 0001-01-01 or 9999-12-31 out of the four-digit
	// years FHIR (and FormatInstant) can express.
	if y := t.Year(); y < 1 || y > 9999 {
		return time.Time{}, false
	}
	return t, true
}

func daysIn(year, month int) int {
	return time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// Peek returns the top-level resourceType and id of a resource without
// validating it against the schema. The document must be one well-formed
// JSON object whose resourceType is a string; id may be absent (""), but
// when present must be a string. Neither value is checked further (use
// IsResourceType and ValidID). Errors wrap ErrInvalid.
func Peek(resource []byte) (resourceType, id string, err error) {
	var haveType, haveID bool
	_, _, err = topLevelObject(resource, func(m member) error {
		switch {
		case m.keyIs(resource, "resourceType"):
			if haveType {
				return invalidf("duplicate member resourceType")
			}
			haveType = true
			s, ok := m.stringValue(resource)
			if !ok {
				return invalidf("resourceType is not a string")
			}
			resourceType = s
		case m.keyIs(resource, "id"):
			if haveID {
				return invalidf("duplicate member id")
			}
			haveID = true
			s, ok := m.stringValue(resource)
			if !ok {
				return invalidf("id is not a string")
			}
			id = s
		}
		return nil
	})
	if err != nil {
		return "", "", err
	}
	if !haveType {
		return "", "", invalidf("resourceType is missing")
	}
	return resourceType, id, nil
}

// SetMeta returns a copy of resource with the top-level id set to id, and
// meta.versionId and meta.lastUpdated set to versionID and
// FormatInstant(lastUpdated). Everything else is kept byte for byte, in
// order: an existing id, versionId or lastUpdated value is replaced in
// place; a missing id is inserted right after resourceType (or first when
// there is no resourceType); a missing meta object is inserted right after
// id; missing meta members are appended to meta. id and versionID must
// satisfy ValidID. Errors wrap ErrInvalid: malformed JSON, not an object,
// meta not an object, or duplicate id, meta, versionId or lastUpdated
// members (which one to change would be ambiguous).
func SetMeta(resource []byte, id, versionID string, lastUpdated time.Time) ([]byte, error) {
	if !ValidID(id) {
		return nil, invalidf("id %q is not a valid FHIR id", id)
	}
	if !ValidID(versionID) {
		return nil, invalidf("versionId %q is not a valid FHIR id", versionID)
	}
	var rt, idm, meta *member
	open, _, err := topLevelObject(resource, func(m member) error {
		switch {
		case m.keyIs(resource, "resourceType"):
			if rt == nil {
				rt = &m
			}
		case m.keyIs(resource, "id"):
			if idm != nil {
				return invalidf("duplicate member id")
			}
			idm = &m
		case m.keyIs(resource, "meta"):
			if meta != nil {
				return invalidf("duplicate member meta")
			}
			meta = &m
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	instant := FormatInstant(lastUpdated)

	// Edits are applied in document order; they never overlap.
	type edit struct {
		start, end int
		repl       []byte
	}
	var edits []edit
	quoted := func(b []byte, s string) []byte { return strconv.AppendQuote(b, s) }

	newMeta := func() []byte {
		b := append([]byte(`{"versionId":`), quoted(nil, versionID)...)
		b = append(b, `,"lastUpdated":`...)
		b = quoted(b, instant)
		return append(b, '}')
	}

	switch {
	case idm != nil:
		edits = append(edits, edit{idm.valStart, idm.valEnd, quoted(nil, id)})
		if meta == nil {
			b := append([]byte(`,"meta":`), newMeta()...)
			edits = append(edits, edit{idm.valEnd, idm.valEnd, b})
		}
	default:
		b := append([]byte(`"id":`), quoted(nil, id)...)
		if meta == nil {
			b = append(b, `,"meta":`...)
			b = append(b, newMeta()...)
		}
		if rt != nil {
			b = append([]byte{','}, b...)
			edits = append(edits, edit{rt.valEnd, rt.valEnd, b})
		} else {
			pos := open + 1
			if next := skipWS(resource, pos); resource[next] != '}' {
				b = append(b, ',')
			}
			edits = append(edits, edit{pos, pos, b})
		}
	}
	if meta != nil {
		repl, err := editMeta(resource[meta.valStart:meta.valEnd], versionID, instant)
		if err != nil {
			return nil, err
		}
		edits = append(edits, edit{meta.valStart, meta.valEnd, repl})
	}
	// The id edit comes first in document order except when meta precedes
	// id or resourceType in the source; sort the (at most two) edits.
	if len(edits) == 2 && edits[1].start < edits[0].start {
		edits[0], edits[1] = edits[1], edits[0]
	}
	extra := 0
	for _, e := range edits {
		extra += len(e.repl)
	}
	out := make([]byte, 0, len(resource)+extra)
	pos := 0
	for _, e := range edits {
		out = append(out, resource[pos:e.start]...)
		out = append(out, e.repl...)
		pos = e.end
	}
	return append(out, resource[pos:]...), nil
}

// editMeta sets versionId and lastUpdated in the raw meta object.
func editMeta(meta []byte, versionID, instant string) ([]byte, error) {
	if len(meta) == 0 || meta[0] != '{' {
		return nil, invalidf("meta is not a JSON object")
	}
	var vid, lu *member
	var last *member
	_, err := objectMembers(meta, 0, func(m member) error {
		switch {
		case m.keyIs(meta, "versionId"):
			if vid != nil {
				return invalidf("duplicate member meta.versionId")
			}
			vid = &m
		case m.keyIs(meta, "lastUpdated"):
			if lu != nil {
				return invalidf("duplicate member meta.lastUpdated")
			}
			lu = &m
		}
		last = &m
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(meta)+64)
	pos := 0
	replace := func(m *member, v string) {
		out = append(out, meta[pos:m.valStart]...)
		out = strconv.AppendQuote(out, v)
		pos = m.valEnd
	}
	// Replace in document order.
	first, second, fv, sv := vid, lu, versionID, instant
	if vid != nil && lu != nil && lu.valStart < vid.valStart {
		first, second, fv, sv = lu, vid, instant, versionID
	}
	if first != nil {
		replace(first, fv)
	}
	if second != nil {
		replace(second, sv)
	}
	// Append whatever is missing after the last member (or inside {}).
	var add []byte
	if vid == nil {
		add = append(add, `"versionId":`...)
		add = strconv.AppendQuote(add, versionID)
	}
	if lu == nil {
		if add != nil {
			add = append(add, ',')
		}
		add = append(add, `"lastUpdated":`...)
		add = strconv.AppendQuote(add, instant)
	}
	if add == nil {
		return append(out, meta[pos:]...), nil
	}
	at := 1 // just inside the opening brace
	if last != nil {
		at = last.valEnd
		add = append([]byte{','}, add...)
	}
	if at < pos {
		// Cannot happen: the last member ends after any replaced value.
		return nil, fmt.Errorf("fhir: internal error editing meta")
	}
	out = append(out, meta[pos:at]...)
	out = append(out, add...)
	return append(out, meta[at:]...), nil
}

package fhirstore

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Match is a parsed If-Match precondition.
//
// Decision: Any ("*") holds only when the resource exists and its current
// version is not a tombstone. RFC 9110 says "*" matches when the target has
// a current representation, and a deleted resource has none (a read answers
// 410). A version list, on the other hand, may name a tombstone's version:
// the 410 of a read carries the tombstone's ETag precisely so that a client
// can revive the resource with If-Match. On a resource that never existed
// every If-Match fails (ErrPreconditionFailed): a conditional update never
// turns into update-as-create.
type Match struct {
	Any      bool  // "*"
	Versions []int // the versions of W/"3", "3", and comma-separated lists of them
}

// matches reports whether the precondition holds for a resource whose
// current version is cur (nil: no resource).
func (m *Match) matches(cur *Resource) bool {
	if cur == nil {
		return false
	}
	if m.Any {
		return !cur.Deleted()
	}
	return slices.Contains(m.Versions, cur.Version)
}

// Matches reports whether the precondition holds for a resource whose
// visible current version is cur (nil: no resource).
func (m *Match) Matches(cur *Resource) bool { return m.matches(cur) }

// String renders m as an If-Match header value.
func (m *Match) String() string {
	if m.Any {
		return "*"
	}
	parts := make([]string, len(m.Versions))
	for i, v := range m.Versions {
		parts[i] = `W/"` + strconv.Itoa(v) + `"`
	}
	return strings.Join(parts, ", ")
}

// maxIfMatchLen bounds the header value parsed, so a hostile header cannot
// make the parser allocate without limit.
const maxIfMatchLen = 8 << 10

// ParseIfMatch parses an HTTP If-Match header value: `*`, `W/"3"`, `"3"`, or
// a comma-separated list of entity tags (optional whitespace around the
// commas). Weak and strong tags are treated alike: the tag is the FHIR
// versionId, which must be a decimal version number >= 1. "*" cannot be
// combined with tags. Anything else (empty, unquoted junk, non-numeric
// version, empty list elements) fails with an error wrapping ErrInvalid that
// quotes the value.
func ParseIfMatch(header string) (*Match, error) {
	bad := func(why string) error {
		q := header
		if len(q) > 200 {
			q = q[:200] + "..."
		}
		return fmt.Errorf("%w: If-Match %q: %s", ErrInvalid, q, why)
	}
	if len(header) > maxIfMatchLen {
		return nil, bad("too long")
	}
	h := strings.TrimSpace(header)
	if h == "" {
		return nil, bad("empty")
	}
	if h == "*" {
		return &Match{Any: true}, nil
	}
	m := &Match{}
	for part := range strings.SplitSeq(h, ",") {
		tag := strings.TrimSpace(part)
		if tag == "" {
			return nil, bad("empty list element")
		}
		if tag == "*" {
			return nil, bad(`"*" cannot be combined with entity tags`)
		}
		tag = strings.TrimPrefix(tag, "W/")
		if len(tag) < 2 || tag[0] != '"' || tag[len(tag)-1] != '"' {
			return nil, bad(`an entity tag must be quoted, e.g. W/"3"`)
		}
		val := tag[1 : len(tag)-1]
		v, err := strconv.Atoi(val)
		if err != nil || v < 1 || strconv.Itoa(v) != val {
			return nil, bad(fmt.Sprintf("%q is not a version number", val))
		}
		if !slices.Contains(m.Versions, v) {
			m.Versions = append(m.Versions, v)
		}
	}
	return m, nil
}

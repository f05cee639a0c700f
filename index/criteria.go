package index

import (
	"fmt"
	"net/url"
	"strings"

	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
)

// Limits of one set of criteria, so that a request costs a bounded number
// of requests: MaxValues identifier values (OR) and MaxCriteriaBytes of
// query string.
const (
	MaxValues        = 32
	MaxCriteriaBytes = 16 << 10
)

// Token is one value of the identifier search parameter.
type Token struct {
	// System is matched when HasSystem: "" then means "no system"
	// (identifier=|value); without HasSystem any system matches
	// (identifier=value).
	System    string
	HasSystem bool
	Value     string
}

// String renders t as a search value, with FHIR's escapes.
func (t Token) String() string {
	if !t.HasSystem {
		return escape(t.Value)
	}
	return escape(t.System) + "|" + escape(t.Value)
}

// Matches reports whether the identifier i satisfies t.
func (t Token) Matches(i Identifier) bool {
	return i.Value == t.Value && (!t.HasSystem || i.System == t.System)
}

// Criteria are the search criteria the index answers: identifier values
// (OR) and, when IDs is not empty, only those ids (AND).
type Criteria struct {
	Tokens []Token
	IDs    []string
}

// Match reports whether a resource with content satisfies c's tokens (the
// ids are the caller's to check).
func (c Criteria) Match(content []byte) bool {
	for _, i := range Identifiers(content) {
		for _, t := range c.Tokens {
			if t.Matches(i) {
				return true
			}
		}
	}
	return false
}

// ParseTokens parses one identifier parameter value: comma-separated
// tokens (OR), each "system|value", "|value" or "value", with FHIR's
// escapes (\, \| \$ \\) inside system and value. Errors wrap
// fhirstore.ErrInvalid (400), or fhirstore.ErrNotSupported for "system|"
// (any value of a system), which the index cannot answer.
func ParseTokens(s string) ([]Token, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("%w: identifier has no value; give system|value, |value or value", fhirstore.ErrInvalid)
	}
	parts, err := splitEscaped(s, ',')
	if err != nil {
		return nil, err
	}
	if len(parts) > MaxValues {
		return nil, fmt.Errorf("%w: identifier has %d values; at most %d are allowed", fhirstore.ErrInvalid, len(parts), MaxValues)
	}
	out := make([]Token, 0, len(parts))
	for _, p := range parts {
		sv, err := splitEscaped(p, '|')
		if err != nil {
			return nil, err
		}
		var t Token
		switch len(sv) {
		case 1:
		case 2:
			t.HasSystem = true
		default:
			return nil, fmt.Errorf("%w: identifier value %q has %d unescaped \"|\"; give system|value (escape a \"|\" inside a value as \\|)", fhirstore.ErrInvalid, p, len(sv)-1)
		}
		for i, x := range sv {
			if sv[i], err = unescape(x); err != nil {
				return nil, err
			}
		}
		if len(sv) == 1 {
			t.Value = sv[0]
		} else {
			t.System, t.Value = sv[0], sv[1]
		}
		if t.Value == "" {
			if t.HasSystem && t.System != "" {
				return nil, fmt.Errorf("%w: identifier=%s| (every value of a system) is not supported; give system|value", fhirstore.ErrNotSupported, t.System)
			}
			return nil, fmt.Errorf("%w: identifier value %q is empty", fhirstore.ErrInvalid, p)
		}
		out = append(out, t)
	}
	return out, nil
}

// ParseIDs parses an _id value: comma-separated FHIR ids.
func ParseIDs(s string) ([]string, error) {
	var out []string
	for id := range strings.SplitSeq(s, ",") {
		id = strings.TrimSpace(id)
		if !fhir.ValidID(id) {
			return nil, fmt.Errorf("%w: _id value %q is not a valid FHIR id", fhirstore.ErrInvalid, id)
		}
		out = append(out, id)
	}
	return out, nil
}

// ParseCriteria parses the criteria of a conditional interaction (the
// query of PUT/DELETE [type]?…, an If-None-Exist header, a conditional
// reference): identifier (required) and _id, each at most once. Anything
// else -> fhirstore.ErrNotSupported; no criteria or malformed ones ->
// fhirstore.ErrInvalid.
func ParseCriteria(query string) (Criteria, error) {
	var c Criteria
	if len(query) > MaxCriteriaBytes {
		return c, fmt.Errorf("%w: the criteria are %d bytes long; at most %d are allowed", fhirstore.ErrInvalid, len(query), MaxCriteriaBytes)
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return c, fmt.Errorf("%w: the criteria %q cannot be parsed: %v", fhirstore.ErrInvalid, query, err)
	}
	if len(q) == 0 {
		return c, fmt.Errorf("%w: the conditional request has no criteria; give identifier=system|value", fhirstore.ErrInvalid)
	}
	for name, vals := range q {
		switch name {
		case "identifier", "_id":
		default:
			return c, fmt.Errorf("%w: search parameter %q in conditional criteria: only identifier (and _id with it) is supported", fhirstore.ErrNotSupported, name)
		}
		if len(vals) != 1 {
			return c, fmt.Errorf("%w: %s is given %d times; give it once (commas mean OR)", fhirstore.ErrInvalid, name, len(vals))
		}
	}
	v, ok := q["identifier"]
	if !ok {
		return c, fmt.Errorf("%w: conditional criteria without identifier: only identifier (and _id with it) is supported; address a resource by id with %s/{id}", fhirstore.ErrNotSupported, "[type]")
	}
	if c.Tokens, err = ParseTokens(v[0]); err != nil {
		return c, err
	}
	if v, ok := q["_id"]; ok {
		if c.IDs, err = ParseIDs(v[0]); err != nil {
			return c, err
		}
	}
	return c, nil
}

// splitEscaped splits s at every sep not preceded by a backslash, keeping
// the escapes (unescape removes them).
func splitEscaped(s string, sep byte) ([]string, error) {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
			if i == len(s) {
				return nil, fmt.Errorf("%w: %q ends in a lone backslash (escape it as \\\\)", fhirstore.ErrInvalid, s)
			}
		case sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:]), nil
}

// unescape removes FHIR's search escapes: \, \| \$ \\.
func unescape(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		i++
		if i == len(s) || !strings.ContainsRune(`,|$\`, rune(s[i])) {
			return "", fmt.Errorf("%w: %q has an unknown escape; only \\, \\| \\$ and \\\\ are allowed", fhirstore.ErrInvalid, s)
		}
		b.WriteByte(s[i])
	}
	return b.String(), nil
}

func escape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `,`, `\,`, `|`, `\|`, `$`, `\$`).Replace(s)
}

package fhir

import (
	"encoding/json"
	"errors"
	"fmt"
)

// This file holds a small byte-level JSON scanner. SetMeta and Peek use it
// to find member spans in a document without decoding it, so numbers,
// key order and unknown content pass through untouched. Every function is
// safe on arbitrary input: it never indexes past the end, never recurses,
// and reports malformed JSON as an error.

var errUnexpectedEnd = errors.New("unexpected end of JSON input")

func syntaxErr(data []byte, i int, what string) error {
	if i >= len(data) {
		return fmt.Errorf("offset %d: %w", i, errUnexpectedEnd)
	}
	return fmt.Errorf("offset %d: invalid character %q %s", i, data[i], what)
}

func isWS(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipWS(data []byte, i int) int {
	for i < len(data) && isWS(data[i]) {
		i++
	}
	return i
}

// scanString expects data[i] == '"' and returns the index just past the
// closing quote, and whether the string contains escapes.
func scanString(data []byte, i int) (end int, escaped bool, err error) {
	if i >= len(data) || data[i] != '"' {
		return i, false, syntaxErr(data, i, "looking for beginning of string")
	}
	for i++; i < len(data); i++ {
		switch c := data[i]; {
		case c == '"':
			return i + 1, escaped, nil
		case c == '\\':
			escaped = true
			i++
			if i >= len(data) {
				return i, escaped, syntaxErr(data, i, "")
			}
			switch data[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				for k := 0; k < 4; k++ {
					i++
					if i >= len(data) || !isHex(data[i]) {
						return i, escaped, syntaxErr(data, i, "in \\u escape")
					}
				}
			default:
				return i, escaped, syntaxErr(data, i, "in string escape code")
			}
		case c < 0x20:
			return i, escaped, syntaxErr(data, i, "in string literal")
		}
	}
	return i, escaped, syntaxErr(data, i, "")
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// scanNumber returns the index just past the JSON number starting at i.
func scanNumber(data []byte, i int) (int, error) {
	start := i
	if i < len(data) && data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && data[i] >= '1' && data[i] <= '9':
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	default:
		return start, syntaxErr(data, i, "in numeric literal")
	}
	if i < len(data) && data[i] == '.' {
		i++
		if i >= len(data) || !isDigit(data[i]) {
			return i, syntaxErr(data, i, "after decimal point in numeric literal")
		}
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		if i >= len(data) || !isDigit(data[i]) {
			return i, syntaxErr(data, i, "in exponent of numeric literal")
		}
		for i < len(data) && isDigit(data[i]) {
			i++
		}
	}
	return i, nil
}

func scanLiteral(data []byte, i int, lit string) (int, error) {
	if len(data)-i < len(lit) || string(data[i:i+len(lit)]) != lit {
		return i, syntaxErr(data, i, "in literal "+lit)
	}
	return i + len(lit), nil
}

// scanScalar scans a string, number or literal starting at data[i].
func scanScalar(data []byte, i int) (int, error) {
	if i >= len(data) {
		return i, syntaxErr(data, i, "")
	}
	switch c := data[i]; {
	case c == '"':
		end, _, err := scanString(data, i)
		return end, err
	case c == '-' || isDigit(c):
		return scanNumber(data, i)
	case c == 't':
		return scanLiteral(data, i, "true")
	case c == 'f':
		return scanLiteral(data, i, "false")
	case c == 'n':
		return scanLiteral(data, i, "null")
	}
	return i, syntaxErr(data, i, "looking for beginning of value")
}

// scanKeyColon scans `"key" :` (plus surrounding space) starting at i and
// returns the index of the value that follows.
func scanKeyColon(data []byte, i int) (int, error) {
	i = skipWS(data, i)
	end, _, err := scanString(data, i)
	if err != nil {
		return end, err
	}
	i = skipWS(data, end)
	if i >= len(data) || data[i] != ':' {
		return i, syntaxErr(data, i, "after object key")
	}
	return skipWS(data, i+1), nil
}

// skipValue returns the index just past the JSON value starting at or
// after i (leading white space allowed). Nesting is tracked on an explicit
// stack, so hostile depth costs memory proportional to the input only.
func skipValue(data []byte, i int) (int, error) {
	var stack []byte
	var err error
	for {
		// A value starts here.
		i = skipWS(data, i)
		if i >= len(data) {
			return i, syntaxErr(data, i, "")
		}
		switch data[i] {
		case '{':
			i = skipWS(data, i+1)
			if i < len(data) && data[i] == '}' {
				i++
				break
			}
			stack = append(stack, '{')
			if i, err = scanKeyColon(data, i); err != nil {
				return i, err
			}
			continue
		case '[':
			i = skipWS(data, i+1)
			if i < len(data) && data[i] == ']' {
				i++
				break
			}
			stack = append(stack, '[')
			continue
		default:
			if i, err = scanScalar(data, i); err != nil {
				return i, err
			}
		}
		// A value ended at i: close containers until one wants another value.
		for {
			if len(stack) == 0 {
				return i, nil
			}
			i = skipWS(data, i)
			if i >= len(data) {
				return i, syntaxErr(data, i, "")
			}
			top := stack[len(stack)-1]
			if data[i] == ',' {
				i++
				if top == '{' {
					if i, err = scanKeyColon(data, i); err != nil {
						return i, err
					}
				}
				break
			}
			if top == '{' && data[i] == '}' || top == '[' && data[i] == ']' {
				stack = stack[:len(stack)-1]
				i++
				continue
			}
			return i, syntaxErr(data, i, "after container element")
		}
	}
}

// member is one member of a JSON object, by byte offsets into the document.
type member struct {
	keyStart, keyEnd int // the quoted key, quotes included
	valStart, valEnd int // the value
	escaped          bool
}

// keyIs reports whether the member's key equals name, decoding escapes
// only when the key has any.
func (m member) keyIs(data []byte, name string) bool {
	raw := data[m.keyStart:m.keyEnd]
	if !m.escaped {
		return string(raw[1:len(raw)-1]) == name
	}
	var s string
	return json.Unmarshal(raw, &s) == nil && s == name
}

// stringValue returns the member's value if it is a JSON string.
func (m member) stringValue(data []byte) (string, bool) {
	raw := data[m.valStart:m.valEnd]
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// objectMembers scans the object starting at data[i] == '{' and calls fn
// for every member in order. It returns the index just past the closing
// brace.
func objectMembers(data []byte, i int, fn func(member) error) (int, error) {
	if i >= len(data) || data[i] != '{' {
		return i, syntaxErr(data, i, "looking for beginning of object")
	}
	i = skipWS(data, i+1)
	if i < len(data) && data[i] == '}' {
		return i + 1, nil
	}
	for {
		var m member
		var err error
		i = skipWS(data, i)
		m.keyStart = i
		if m.keyEnd, m.escaped, err = scanString(data, i); err != nil {
			return m.keyEnd, err
		}
		i = skipWS(data, m.keyEnd)
		if i >= len(data) || data[i] != ':' {
			return i, syntaxErr(data, i, "after object key")
		}
		m.valStart = skipWS(data, i+1)
		if m.valEnd, err = skipValue(data, m.valStart); err != nil {
			return m.valEnd, err
		}
		if err := fn(m); err != nil {
			return m.valEnd, err
		}
		i = skipWS(data, m.valEnd)
		if i >= len(data) {
			return i, syntaxErr(data, i, "")
		}
		switch data[i] {
		case ',':
			i++
		case '}':
			return i + 1, nil
		default:
			return i, syntaxErr(data, i, "after object key:value pair")
		}
	}
}

// topLevelObject scans data as exactly one JSON object (with optional
// surrounding white space) and calls fn for each of its members.
func topLevelObject(data []byte, fn func(member) error) (open, close int, err error) {
	open = skipWS(data, 0)
	if open >= len(data) || data[open] != '{' {
		return 0, 0, invalidf("resource is not a JSON object")
	}
	end, err := objectMembers(data, open, fn)
	if err != nil {
		if errors.Is(err, ErrInvalid) {
			return 0, 0, err
		}
		return 0, 0, invalidf("malformed JSON: %w", err)
	}
	if rest := skipWS(data, end); rest != len(data) {
		return 0, 0, invalidf("malformed JSON: offset %d: data after the top-level object", rest)
	}
	return open, end - 1, nil
}

package bundle

import (
	"encoding/json"
	"fmt"
)

// The Bundle is read with json.Valid once and then by spans: the members
// of the Bundle and of each entry are found by skipping values, and each
// resource stays a slice of the input until the rewriter copies it. This
// costs a fraction of decoding through encoding/json, which would scan a
// resource several times (syntax check, raw copy, per level).

// forEachMember calls fn with the name and the raw value of each member of
// the JSON object obj, in order. obj must be valid JSON (json.Valid) and an
// object.
func forEachMember(obj []byte, fn func(name string, val []byte) error) error {
	i := skipWS(obj, 0)
	if i >= len(obj) || obj[i] != '{' {
		return fmt.Errorf("not a JSON object")
	}
	i = skipWS(obj, i+1)
	if i < len(obj) && obj[i] == '}' {
		return nil
	}
	for {
		kend, escaped, ok := scanString(obj, i)
		if !ok {
			return errSyntax(i)
		}
		name := string(obj[i+1 : kend-1])
		if escaped && json.Unmarshal(obj[i:kend], &name) != nil {
			return errSyntax(i)
		}
		j := skipWS(obj, kend)
		if j >= len(obj) || obj[j] != ':' {
			return errSyntax(j)
		}
		j = skipWS(obj, j+1)
		end, err := skipValue(obj, j)
		if err != nil {
			return err
		}
		if err := fn(name, obj[j:end]); err != nil {
			return err
		}
		i = skipWS(obj, end)
		if i >= len(obj) {
			return errSyntax(i)
		}
		switch obj[i] {
		case ',':
			i = skipWS(obj, i+1)
		case '}':
			return nil
		default:
			return errSyntax(i)
		}
	}
}

// elements returns the raw elements of the JSON array arr, which must be
// valid JSON and an array.
func elements(arr []byte) ([][]byte, error) {
	i := skipWS(arr, 0)
	if i >= len(arr) || arr[i] != '[' {
		return nil, fmt.Errorf("not a JSON array")
	}
	var out [][]byte
	i = skipWS(arr, i+1)
	if i < len(arr) && arr[i] == ']' {
		return out, nil
	}
	for {
		end, err := skipValue(arr, i)
		if err != nil {
			return nil, err
		}
		out = append(out, arr[i:end])
		i = skipWS(arr, end)
		if i >= len(arr) {
			return nil, errSyntax(i)
		}
		switch arr[i] {
		case ',':
			i = skipWS(arr, i+1)
		case ']':
			return out, nil
		default:
			return nil, errSyntax(i)
		}
	}
}

// stringValue decodes the raw JSON value v, which must be a string.
func stringValue(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	end, escaped, ok := scanString(v, 0)
	if !ok || end != len(v) {
		return "", false
	}
	if !escaped {
		return string(v[1 : len(v)-1]), true
	}
	var s string
	if json.Unmarshal(v, &s) != nil {
		return "", false
	}
	return s, true
}

// jsonKind names the kind of the raw JSON value v for messages.
func jsonKind(v []byte) string {
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

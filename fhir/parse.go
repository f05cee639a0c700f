package fhir

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// This file holds the structural pass of Validate: one scan over the bytes
// that checks the JSON grammar, rejects duplicate keys and excessive
// nesting, and builds the value the schema validator walks (objects as
// map[string]any, numbers as json.Number so decimals keep their text).
// Doing both in one pass costs less than a token pass followed by
// encoding/json, and it knows the location of every problem.

// pathSeg is one step of a location: a member name, or an array index
// when index >= 0.
type pathSeg struct {
	key   string
	index int
}

// rawIssue is an Issue whose path is still a list of steps: the root name
// (the resource type) is only known once the top-level object is read.
type rawIssue struct {
	segs []pathSeg
	code string
	msg  string
}

type treeParser struct {
	data     []byte
	maxDepth int
	path     []pathSeg
	issues   []rawIssue
	top      map[string]any // the top-level object, as far as it was read
}

// maxIssues bounds the issues collected from one document, so hostile
// input with a million duplicate keys cannot make a million issues.
const maxIssues = 100

func (p *treeParser) addIssue(code, format string, args ...any) {
	if len(p.issues) >= maxIssues {
		return
	}
	p.issues = append(p.issues, rawIssue{
		segs: append([]pathSeg(nil), p.path...),
		code: code,
		msg:  fmt.Sprintf(format, args...),
	})
}

// stopError ends the pass after a fatal problem (already recorded).
type stopError struct{}

func (stopError) Error() string { return "stop" }

// parse reads the whole document. The returned error is only ever a
// stopError; problems are in p.issues.
func (p *treeParser) parse() (any, error) {
	i := skipWS(p.data, 0)
	v, i, err := p.value(i, 0)
	if err != nil {
		return nil, err
	}
	if i = skipWS(p.data, i); i != len(p.data) {
		p.addIssue("structure", "malformed JSON at offset %d: data after the top-level value", i)
		return nil, stopError{}
	}
	return v, nil
}

func (p *treeParser) syntax(err error) error {
	p.addIssue("structure", "malformed JSON: %v", err)
	return stopError{}
}

func (p *treeParser) value(i, depth int) (any, int, error) {
	data := p.data
	if i >= len(data) {
		return nil, i, p.syntax(syntaxErr(data, i, ""))
	}
	switch c := data[i]; c {
	case '{', '[':
		if depth >= p.maxDepth {
			p.addIssue("structure", "JSON nested deeper than %d levels", p.maxDepth)
			return nil, i, stopError{}
		}
		if c == '{' {
			return p.object(i, depth+1)
		}
		return p.array(i, depth+1)
	case '"':
		end, escaped, err := scanString(data, i)
		if err != nil {
			return nil, end, p.syntax(err)
		}
		if !escaped {
			return string(data[i+1 : end-1]), end, nil
		}
		var s string
		if err := json.Unmarshal(data[i:end], &s); err != nil {
			return nil, end, p.syntax(err)
		}
		return s, end, nil
	case 't':
		end, err := scanLiteral(data, i, "true")
		if err != nil {
			return nil, end, p.syntax(err)
		}
		return true, end, nil
	case 'f':
		end, err := scanLiteral(data, i, "false")
		if err != nil {
			return nil, end, p.syntax(err)
		}
		return false, end, nil
	case 'n':
		end, err := scanLiteral(data, i, "null")
		if err != nil {
			return nil, end, p.syntax(err)
		}
		return nil, end, nil
	default:
		if c != '-' && !isDigit(c) {
			return nil, i, p.syntax(syntaxErr(data, i, "looking for beginning of value"))
		}
		end, err := scanNumber(data, i)
		if err != nil {
			return nil, end, p.syntax(err)
		}
		return json.Number(data[i:end]), end, nil
	}
}

func (p *treeParser) object(i, depth int) (any, int, error) {
	data := p.data
	obj := make(map[string]any)
	if depth == 1 {
		p.top = obj
	}
	i = skipWS(data, i+1)
	if i < len(data) && data[i] == '}' {
		return obj, i + 1, nil
	}
	for {
		i = skipWS(data, i)
		kend, escaped, err := scanString(data, i)
		if err != nil {
			return nil, kend, p.syntax(err)
		}
		var key string
		if escaped {
			if err := json.Unmarshal(data[i:kend], &key); err != nil {
				return nil, kend, p.syntax(err)
			}
		} else {
			key = string(data[i+1 : kend-1])
		}
		i = skipWS(data, kend)
		if i >= len(data) || data[i] != ':' {
			return nil, i, p.syntax(syntaxErr(data, i, "after object key"))
		}
		p.path = append(p.path, pathSeg{key: key, index: -1})
		v, end, err := p.value(skipWS(data, i+1), depth)
		if err != nil {
			return nil, end, err
		}
		if _, dup := obj[key]; dup {
			p.addIssue("structure", "duplicate member %q", key)
		} else {
			obj[key] = v
		}
		p.path = p.path[:len(p.path)-1]
		i = skipWS(data, end)
		if i >= len(data) {
			return nil, i, p.syntax(syntaxErr(data, i, ""))
		}
		switch data[i] {
		case ',':
			i++
		case '}':
			return obj, i + 1, nil
		default:
			return nil, i, p.syntax(syntaxErr(data, i, "after object key:value pair"))
		}
	}
}

func (p *treeParser) array(i, depth int) (any, int, error) {
	data := p.data
	arr := make([]any, 0, 4)
	i = skipWS(data, i+1)
	if i < len(data) && data[i] == ']' {
		return arr, i + 1, nil
	}
	for {
		p.path = append(p.path, pathSeg{index: len(arr)})
		v, end, err := p.value(skipWS(data, i), depth)
		if err != nil {
			return nil, end, err
		}
		arr = append(arr, v)
		p.path = p.path[:len(p.path)-1]
		i = skipWS(data, end)
		if i >= len(data) {
			return nil, i, p.syntax(syntaxErr(data, i, ""))
		}
		switch data[i] {
		case ',':
			i++
		case ']':
			return arr, i + 1, nil
		default:
			return nil, i, p.syntax(syntaxErr(data, i, "after array element"))
		}
	}
}

// rootName is the first step of every path: the resource type when the
// document declares a known one, else "Resource".
func rootName(top map[string]any) string {
	if rt, ok := top["resourceType"].(string); ok && IsResourceType(rt) {
		return rt
	}
	return "Resource"
}

// formatPath renders steps as a FHIRPath-like expression (see Issue.Path).
func formatPath(root string, segs []pathSeg) string {
	var b strings.Builder
	b.WriteString(root)
	for _, s := range segs {
		if s.index >= 0 {
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(s.index))
			b.WriteByte(']')
			continue
		}
		b.WriteByte('.')
		if isIdentifier(s.key) {
			b.WriteString(s.key)
		} else {
			b.WriteByte('`')
			b.WriteString(strings.ReplaceAll(strings.ReplaceAll(s.key, `\`, `\\`), "`", "\\`"))
			b.WriteByte('`')
		}
	}
	return b.String()
}

// isIdentifier reports whether s can stand unquoted in FHIRPath. Every
// element name the schema knows is one; unknown names may not be.
func isIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && isDigit(c) {
			continue
		}
		return false
	}
	return true
}

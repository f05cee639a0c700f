package bundle

import (
	"bytes"
	"encoding/json"
	"html"
	"slices"
	"strings"
	"unicode/utf8"
)

// This file holds the one pass over an entry's resource that produces what
// is stored: compact JSON, every string equal to a fullUrl of the bundle
// replaced by the Type/id of that entry, narrative links likewise, and the
// server-assigned id of a POST. It works on the bytes: numbers, key order
// and escapes are copied as they came, so a decimal never goes through
// float64 ("1.50" stays "1.50").

// maxRewriteDepth bounds the recursion of the rewriter. The Bundle decoder
// has already refused deeper input (encoding/json stops at 10000), and
// the Validator refuses far less deep resources; this is only a backstop.
const maxRewriteDepth = 10000

// substituter decides what becomes of a string value equal to a fullUrl.
type substituter interface {
	// subst returns the replacement for the string s, whether to replace
	// it, or an error that fails the entry.
	subst(s []byte) (string, bool, error)
	// conditional returns an error for a "reference" value that is a
	// conditional reference (Type?query).
	conditional(s string) error
}

type rewriter struct {
	in  []byte
	out []byte
	sub substituter
	// setID, when not "", becomes the top-level id: it replaces an id
	// member or is inserted right after resourceType.
	setID   string
	idSeen  bool
	afterRT int // offset in out just past the top-level resourceType value; -1 if none
}

// rewriteResource returns the compact, rewritten copy of resource, which
// must be one well-formed JSON object.
func rewriteResource(resource []byte, sub substituter, setID string) ([]byte, error) {
	w := &rewriter{in: resource, out: make([]byte, 0, len(resource)+len(setID)+8), sub: sub, setID: setID, afterRT: -1}
	i := skipWS(resource, 0)
	if i >= len(resource) || resource[i] != '{' {
		return nil, invalidf("resource is not a JSON object")
	}
	end, err := w.value(i, 0, keyOther)
	if err != nil {
		return nil, err
	}
	if skipWS(resource, end) != len(resource) {
		return nil, invalidf("resource: data after the JSON object")
	}
	if setID != "" && !w.idSeen {
		ins := `"id":` + quote(setID)
		switch {
		case w.afterRT >= 0:
			w.out = slices.Insert(w.out, w.afterRT, []byte(","+ins)...)
		case len(w.out) == 2: // {}
			w.out = slices.Insert(w.out, 1, []byte(ins)...)
		default:
			w.out = slices.Insert(w.out, 1, []byte(ins+",")...)
		}
	}
	return w.out, nil
}

func errSyntax(i int) error { return invalidf("resource: malformed JSON at offset %d", i) }

// keyKind is what the rewriter needs to know of a member name.
type keyKind uint8

const (
	keyOther        keyKind = iota
	keyID                   // id
	keyResourceType         // resourceType
	keyReference            // reference
	keyDiv                  // div (narrative XHTML)
	keyOidUUID              // ends in Oid or Uuid: valueOid, fixedUuid...
)

func kindOf(name []byte) keyKind {
	switch string(name) {
	case "id":
		return keyID
	case "resourceType":
		return keyResourceType
	case "reference":
		return keyReference
	case "div":
		return keyDiv
	}
	if bytes.HasSuffix(name, []byte("Oid")) || bytes.HasSuffix(name, []byte("Uuid")) {
		return keyOidUUID
	}
	return keyOther
}

// value copies the JSON value starting at in[i] (no leading white space)
// and returns the offset just past it. key is the kind of the member the
// value belongs to (array elements inherit it).
func (w *rewriter) value(i, depth int, key keyKind) (int, error) {
	in := w.in
	if i >= len(in) {
		return i, errSyntax(i)
	}
	switch c := in[i]; {
	case c == '{':
		if depth >= maxRewriteDepth {
			return i, invalidf("resource: JSON nested deeper than %d levels", maxRewriteDepth)
		}
		return w.object(i, depth+1)
	case c == '[':
		if depth >= maxRewriteDepth {
			return i, invalidf("resource: JSON nested deeper than %d levels", maxRewriteDepth)
		}
		return w.array(i, depth+1, key)
	case c == '"':
		return w.str(i, key)
	default: // number or literal: copied as is
		j := i
		for j < len(in) && !isDelim(in[j]) {
			j++
		}
		if j == i {
			return i, errSyntax(i)
		}
		w.out = append(w.out, in[i:j]...)
		return j, nil
	}
}

func isDelim(c byte) bool {
	return c == ',' || c == '}' || c == ']' || c == ':' || c == '"' || c == '{' || c == '[' || isWS(c)
}

func (w *rewriter) object(i, depth int) (int, error) {
	in := w.in
	w.out = append(w.out, '{')
	i = skipWS(in, i+1)
	if i < len(in) && in[i] == '}' {
		w.out = append(w.out, '}')
		return i + 1, nil
	}
	for n := 0; ; n++ {
		if n > 0 {
			w.out = append(w.out, ',')
		}
		kend, escaped, ok := scanString(in, i)
		if !ok {
			return kend, errSyntax(i)
		}
		key := kindOf(in[i+1 : kend-1])
		if escaped {
			var name string
			if json.Unmarshal(in[i:kend], &name) != nil {
				return kend, errSyntax(i)
			}
			key = kindOf([]byte(name))
		}
		j := skipWS(in, kend)
		if j >= len(in) || in[j] != ':' {
			return j, errSyntax(j)
		}
		j = skipWS(in, j+1)
		var end int
		var err error
		if depth == 1 && key == keyID && w.setID != "" {
			// The server's id replaces whatever id a POST sent.
			w.idSeen = true
			w.out = append(w.out, `"id":`...)
			w.out = append(w.out, quote(w.setID)...)
			end, err = skipValue(in, j)
		} else {
			w.out = append(w.out, in[i:kend]...)
			w.out = append(w.out, ':')
			end, err = w.value(j, depth, key)
			if depth == 1 && key == keyResourceType {
				w.afterRT = len(w.out)
			}
		}
		if err != nil {
			return end, err
		}
		i = skipWS(in, end)
		if i >= len(in) {
			return i, errSyntax(i)
		}
		switch in[i] {
		case ',':
			i = skipWS(in, i+1)
		case '}':
			w.out = append(w.out, '}')
			return i + 1, nil
		default:
			return i, errSyntax(i)
		}
	}
}

// array copies an array; its elements inherit the member name, so the
// strings of "reference": [...] (never in R4) or of a repeating uri
// element are treated like single values.
func (w *rewriter) array(i, depth int, key keyKind) (int, error) {
	in := w.in
	w.out = append(w.out, '[')
	i = skipWS(in, i+1)
	if i < len(in) && in[i] == ']' {
		w.out = append(w.out, ']')
		return i + 1, nil
	}
	for n := 0; ; n++ {
		if n > 0 {
			w.out = append(w.out, ',')
		}
		end, err := w.value(i, depth, key)
		if err != nil {
			return end, err
		}
		i = skipWS(in, end)
		if i >= len(in) {
			return i, errSyntax(i)
		}
		switch in[i] {
		case ',':
			i = skipWS(in, i+1)
		case ']':
			w.out = append(w.out, ']')
			return i + 1, nil
		default:
			return i, errSyntax(i)
		}
	}
}

// str copies the string at in[i], or its replacement.
func (w *rewriter) str(i int, key keyKind) (int, error) {
	in := w.in
	end, escaped, ok := scanString(in, i)
	if !ok {
		return end, errSyntax(i)
	}
	raw := in[i:end]
	switch {
	case key == keyDiv:
		return end, w.div(raw, escaped)
	case key == keyOidUUID:
		// valueOid, valueUuid, fixedUuid...: their types admit only
		// urn:oid:/urn:uuid: values, so a Type/id would make them invalid.
		w.out = append(w.out, raw...)
		return end, nil
	}
	var s []byte
	if escaped {
		var dec string
		if json.Unmarshal(raw, &dec) != nil {
			return end, errSyntax(i)
		}
		s = []byte(dec)
	} else {
		s = raw[1 : len(raw)-1]
	}
	if key == keyReference && bytes.IndexByte(s, '?') >= 0 {
		if err := w.sub.conditional(string(s)); err != nil {
			return end, err
		}
	}
	repl, ok, err := w.sub.subst(s)
	if err != nil {
		return end, err
	}
	if ok {
		w.out = append(w.out, quote(repl)...)
	} else {
		w.out = append(w.out, raw...)
	}
	return end, nil
}

// div copies a narrative's XHTML, rewriting href and src attributes whose
// value equals a fullUrl. The string is decoded only when it may hold one.
func (w *rewriter) div(raw []byte, escaped bool) error {
	if !utf8.Valid(raw) || !(strings.Contains(string(raw), "href") || strings.Contains(string(raw), "src")) {
		w.out = append(w.out, raw...)
		return nil
	}
	s := string(raw[1 : len(raw)-1])
	if escaped {
		if json.Unmarshal(raw, &s) != nil {
			return invalidf("resource: malformed JSON string in text.div")
		}
	}
	x, changed, err := rewriteLinks(s, w.sub)
	if err != nil {
		return err
	}
	if !changed {
		w.out = append(w.out, raw...)
		return nil
	}
	w.out = appendString(w.out, x)
	return nil
}

// rewriteLinks replaces the values of href and src attributes in the
// XHTML x that sub replaces. It reads start tags only (not text, comments
// or end tags), and only attributes written name="value" or name='value',
// white space allowed around "=". Malformed markup ends the scan; what
// was not looked at is copied as it is.
func rewriteLinks(x string, sub substituter) (string, bool, error) {
	var b strings.Builder
	last, changed := 0, false
	i := 0
scan:
	for i < len(x) {
		lt := strings.IndexByte(x[i:], '<')
		if lt < 0 {
			break
		}
		j := i + lt + 1
		if strings.HasPrefix(x[j:], "!--") {
			end := strings.Index(x[j+3:], "-->")
			if end < 0 {
				break
			}
			i = j + 3 + end + 3
			continue
		}
		if j < len(x) && (x[j] == '/' || x[j] == '!' || x[j] == '?') {
			i = j
			continue
		}
		for j < len(x) && isNameByte(x[j]) {
			j++
		}
		// Attributes until '>' or "/>".
		for {
			for j < len(x) && isXMLSpace(x[j]) {
				j++
			}
			if j >= len(x) {
				break scan
			}
			if x[j] == '>' || x[j] == '/' {
				i = j + 1
				continue scan
			}
			start := j
			for j < len(x) && isNameByte(x[j]) {
				j++
			}
			name := x[start:j]
			if name == "" {
				j++ // not markup we understand: step over it
				continue
			}
			for j < len(x) && isXMLSpace(x[j]) {
				j++
			}
			if j >= len(x) || x[j] != '=' {
				continue
			}
			j++
			for j < len(x) && isXMLSpace(x[j]) {
				j++
			}
			if j >= len(x) || x[j] != '"' && x[j] != '\'' {
				break scan
			}
			closing := strings.IndexByte(x[j+1:], x[j])
			if closing < 0 {
				break scan
			}
			vStart, vEnd := j+1, j+1+closing
			j = vEnd + 1
			if name != "href" && name != "src" {
				continue
			}
			val := x[vStart:vEnd]
			if strings.IndexByte(val, '&') >= 0 {
				val = html.UnescapeString(val)
			}
			repl, ok, err := sub.subst([]byte(val))
			if err != nil {
				return "", false, err
			}
			if ok {
				b.WriteString(x[last:vStart])
				b.WriteString(repl) // Type/id: nothing to escape
				last, changed = vEnd, true
			}
		}
	}
	if !changed {
		return x, false, nil
	}
	b.WriteString(x[last:])
	return b.String(), true, nil
}

func isNameByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == ':' || c == '.'
}

func isXMLSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isWS(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipWS(data []byte, i int) int {
	for i < len(data) && isWS(data[i]) {
		i++
	}
	return i
}

// scanString expects data[i] == '"' and returns the offset just past the
// closing quote and whether the string has escapes. The grammar was
// checked by the Bundle decoder; this only finds the end.
func scanString(data []byte, i int) (end int, escaped, ok bool) {
	if i >= len(data) || data[i] != '"' {
		return i, false, false
	}
	for i++; i < len(data); i++ {
		switch data[i] {
		case '"':
			return i + 1, escaped, true
		case '\\':
			escaped = true
			i++
		}
	}
	return i, escaped, false
}

// skipValue returns the offset just past the JSON value at data[i].
func skipValue(data []byte, i int) (int, error) {
	if i >= len(data) {
		return i, errSyntax(i)
	}
	switch data[i] {
	case '"':
		end, _, ok := scanString(data, i)
		if !ok {
			return end, errSyntax(i)
		}
		return end, nil
	case '{', '[':
		depth := 0
		for i < len(data) {
			switch data[i] {
			case '"':
				end, _, ok := scanString(data, i)
				if !ok {
					return end, errSyntax(i)
				}
				i = end
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
			i++
		}
		return i, errSyntax(i)
	default:
		j := i
		for j < len(data) && !isDelim(data[j]) {
			j++
		}
		return j, nil
	}
}

// quote returns s as a JSON string. The strings it is given (ids and
// Type/id references) have nothing to escape, but appendString copes
// with anything.
func quote(s string) string { return string(appendString(nil, s)) }

// appendString appends s as a JSON string, escaping only what JSON
// requires (", \ and control characters): < > & stay as they are, as in
// fhir.Marshal.
func appendString(out []byte, s string) []byte {
	const hex = "0123456789abcdef"
	out = append(out, '"')
	last := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		out = append(out, s[last:i]...)
		switch c {
		case '"', '\\':
			out = append(out, '\\', c)
		case '\n':
			out = append(out, '\\', 'n')
		case '\r':
			out = append(out, '\\', 'r')
		case '\t':
			out = append(out, '\\', 't')
		default:
			out = append(out, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		}
		last = i + 1
	}
	out = append(out, s[last:]...)
	return append(out, '"')
}

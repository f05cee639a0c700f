package layout

import (
	"errors"
	"fmt"
	"strings"
)

// EncodeSegment encodes a caller-chosen value as one key segment: every
// byte outside [A-Za-z0-9._-] becomes %XX (upper-case hex), so the result
// never holds "/" and distinct values give distinct segments. The values
// "." and ".." are encoded in full (%2E, %2E%2E), since as path segments
// they would name a folder. The empty value gives an empty segment, which
// storage rejects as a key: callers pass non-empty values.
func EncodeSegment(s string) string {
	if s == "." || s == ".." {
		return strings.Repeat("%2E", len(s))
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if !plain(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if plain(c) {
			b = append(b, c)
		} else {
			b = append(b, '%', hex[c>>4], hex[c&15])
		}
	}
	return string(b)
}

// ErrBadSegment is returned by DecodeSegment for a segment EncodeSegment
// cannot have produced.
var ErrBadSegment = errors.New("layout: not an encoded key segment")

// DecodeSegment is the inverse of EncodeSegment. It accepts only what
// EncodeSegment produces (upper-case hex, no escape of a byte that needs
// none, no byte outside [A-Za-z0-9._-%]), so that every value has exactly
// one segment and a listed key decodes to the value that built it.
func DecodeSegment(seg string) (string, error) {
	if !strings.Contains(seg, "%") {
		if seg == "." || seg == ".." {
			return "", fmt.Errorf("%w: %q", ErrBadSegment, seg)
		}
		for i := 0; i < len(seg); i++ {
			if !plain(seg[i]) {
				return "", fmt.Errorf("%w: %q holds %q", ErrBadSegment, seg, seg[i])
			}
		}
		return seg, nil
	}
	b := make([]byte, 0, len(seg))
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		switch {
		case plain(c):
			b = append(b, c)
		case c == '%' && i+2 < len(seg) && upperHex(seg[i+1]) >= 0 && upperHex(seg[i+2]) >= 0:
			b = append(b, byte(upperHex(seg[i+1])<<4|upperHex(seg[i+2])))
			i += 2
		default:
			return "", fmt.Errorf("%w: %q at byte %d", ErrBadSegment, seg, i)
		}
	}
	s := string(b)
	if EncodeSegment(s) != seg {
		return "", fmt.Errorf("%w: %q is not in canonical form", ErrBadSegment, seg)
	}
	return s, nil
}

func plain(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-'
}

func upperHex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

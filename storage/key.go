package storage

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxKeyLen is the longest key in bytes, as on S3.
const MaxKeyLen = 1024

// ValidKey reports whether key is usable on every driver. A valid key is
// non-empty UTF-8 of at most MaxKeyLen bytes, made of "/"-separated
// segments that are non-empty and neither "." nor "..", containing no NUL,
// no control characters, no backslash and no U+10FFFF (see AfterPrefix), and neither starting nor ending
// with "/". These rules keep the local-folder driver confined to its root
// and the same key meaning the same object on every backend.
func ValidKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty key", ErrInvalidKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: key is %d bytes, longer than %d", ErrInvalidKey, len(key), MaxKeyLen)
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("%w: key %q is not valid UTF-8", ErrInvalidKey, key)
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f || r == '\\' || r == 0x10FFFF {
			return fmt.Errorf("%w: key %q contains the character %U", ErrInvalidKey, key, r)
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch seg {
		case "":
			return fmt.Errorf("%w: key %q has an empty path segment (leading, trailing or double \"/\")", ErrInvalidKey, key)
		case ".", "..":
			return fmt.Errorf("%w: key %q has a %q path segment", ErrInvalidKey, key, seg)
		}
	}
	return nil
}

// ValidPrefix reports whether prefix is usable as a listing prefix or as the
// root of a Prefixed bucket: empty, or a valid key optionally followed by
// "/".
func ValidPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if err := ValidKey(strings.TrimSuffix(prefix, "/")); err != nil {
		return fmt.Errorf("prefix: %w", err)
	}
	return nil
}

package fhir

import (
	"errors"
	"fmt"
	"strings"
)

// The errors callers test with errors.Is.
var (
	// ErrInvalid: the input breaks a JSON or FHIR rule (HTTP 400). Errors
	// returned by Validate that wrap it are *ValidationError values
	// carrying every issue found.
	ErrInvalid = errors.New("fhir: invalid")
	// ErrTooLarge: the input is larger than the configured limit (HTTP 413).
	ErrTooLarge = errors.New("fhir: too large")
)

// Issue is one problem found in a resource.
type Issue struct {
	// Code is a FHIR issue-type code (http://hl7.org/fhir/issue-type):
	// "structure" for bad UTF-8, JSON syntax, duplicate keys, excessive
	// nesting, unknown elements and wrong JSON types (an array where an
	// object belongs); "required" for a missing element; "value" for a
	// value outside its pattern or enumeration, a bad id and an unknown
	// resource type; "too-long" for a maxLength breach; "invalid"
	// otherwise.
	Code string
	// Path locates the problem as a FHIRPath-like expression rooted at
	// the resource type, e.g. "Patient.name[0].given[1]": members are
	// joined with ".", array elements get "[i]" (0-based), and a member
	// name that is not a plain identifier is written in backticks
	// (Patient.`a b`). When the resource type is unknown the root is
	// "Resource". Path is empty when the problem concerns the document
	// as a whole (not JSON, not an object, too large).
	Path string
	// Message says what is wrong in words, without the path.
	Message string
}

func (i Issue) String() string {
	if i.Path == "" {
		return i.Message
	}
	return i.Path + ": " + i.Message
}

// ValidationError carries every issue found in one resource. It wraps
// ErrInvalid.
type ValidationError struct {
	Issues []Issue
}

// maxListedIssues bounds Error() so a resource with thousands of problems
// does not produce a megabyte log line; the full list stays in Issues.
const maxListedIssues = 5

func (e *ValidationError) Error() string {
	var b strings.Builder
	b.WriteString("fhir: invalid resource")
	for i, is := range e.Issues {
		if i == maxListedIssues {
			fmt.Fprintf(&b, "; and %d more", len(e.Issues)-i)
			break
		}
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(is.String())
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrInvalid) hold.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// invalidf returns an error wrapping ErrInvalid.
func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

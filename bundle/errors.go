package bundle

import (
	"errors"
	"fmt"
	"strconv"
)

// The errors callers test with errors.Is. Each is wrapped with a message
// that says what to fix.
var (
	// ErrInvalid: the Bundle or an entry breaks a FHIR rule or a rule of
	// this server (HTTP 400). An entry whose resource fails schema
	// validation wraps both ErrInvalid and the *fhir.ValidationError, so
	// errors.As recovers the issues for an OperationOutcome.
	ErrInvalid = errors.New("bundle: invalid")
	// ErrNotSupported: a valid request this server does not implement:
	// PATCH, conditional create/update/delete, conditional references,
	// operations ($name) and _search (HTTP 501).
	ErrNotSupported = errors.New("bundle: not supported")
	// ErrTooMany: the Bundle has more entries than Options.MaxEntries
	// (HTTP 413).
	ErrTooMany = errors.New("bundle: too many entries")
)

// EntryError is the error of one entry. In a transaction the first one
// found fails the whole plan and NewPlan returns it; in a batch it is the
// entry's Err and the other entries go on.
type EntryError struct {
	// Index is the entry's position in Bundle.entry, 0-based.
	Index int
	// FullURL is the entry's fullUrl as sent ("" when it has none).
	FullURL string
	// Err wraps ErrInvalid, ErrNotSupported or fhir.ErrTooLarge.
	Err error
}

func (e *EntryError) Error() string { return e.Where() + ": " + e.Err.Error() }

// Where names the entry: Bundle.entry[i], with its fullUrl when it has one.
func (e *EntryError) Where() string {
	s := "Bundle.entry[" + strconv.Itoa(e.Index) + "]"
	if e.FullURL != "" {
		s += " (fullUrl " + strconv.Quote(e.FullURL) + ")"
	}
	return s
}

// Unwrap gives errors.Is and errors.As access to the cause.
func (e *EntryError) Unwrap() error { return e.Err }

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

func notSupportedf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrNotSupported}, args...)...)
}

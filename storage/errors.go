package storage

import (
	"errors"
	"fmt"
)

// The sentinels every driver maps its native errors to. Test with errors.Is.
var (
	// ErrNotExist: the key does not exist.
	ErrNotExist = errors.New("storage: object does not exist")
	// ErrPreconditionFailed: an IfMatch or IfNoneMatch condition did not hold.
	ErrPreconditionFailed = errors.New("storage: precondition failed")
	// ErrConflict: the store reported a concurrent conditional write to the
	// same key (S3 409 ConditionalRequestConflict) and retries did not
	// resolve it. The outcome of the caller's write is "not written"; it
	// is not a lost precondition, and the caller may retry.
	ErrConflict = errors.New("storage: concurrent conditional write conflict")
	// ErrBucketNotFound: the bucket (or data folder) does not exist. A
	// missing bucket is never reported as an empty store.
	ErrBucketNotFound = errors.New("storage: bucket does not exist")
	// ErrAccessDenied: the credentials do not allow the operation.
	ErrAccessDenied = errors.New("storage: access denied")
	// ErrUnavailable: the store could not be reached or kept failing
	// (throttling, 5xx, network) after the driver's retries.
	ErrUnavailable = errors.New("storage: store unavailable")
	// ErrInvalidKey: the key breaks the rules of ValidKey.
	ErrInvalidKey = errors.New("storage: invalid key")
	// ErrInvalidArgument: an option value is not allowed (for example an
	// IfNoneMatch other than "*", or IfMatch and IfNoneMatch together).
	ErrInvalidArgument = errors.New("storage: invalid argument")
)

// Error carries the operation and key of a failed call around one of the
// sentinels above (or a driver error that maps to none of them).
type Error struct {
	Op  string // "get", "put", "stat", "delete", "list"
	Key string // key or prefix
	Err error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s %q: %v", e.Op, e.Key, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// CheckPutOptions validates the combination of preconditions in opts.
func CheckPutOptions(opts PutOptions) error {
	if opts.IfNoneMatch != "" && opts.IfNoneMatch != "*" {
		return fmt.Errorf("%w: IfNoneMatch must be \"*\" or empty, got %q", ErrInvalidArgument, opts.IfNoneMatch)
	}
	if opts.IfNoneMatch != "" && opts.IfMatch != "" {
		return fmt.Errorf("%w: IfMatch and IfNoneMatch are mutually exclusive", ErrInvalidArgument)
	}
	return nil
}

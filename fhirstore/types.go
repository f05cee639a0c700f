package fhirstore

import (
	"encoding/json"
	"errors"
	"strconv"
	"time"
)

// The errors callers test with errors.Is. Each is wrapped with a message
// that says what to fix.
var (
	// ErrNotFound: no such resource, or no such version.
	ErrNotFound = errors.New("fhirstore: not found")
	// ErrGone: the resource (or the version asked for) is deleted.
	ErrGone = errors.New("fhirstore: deleted")
	// ErrVersionConflict: another writer took the version this write
	// needed, and internal retries did not get through (HTTP 409).
	ErrVersionConflict = errors.New("fhirstore: version conflict")
	// ErrPreconditionFailed: the expected version (If-Match) is not the
	// current one (HTTP 412).
	ErrPreconditionFailed = errors.New("fhirstore: precondition failed")
	// ErrInvalid: the input breaks a FHIR or protocol rule (HTTP 400).
	ErrInvalid = errors.New("fhirstore: invalid")
	// ErrInvalidTenant: the tenant id is malformed, reserved, or not mapped
	// to a bucket (HTTP 400).
	ErrInvalidTenant = errors.New("fhirstore: invalid tenant")
	// ErrNotSupported: a valid request this store does not implement (HTTP 501).
	ErrNotSupported = errors.New("fhirstore: not supported")
)

// Method is how a version came to be.
type Method string

// The methods recorded in envelopes and history events.
const (
	MethodPost   Method = "POST"
	MethodPut    Method = "PUT"
	MethodDelete Method = "DELETE"
)

// Resource is one stored version of a resource: the envelope of the object
// layout. Content is the resource JSON with id, meta.versionId and
// meta.lastUpdated set by the store; for a tombstone it is the content of
// the version before the delete.
type Resource struct {
	Type         string
	ID           string
	Version      int
	Tenant       string
	Content      json.RawMessage
	CreatedAt    time.Time
	LastModified time.Time
	DeletedAt    *time.Time
	Method       Method
	// Tx is the id of the transaction that wrote this version ("" for a
	// write outside a transaction); see tx.go for who sees it when.
	Tx string
}

// Deleted reports whether this version is a tombstone.
func (r *Resource) Deleted() bool { return r.DeletedAt != nil }

// VersionID is meta.versionId as a string.
func (r *Resource) VersionID() string { return strconv.Itoa(r.Version) }

// ETag is the weak HTTP entity tag of this version, W/"<version>".
func (r *Resource) ETag() string { return `W/"` + r.VersionID() + `"` }

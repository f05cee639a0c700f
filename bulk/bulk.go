// Package bulk holds what the bulk operations ($export, later
// $bulk-submit) share: jobs whose state lives in the bucket under a lease
// (Runner claims, renews and resumes them in every server process), a
// bounded streaming NDJSON part writer, and the Bulk Data manifest. It
// knows the lease and storage contracts, not what a job does.
package bulk

import (
	"encoding/json"
	"errors"
)

// Job statuses, the "status" of every job state document.
const (
	StatusInProgress = "in-progress"
	StatusCompleted  = "completed"
	StatusFailed     = "failed"
)

// Terminal reports whether status is one a job never leaves.
func Terminal(status string) bool { return status == StatusCompleted || status == StatusFailed }

// StatusOf reads the "status" member of a job state document ("" when it
// has none).
func StatusOf(state json.RawMessage) string {
	var s struct {
		Status string `json:"status"`
	}
	_ = json.Unmarshal(state, &s)
	return s.Status
}

// Manifest is the Bulk Data completion manifest (also the body of a
// partial manifest page).
type Manifest struct {
	TransactionTime     string         `json:"transactionTime"`
	Request             string         `json:"request"`
	RequiresAccessToken bool           `json:"requiresAccessToken"`
	Output              []OutputFile   `json:"output"`
	Deleted             []OutputFile   `json:"deleted,omitempty"`
	Error               []OutputFile   `json:"error"`
	Link                []ManifestLink `json:"link,omitempty"`
	Extension           map[string]any `json:"extension,omitempty"`
}

// OutputFile is one entry of a manifest's output, deleted or error list.
type OutputFile struct {
	Type  string `json:"type"`
	URL   string `json:"url"`
	Count int    `json:"count"`
}

// ManifestLink is a manifest's link (relation "next" for paging).
type ManifestLink struct {
	Relation string `json:"relation"`
	URL      string `json:"url"`
}

// The errors of bulk jobs; package outcome maps them to HTTP statuses.
var (
	// ErrJobNotFound: no such job in the tenant (or it was cancelled).
	ErrJobNotFound = errors.New("bulk: no such job")
	// ErrTooManyJobs: the tenant (or client) runs as many jobs as allowed.
	ErrTooManyJobs = errors.New("bulk: too many running jobs")
	// ErrPollTooFast: a status poll came sooner than the job's Retry-After.
	ErrPollTooFast = errors.New("bulk: polled too often")
	// ErrInvalid: a kick-off parameter is malformed or not allowed.
	ErrInvalid = errors.New("bulk: invalid request")
	// ErrNotSupported: a valid kick-off parameter this server does not
	// implement.
	ErrNotSupported = errors.New("bulk: not supported")
)

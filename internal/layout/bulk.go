package layout

import "strconv"

// Bulk export. {job_id} is segment-encoded; {type} is a FHIR resource type
// (export error files are parts of the type OperationOutcome).

// ExportJobsPrefix holds every export job.
const ExportJobsPrefix = "bulk/export/jobs/"

// ExportJobPrefix is bulk/export/jobs/{job_id}/, everything of one job
// (cancelling a job removes it all).
func ExportJobPrefix(jobID string) string { return ExportJobsPrefix + EncodeSegment(jobID) + "/" }

// ExportStateKey is bulk/export/jobs/{job_id}/state.json.
func ExportStateKey(jobID string) string { return ExportJobPrefix(jobID) + "state.json" }

// ExportProgressKey is bulk/export/jobs/{job_id}/progress/{type}.json, the
// resume point of one type.
func ExportProgressKey(jobID, typ string) string {
	return ExportJobPrefix(jobID) + "progress/" + typ + jsonExt
}

// ExportPartPrefix is bulk/export/jobs/{job_id}/output/{type}/.
func ExportPartPrefix(jobID, typ string) string {
	return ExportJobPrefix(jobID) + "output/" + typ + "/"
}

// ExportPartKey is bulk/export/jobs/{job_id}/output/{type}/part-{n}.ndjson,
// n = 1, 2, ...
func ExportPartKey(jobID, typ string, n int) string {
	return ExportPartPrefix(jobID, typ) + "part-" + strconv.Itoa(n) + ndjsonExt
}

// ExportManifestKey is bulk/export/jobs/{job_id}/manifest.json.
func ExportManifestKey(jobID string) string { return ExportJobPrefix(jobID) + "manifest.json" }

// Bulk submit. {submitter} is the submitter Identifier as system|value;
// it, {submission_id}, {manifest_id} and {change_id} are segment-encoded.
// {line} is the 1-based line number in the source NDJSON file.

const ndjsonExt = ".ndjson"

// SubmitPrefix holds every submission.
const SubmitPrefix = "bulk/submit/"

// SubmissionPrefix is bulk/submit/{submitter}/{submission_id}/, everything
// of one submission.
func SubmissionPrefix(submitter, submissionID string) string {
	return SubmitPrefix + EncodeSegment(submitter) + "/" + EncodeSegment(submissionID) + "/"
}

// SubmissionStateKey is bulk/submit/{submitter}/{submission_id}/state.json.
func SubmissionStateKey(submitter, submissionID string) string {
	return SubmissionPrefix(submitter, submissionID) + "state.json"
}

// SubmitManifestKey is
// bulk/submit/{submitter}/{submission_id}/manifests/{manifest_id}.json.
func SubmitManifestKey(submitter, submissionID, manifestID string) string {
	return SubmissionPrefix(submitter, submissionID) + "manifests/" + EncodeSegment(manifestID) + jsonExt
}

// SubmitRawLineKey is
// bulk/submit/{submitter}/{submission_id}/raw/{manifest_id}/line-{line}.ndjson,
// the raw input line.
func SubmitRawLineKey(submitter, submissionID, manifestID string, line int) string {
	return SubmissionPrefix(submitter, submissionID) + "raw/" + EncodeSegment(manifestID) + "/line-" + strconv.Itoa(line) + ndjsonExt
}

// SubmitResultKey is
// bulk/submit/{submitter}/{submission_id}/results/{manifest_id}/line-{line}.json,
// the outcome of one line.
func SubmitResultKey(submitter, submissionID, manifestID string, line int) string {
	return SubmissionPrefix(submitter, submissionID) + "results/" + EncodeSegment(manifestID) + "/line-" + strconv.Itoa(line) + jsonExt
}

// SubmitChangesPrefix is bulk/submit/{submitter}/{submission_id}/changes/,
// the change log a rollback walks.
func SubmitChangesPrefix(submitter, submissionID string) string {
	return SubmissionPrefix(submitter, submissionID) + "changes/"
}

// SubmitChangeKey is
// bulk/submit/{submitter}/{submission_id}/changes/{change_id}.json.
func SubmitChangeKey(submitter, submissionID, changeID string) string {
	return SubmitChangesPrefix(submitter, submissionID) + EncodeSegment(changeID) + jsonExt
}

// ExportDeletedPartKey is
// bulk/export/jobs/{job_id}/deleted/{type}/part-{n}.ndjson, the deletions
// of one type (transaction Bundles of DELETE entries) listed under the
// manifest's deleted[], n = 1, 2, ...
func ExportDeletedPartKey(jobID, typ string, n int) string {
	return ExportJobPrefix(jobID) + "deleted/" + typ + "/part-" + strconv.Itoa(n) + ndjsonExt
}

package fhir

import (
	"bytes"
	"encoding/json"
	"io"
)

// Issue severities (http://hl7.org/fhir/issue-severity).
const (
	SeverityFatal       = "fatal"
	SeverityError       = "error"
	SeverityWarning     = "warning"
	SeverityInformation = "information"
)

// OperationOutcome is the resource the server returns to explain an error
// (or a success worth a message).
type OperationOutcome struct {
	ResourceType string         `json:"resourceType"` // "OperationOutcome"
	ID           string         `json:"id,omitempty"`
	Issue        []OutcomeIssue `json:"issue"`
}

// OutcomeIssue is one OperationOutcome.issue.
type OutcomeIssue struct {
	// Severity is one of the Severity* constants.
	Severity string `json:"severity"`
	// Code is a FHIR issue-type code (http://hl7.org/fhir/issue-type),
	// e.g. "invalid", "structure", "not-found", "conflict", "exception".
	Code string `json:"code"`
	// Diagnostics is free text for a human.
	Diagnostics string `json:"diagnostics,omitempty"`
	// Expression holds FHIRPath locations of the problem in the resource
	// sent, e.g. "Patient.name[0].given[1]".
	Expression []string `json:"expression,omitempty"`
}

// NewOutcome returns an OperationOutcome with one issue.
func NewOutcome(severity, code, diagnostics string) *OperationOutcome {
	return &OperationOutcome{
		ResourceType: "OperationOutcome",
		Issue:        []OutcomeIssue{{Severity: severity, Code: code, Diagnostics: diagnostics}},
	}
}

// NewValidationOutcome returns an OperationOutcome with one error issue per
// issue of verr, its path as the expression.
func NewValidationOutcome(verr *ValidationError) *OperationOutcome {
	o := &OperationOutcome{ResourceType: "OperationOutcome"}
	for _, is := range verr.Issues {
		oi := OutcomeIssue{Severity: SeverityError, Code: is.Code, Diagnostics: is.Message}
		if oi.Code == "" {
			oi.Code = "invalid"
		}
		if is.Path != "" {
			oi.Expression = []string{is.Path}
		}
		o.Issue = append(o.Issue, oi)
	}
	if len(o.Issue) == 0 {
		o.Issue = []OutcomeIssue{{Severity: SeverityError, Code: "invalid", Diagnostics: "invalid resource"}}
	}
	return o
}

// Marshal encodes v (an OperationOutcome, Bundle, Parameters...) as
// compact JSON without escaping <, > and & (encoding/json's default would
// rewrite them inside embedded resources, e.g. in narrative XHTML).
// Embedded json.RawMessage resources keep their content; only insignificant
// white space is removed.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	if err := Encode(&buf, v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte{'\n'}), nil
}

// Encode writes v to w as Marshal does, followed by a newline.
func Encode(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

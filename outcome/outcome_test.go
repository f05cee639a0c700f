package outcome

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"fhirbucket/auth"
	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
)

// TestTable checks every row of the table as callers meet the errors:
// wrapped. Each row must be the one that answers its own target (a row
// shadowed by an earlier one would be dead), and the result must say what
// the row says.
func TestTable(t *testing.T) {
	if len(table) == 0 {
		t.Fatal("empty table")
	}
	for i, row := range table {
		t.Run(row.Target.Error(), func(t *testing.T) {
			err := fmt.Errorf("doing something with secret/key: %w", row.Target)
			r := Classify(err)
			if r.Status != row.Status || r.Code != row.Code || r.Severity != row.Severity {
				t.Errorf("row %d: Classify = %d %s %s, want %d %s %s (an earlier row shadows it?)",
					i, r.Status, r.Code, r.Severity, row.Status, row.Code, row.Severity)
			}
			wantDiag := err.Error()
			if row.Generic != "" {
				wantDiag = row.Generic
			}
			if r.Diagnostics != wantDiag {
				t.Errorf("diagnostics %q, want %q", r.Diagnostics, wantDiag)
			}
			if internal := row.Status >= 500 && row.Status != http.StatusNotImplemented; r.Internal != internal {
				t.Errorf("Internal = %v, want %v", r.Internal, internal)
			}
			if r.Internal && row.Generic == "" {
				t.Errorf("an internal row without generic diagnostics would show %q to clients", err)
			}
			status, oo := Of(err)
			if status != row.Status || len(oo.Issue) != 1 || oo.Issue[0].Code != row.Code || oo.ResourceType != "OperationOutcome" {
				t.Errorf("Of = %d %+v", status, oo)
			}
		})
	}
}

// TestClassify covers what is not a row: the server's own decisions, a
// body over its limit, and errors no row knows. It also names the access
// statuses, which the server's header decisions (WWW-Authenticate) rely
// on.
func TestClassify(t *testing.T) {
	cases := []struct {
		name     string
		err      error
		status   int
		code     string
		diag     string
		internal bool
	}{
		{"unauthenticated", fmt.Errorf("%w: no token", auth.ErrUnauthenticated), 401, "login", "auth: unauthenticated: no token", false},
		{"forbidden", fmt.Errorf("%w: tenant b", auth.ErrForbidden), 403, "forbidden", "auth: forbidden: tenant b", false},
		{"body limit", &http.MaxBytesError{Limit: 10}, 413, "too-costly", "the request body is larger than the limit of 10 bytes", false},
		{"server decision", Errorf(406, "not-supported", "no %s", "xml"), 406, "not-supported", "no xml", false},
		{"server decision 5xx", fmt.Errorf("wrapped: %w", Errorf(503, "transient", "later")), 503, "transient", "later", false},
		{"anything else", errors.New("disk on fire at /secret/path"), 500, "exception", "internal server error", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := Classify(c.err)
			if r.Status != c.status || r.Code != c.code || r.Diagnostics != c.diag || r.Internal != c.internal || r.Severity != fhir.SeverityError {
				t.Errorf("Classify = %+v, want %d %s %q internal=%v", r, c.status, c.code, c.diag, c.internal)
			}
		})
	}
}

// TestValidationIssues: a validation error answers one issue for the
// error, then one per finding, with its path as the expression.
func TestValidationIssues(t *testing.T) {
	err := fmt.Errorf("%w: %w", fhirstore.ErrInvalid, &fhir.ValidationError{Issues: []fhir.Issue{
		{Code: "value", Path: "Patient.birthDate", Message: "not a date"},
		{Path: "Patient.foo", Message: "unknown element"},
	}})
	status, oo := Of(err)
	if status != 400 {
		t.Fatalf("status %d", status)
	}
	data, jerr := json.Marshal(oo)
	if jerr != nil {
		t.Fatal(jerr)
	}
	want := `{"resourceType":"OperationOutcome","issue":[` +
		`{"severity":"error","code":"invalid","diagnostics":` + mustJSON(t, err.Error()) + `},` +
		`{"severity":"error","code":"value","diagnostics":"not a date","expression":["Patient.birthDate"]},` +
		`{"severity":"error","code":"invalid","diagnostics":"unknown element","expression":["Patient.foo"]}]}`
	if string(data) != want {
		t.Errorf("outcome\n got %s\nwant %s", data, want)
	}

	// Without findings, only the first issue.
	if _, oo := Of(fmt.Errorf("%w: %w", fhirstore.ErrInvalid, &fhir.ValidationError{})); len(oo.Issue) != 1 {
		t.Errorf("empty validation error: %d issues", len(oo.Issue))
	}
}

func mustJSON(t *testing.T, s string) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

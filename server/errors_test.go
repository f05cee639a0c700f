package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"fhirbucket/auth"
	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/internal/testenv"
	"fhirbucket/outcome"
	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
	"fhirbucket/storage/storagetest"
)

type faultyBucket struct{ *storagetest.Faulty }

func newFaultyBucket() *faultyBucket {
	return &faultyBucket{storagetest.NewFaulty(memstore.New())}
}

// failAll makes every storage call fail as an unreachable store does.
func (f *faultyBucket) failAll() {
	for _, op := range []storage.Op{storage.OpGet, storage.OpPut, storage.OpHead, storage.OpList, storage.OpDelete} {
		f.Add(storagetest.Fault{Op: op, Err: storage.ErrUnavailable})
	}
}

// TestErrorTable checks the answers of the outcome table (outcome tests
// every row) as the store would return the errors, wrapped, and (for
// validation) carrying issues, through the writer as a client sees them.
func TestErrorTable(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("fhirstore: doing something: %w", err) }
	validation := fmt.Errorf("%w: %w", fhirstore.ErrInvalid, &fhir.ValidationError{Issues: []fhir.Issue{
		{Code: "value", Path: "Patient.birthDate", Message: "not a date"},
		{Code: "structure", Path: "Patient.foo", Message: "unknown element"},
	}})
	cases := []struct {
		name     string
		err      error
		status   int
		code     string
		internal bool
	}{
		{"unauthenticated", fmt.Errorf("%w: no bearer token", auth.ErrUnauthenticated), 401, "login", false},
		{"forbidden", fmt.Errorf("%w: not this tenant", auth.ErrForbidden), 403, "forbidden", false},
		{"too large", wrap(fhir.ErrTooLarge), 413, "too-costly", false},
		{"body limit", &http.MaxBytesError{Limit: 10}, 413, "too-costly", false},
		{"validation", validation, 400, "invalid", false},
		{"fhir invalid", wrap(fhir.ErrInvalid), 400, "invalid", false},
		{"store invalid", wrap(fhirstore.ErrInvalid), 400, "invalid", false},
		{"tenant", wrap(fhirstore.ErrInvalidTenant), 400, "invalid", false},
		{"not found", wrap(fhirstore.ErrNotFound), 404, "not-found", false},
		{"gone", wrap(fhirstore.ErrGone), 410, "deleted", false},
		{"version conflict", wrap(fhirstore.ErrVersionConflict), 409, "conflict", false},
		{"precondition", wrap(fhirstore.ErrPreconditionFailed), 412, "conflict", false},
		{"not supported", wrap(fhirstore.ErrNotSupported), 501, "not-supported", false},
		{"storage conflict", wrap(&storage.Error{Op: "put", Key: "k", Err: storage.ErrConflict}), 409, "conflict", false},
		{"unavailable", wrap(&storage.Error{Op: "get", Key: "secret/key", Err: storage.ErrUnavailable}), 503, "transient", true},
		{"bucket missing", wrap(storage.ErrBucketNotFound), 503, "transient", true},
		{"access denied", wrap(storage.ErrAccessDenied), 503, "transient", true},
		{"deadline", wrap(context.DeadlineExceeded), 503, "timeout", true},
		{"invalid key", wrap(storage.ErrInvalidKey), 400, "invalid", false},
		{"server decision", outcome.Errorf(406, "not-supported", "no"), 406, "not-supported", false},
		{"anything else", errors.New("disk on fire at /secret/path"), 500, "exception", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := outcome.Classify(c.err)
			if res.Status != c.status || res.Code != c.code || res.Internal != c.internal {
				t.Errorf("outcome.Classify = %d %s internal=%v, want %d %s internal=%v", res.Status, res.Code, res.Internal, c.status, c.code, c.internal)
			}
			if res.Internal && (strings.Contains(res.Diagnostics, "secret") || strings.Contains(res.Diagnostics, "fire")) {
				t.Errorf("internal detail in diagnostics: %q", res.Diagnostics)
			}

			// The same through the writer, as a client sees it.
			s := &Server{log: testenv.QuietLogger()}
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", "/Patient/1", nil)
			s.writeError(rec, req, c.err)
			r := &response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
			mustStatus(t, c.name, r, c.status)
			isOutcome(t, c.name, r, c.code)
			if (c.status == 503) != (r.header.Get("Retry-After") != "") {
				t.Errorf("Retry-After %q with status %d", r.header.Get("Retry-After"), c.status)
			}
			if c.name == "validation" {
				body := string(r.body)
				for _, want := range []string{`"expression":["Patient.birthDate"]`, `"expression":["Patient.foo"]`, `"code":"value"`} {
					if !strings.Contains(body, want) {
						t.Errorf("validation outcome lacks %s: %s", want, body)
					}
				}
			}
		})
	}
}

// TestClientGone: a canceled request writes nothing and is logged as 499.
func TestClientGone(t *testing.T) {
	s := &Server{log: testenv.QuietLogger()}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/Patient/1", nil).WithContext(ctx)
	ri := &reqInfo{}
	req = req.WithContext(context.WithValue(req.Context(), ctxKey{}, ri))
	s.writeError(rec, req, fmt.Errorf("reading: %w", context.Canceled))
	if rec.Body.Len() != 0 || ri.status != statusClientClosed {
		t.Errorf("canceled request: body %q, logged status %d", rec.Body.String(), ri.status)
	}
}

// TestVersionConflict: when every claim of a new version number is lost
// (another writer always wins), an unconditional update gives up after
// the store's retries with 409, and nothing changes.
func TestVersionConflict(t *testing.T) {
	faulty := newFaultyBucket()
	e := newEnv(t, faulty)
	mustStatus(t, "create", e.do("PUT", "/Patient/c1", patient("c1", "C"), jsonCT), 201)
	before := snapshot(t, faulty.Inner())
	rule := faulty.Add(storagetest.Fault{Op: storage.OpPut, KeyContains: "/_history/", Err: storage.ErrPreconditionFailed})
	r := e.do("PUT", "/Patient/c1", patient("c1", "D"), jsonCT)
	mustStatus(t, "update losing every race", r, 409)
	isOutcome(t, "conflict", r, "conflict")
	if rule.Fired() < 2 {
		t.Errorf("the store tried %d times; a lost race must be retried", rule.Fired())
	}
	if after := snapshot(t, faulty.Inner()); !slices.Equal(before, after) {
		t.Errorf("a failed update changed the store")
	}
}

// TestConcurrentUpdates: parallel unconditional updates of one resource
// over HTTP each answer 200 or 409, and the successes are exactly the
// new versions.
func TestConcurrentUpdates(t *testing.T) {
	e := newEnv(t, nil)
	mustStatus(t, "create", e.do("PUT", "/Patient/race", patient("race", "R"), jsonCT), 201)
	const n = 12
	statuses := make(chan int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			statuses <- e.do("PUT", "/Patient/race", patient("race", fmt.Sprintf("R%d", i)), jsonCT).status
		})
	}
	wg.Wait()
	close(statuses)
	ok := 0
	for s := range statuses {
		switch s {
		case 200:
			ok++
		case 409:
		default:
			t.Errorf("status %d", s)
		}
	}
	r := e.do("GET", "/Patient/race", "", nil)
	mustStatus(t, "read", r, 200)
	if want := fmt.Sprintf(`W/"%d"`, ok+1); r.header.Get("ETag") != want {
		t.Errorf("ETag %s after %d successful updates, want %s", r.header.Get("ETag"), ok, want)
	}
}

package s3store

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"fhirbucket/storage"
)

// TestWireConditionalPutNotRetriedWhenItMayHaveLanded checks the retry
// policy of conditional puts on the wire: an attempt whose answer was lost
// after the request was sent (the connection is cut), or that failed with
// a 500, is not retried (the retry would fail its own precondition if the
// first attempt landed) and surfaces as ErrUnavailable, never as
// ErrPreconditionFailed; rejected attempts (SlowDown, 409) and attempts
// that were never sent are retried as before; unconditional puts keep
// every retry.
func TestWireConditionalPutNotRetriedWhenItMayHaveLanded(t *testing.T) {
	tests := []struct {
		name     string
		op       string
		script   []string // per attempt: "cut", "500", "slowdown", "412", "ok"
		want     error    // nil: success
		attempts int
	}{
		{"if-none-match, answer lost", "put-if-none-match", []string{"cut", "412"}, storage.ErrUnavailable, 1},
		{"if-match, answer lost", "put-if-match", []string{"cut", "412"}, storage.ErrUnavailable, 1},
		{"if-none-match, 500", "put-if-none-match", []string{"500", "412"}, storage.ErrUnavailable, 1},
		{"if-none-match, SlowDown then ok", "put-if-none-match", []string{"slowdown", "ok"}, nil, 2},
		{"if-none-match, SlowDown then 412", "put-if-none-match", []string{"slowdown", "412"}, storage.ErrPreconditionFailed, 2},
		{"unconditional, answer lost then ok", "put", []string{"cut", "ok"}, nil, 2},
		{"unconditional, 500 then ok", "put", []string{"500", "ok"}, nil, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				i := min(int(n.Add(1))-1, len(tc.script)-1)
				fake := &fakeS3{}
				switch tc.script[i] {
				case "cut":
					conn, _, err := http.NewResponseController(w).Hijack()
					if err == nil {
						conn.Close()
					}
					return
				case "500":
					fake.responses = []cannedResponse{s3Error(500, "InternalError")}
				case "slowdown":
					fake.responses = []cannedResponse{s3Error(503, "SlowDown")}
				case "412":
					fake.responses = []cannedResponse{s3Error(412, "PreconditionFailed")}
				default:
					fake.responses = []cannedResponse{okPut}
				}
				fake.ServeHTTP(w, r)
			}))
			defer srv.Close()
			b := newWireClient(t, srv.URL, nil).Bucket("bkt")
			err := callOp(t.Context(), b, tc.op)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("%s: error %v, want %v", tc.op, err, tc.want)
			}
			if errors.Is(err, storage.ErrPreconditionFailed) && tc.want != storage.ErrPreconditionFailed {
				t.Fatalf("%s: a write that may have landed reported as ErrPreconditionFailed: %v", tc.op, err)
			}
			if got := int(n.Load()); got != tc.attempts {
				t.Errorf("server saw %d attempts, want %d", got, tc.attempts)
			}
		})
	}
}

// TestWireConditionalPutRetriesWhenNotSent checks that a conditional put
// to an address nobody listens on (the request never left the client) is
// retried like any other request.
func TestWireConditionalPutRetriesWhenNotSent(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := newWireClient(t, "http://"+addr, nil)
	err = callOp(t.Context(), c.Bucket("bkt"), "put-if-none-match")
	if !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("conditional put on a closed port: %v, want ErrUnavailable", err)
	}
	if got := c.Requests(); got.Put != wireAttempts {
		t.Errorf("Requests() = %+v, want %d PUT attempts", got, wireAttempts)
	}
}

package metrics

import (
	"context"
	"net/http"
	"strconv"
	"time"
)

// Values of the "interaction" label that this package sets itself. Every
// other value is named by the handler through SetInteraction: the server
// names the FHIR RESTful interaction of the route a request matched.
const (
	// InteractionOther labels a request no handler named: anything that is
	// no FHIR interaction (answered 4xx).
	InteractionOther = "other"
	// InteractionMetrics labels requests to the /metrics path that
	// WithEndpoint does not serve (other methods than GET and HEAD).
	InteractionMetrics = "metrics"
)

// endpointPath is where WithEndpoint serves the registry.
const endpointPath = "/metrics"

// interactionKey is the context key of the *string that SetInteraction
// fills in for Middleware.
type interactionKey struct{}

// SetInteraction names the interaction of the request whose context is
// ctx (or a context derived from it) for the labels of Middleware. The
// value must come from a small fixed set: it becomes a label value. The
// last call wins; outside Middleware it does nothing.
func SetInteraction(ctx context.Context, interaction string) {
	if p, ok := ctx.Value(interactionKey{}).(*string); ok {
		*p = interaction
	}
}

// methodLabel keeps the method label bounded: unknown methods collapse.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete,
		http.MethodPatch, http.MethodOptions:
		return m
	}
	return "OTHER"
}

// Middleware wraps next so that every request is counted in
// fhirbucket_http_requests_total and timed in
// fhirbucket_http_request_duration_seconds under the interaction that next
// names with SetInteraction (InteractionOther when it names none).
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		interaction := new(string)
		r = r.WithContext(context.WithValue(r.Context(), interactionKey{}, interaction))
		m.httpInFlight.Inc()
		rec := &recorder{ResponseWriter: w}
		completed := false
		defer func() {
			m.httpInFlight.Dec()
			code := rec.code
			switch {
			case !completed:
				// A panic: net/http answers 500 or drops the connection.
				code = http.StatusInternalServerError
			case code == 0:
				code = http.StatusOK // nothing written: net/http sends 200
			}
			in := *interaction
			switch {
			case r.URL.Path == endpointPath:
				in = InteractionMetrics
			case in == "":
				in = InteractionOther
			}
			m.httpRequests.WithLabelValues(in, methodLabel(r.Method), strconv.Itoa(code)).Inc()
			m.httpDuration.WithLabelValues(in).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(rec, r)
		completed = true
	})
}

// WithEndpoint serves GET and HEAD /metrics from the registry and hands
// every other request to next. The FHIR handler never sees that path (it
// is no FHIR URL: "metrics" is neither a resource type nor, at the root,
// a tenant with a FHIR path below it).
func (m *Metrics) WithEndpoint(next http.Handler) http.Handler {
	h := m.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == endpointPath && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			h.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// recorder captures the status code.
type recorder struct {
	http.ResponseWriter
	code int
}

func (r *recorder) WriteHeader(code int) {
	if r.code == 0 && code >= 200 {
		r.code = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	return r.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

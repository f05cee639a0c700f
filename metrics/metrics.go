// Package metrics is fhirbucket's operator telemetry: Prometheus counters
// and histograms for HTTP requests by FHIR interaction, object-store
// requests by operation and outcome, conditional-write conflicts,
// roll-forwards and bulk jobs, and the /metrics handler that serves them
// in the Prometheus text format.
//
// A Metrics value owns its own registry (never the global default one), so
// a process may hold several and tests can create as many as they like.
// Every label has a small, fixed set of values: tenants, resource ids and
// URLs never become labels, so the number of series stays bounded however
// many tenants and resources a server holds. docs/metrics.md documents
// every metric.
package metrics

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"fhirbucket/storage"
)

// Namespace prefixes every metric name.
const Namespace = "fhirbucket"

// Bulk job kinds, the values of the "kind" label of the bulk metrics.
const (
	BulkExport = "export"
	BulkSubmit = "submit"
)

// httpBuckets cover a cached loopback read (~100µs) up to a slow bulk
// request against a throttled store (~10s).
var httpBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// storageBuckets cover an in-memory call (~1µs) up to a retried S3
// request (~10s).
var storageBuckets = []float64{.000005, .00001, .00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10}

// Metrics holds every fhirbucket metric and the registry they live in. It
// is safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	httpRequests *prometheus.CounterVec   // interaction, method, code
	httpDuration *prometheus.HistogramVec // interaction
	httpInFlight prometheus.Gauge

	storageRequests  *prometheus.CounterVec   // operation, outcome
	storageDuration  *prometheus.HistogramVec // operation
	conflicts        *prometheus.CounterVec   // reason
	s3WireRequests   *prometheus.CounterVec   // operation, outcome
	s3WireDuration   *prometheus.HistogramVec // operation
	rollForwards     prometheus.Counter
	bulkRunning      *prometheus.GaugeVec   // kind
	bulkFinished     *prometheus.CounterVec // kind, result
	bulkResources    *prometheus.CounterVec // kind
	bulkResourceErrs *prometheus.CounterVec // kind
}

// Options tune New.
type Options struct {
	// ProcessCollectors adds the standard Go runtime (go_*) and process
	// (process_*) metrics. A server wants them; tests usually do not.
	ProcessCollectors bool
}

// New creates the metrics and a fresh registry holding them.
func New(opts Options) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }

	m.httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "http", Name: "requests_total",
		Help: "HTTP requests answered, by FHIR interaction, method and status code.",
	}, []string{"interaction", "method", "code"})
	m.httpDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "http", Name: "request_duration_seconds",
		Help:    "Time from receiving an HTTP request to the end of its response, by FHIR interaction.",
		Buckets: httpBuckets,
	}, []string{"interaction"})
	m.httpInFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Subsystem: "http", Name: "requests_in_flight",
		Help: "HTTP requests being served right now.",
	})
	m.storageRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "storage", Name: "requests_total",
		Help: "Object-store calls made by the resource store, by operation and outcome (one per call; driver retries are inside).",
	}, []string{"operation", "outcome"})
	m.storageDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "storage", Name: "request_duration_seconds",
		Help:    "Latency of object-store calls (for get: until the body starts), by operation.",
		Buckets: storageBuckets,
	}, []string{"operation"})
	m.conflicts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "storage", Name: "conditional_write_conflicts_total",
		Help: "Conditional puts that lost: precondition_failed (412, another writer got there first) or conflict (409 that survived the driver's retries).",
	}, []string{"reason"})
	m.s3WireRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "s3", Name: "wire_requests_total",
		Help: "HTTP requests sent to S3, every retry attempt included, by operation and outcome.",
	}, []string{"operation", "outcome"})
	m.s3WireDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Subsystem: "s3", Name: "wire_request_duration_seconds",
		Help:    "Latency of single S3 request attempts, by operation.",
		Buckets: storageBuckets,
	}, []string{"operation"})
	m.rollForwards = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "fhirstore", Name: "roll_forwards_total",
		Help: "Claimed versions completed by someone other than their writer (a racing writer or fsck --repair).",
	})
	m.bulkRunning = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: Namespace, Subsystem: "bulk", Name: "jobs_running",
		Help: "Bulk jobs running in this process, by kind (export, submit).",
	}, []string{"kind"})
	m.bulkFinished = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "bulk", Name: "jobs_finished_total",
		Help: "Bulk jobs that ended in this process, by kind and result (completed, failed).",
	}, []string{"kind", "result"})
	m.bulkResources = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "bulk", Name: "resources_processed_total",
		Help: "Resources exported or ingested by bulk jobs, by kind.",
	}, []string{"kind"})
	m.bulkResourceErrs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "bulk", Name: "resource_errors_total",
		Help: "Resources a bulk job could not export or ingest (reported in its error output), by kind.",
	}, []string{"kind"})

	for _, c := range []prometheus.Collector{
		m.httpRequests, m.httpDuration, m.httpInFlight, m.storageRequests, m.storageDuration, m.conflicts,
		m.s3WireRequests, m.s3WireDuration, m.rollForwards, m.bulkRunning, m.bulkFinished, m.bulkResources,
		m.bulkResourceErrs,
	} {
		f(c)
	}
	if opts.ProcessCollectors {
		f(collectors.NewGoCollector())
		f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}

	// Series that alerting rules compare against exist from the start at
	// zero, so that rate() and absent() behave before the first event.
	for _, r := range []string{outcomePreconditionFailed, outcomeConflict} {
		m.conflicts.WithLabelValues(r)
	}
	for _, k := range []string{BulkExport, BulkSubmit} {
		m.bulkRunning.WithLabelValues(k)
		m.bulkResources.WithLabelValues(k)
		m.bulkResourceErrs.WithLabelValues(k)
		for _, r := range []string{"completed", "failed"} {
			m.bulkFinished.WithLabelValues(k, r)
		}
	}
	return m
}

// Registry is the registry holding the metrics, for registering more
// collectors or gathering in tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text exposition format (or
// OpenMetrics / protobuf when the scraper asks for them).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// RollForward counts one roll-forward. It matches the shape of
// fhirstore.Hooks.RollForward.
func (m *Metrics) RollForward() { m.rollForwards.Inc() }

// ObserveS3 records one S3 wire request. Its signature is that of
// s3store.Config.Observe; outcome is one of the s3store.Outcome* values.
func (m *Metrics) ObserveS3(op storage.Op, outcome string, d time.Duration) {
	name := opName(op)
	m.s3WireRequests.WithLabelValues(name, outcome).Inc()
	m.s3WireDuration.WithLabelValues(name).Observe(d.Seconds())
}

func opName(op storage.Op) string {
	switch op {
	case storage.OpGet:
		return "get"
	case storage.OpPut:
		return "put"
	case storage.OpHead:
		return "head"
	case storage.OpList:
		return "list"
	case storage.OpDelete:
		return "delete"
	}
	return "other"
}

// BulkJobStarted records that a bulk job of kind (BulkExport, BulkSubmit)
// started running in this process. The job calls the returned function
// exactly once when it stops running here: with nil when it completed,
// with its error when it failed. A job that stops without finishing (it
// was paused, or another replica took its lease over) calls it with
// ErrJobHandedOver, which is counted as neither completed nor failed.
func (m *Metrics) BulkJobStarted(kind string) (stopped func(err error)) {
	g := m.bulkRunning.WithLabelValues(kind)
	g.Inc()
	var once sync.Once
	return func(err error) {
		once.Do(func() {
			g.Dec()
			switch {
			case err == nil:
				m.bulkFinished.WithLabelValues(kind, "completed").Inc()
			case errors.Is(err, ErrJobHandedOver):
			default:
				m.bulkFinished.WithLabelValues(kind, "failed").Inc()
			}
		})
	}
}

// BulkResources adds n resources processed by a bulk job of kind, and
// failed resources that could not be processed (their errors are in the
// job's error output).
func (m *Metrics) BulkResources(kind string, n, failed int) {
	if n > 0 {
		m.bulkResources.WithLabelValues(kind).Add(float64(n))
	}
	if failed > 0 {
		m.bulkResourceErrs.WithLabelValues(kind).Add(float64(failed))
	}
}

// ErrJobHandedOver tells the function returned by BulkJobStarted that the
// job stopped running in this process without finishing (also when it is
// wrapped).
var ErrJobHandedOver = errors.New("metrics: bulk job handed over")

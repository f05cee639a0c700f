package metrics_test

import (
	"net/http"
	"net/url"
	"testing"

	"fhirbucket/metrics"
)

// FuzzInteraction feeds arbitrary methods and paths to the classifier: it
// must never panic and must always answer one of the bounded label values,
// whatever a client sends.
func FuzzInteraction(f *testing.F) {
	for _, seed := range []struct{ method, path string }{
		{"GET", "/Patient/1"}, {"GET", "/acme/Patient/1/_history/2"}, {"POST", "/"}, {"PUT", "/Patient"},
		{"GET", "/fhir/metadata"}, {"GET", "//"}, {"DELETE", "/Patient/%2F"}, {"BREW", "/$everything"},
		{"GET", "/Patient/1/_history/2/3/4"}, {"GET", "/metrics"}, {"HEAD", "/fhir"},
	} {
		f.Add(seed.method, seed.path)
	}
	valid := map[string]bool{}
	for _, v := range []string{
		metrics.InteractionRead, metrics.InteractionVRead, metrics.InteractionUpdate, metrics.InteractionConditionalUpd,
		metrics.InteractionDelete, metrics.InteractionConditionalDel, metrics.InteractionCreate,
		metrics.InteractionHistoryInstance, metrics.InteractionHistoryType, metrics.InteractionHistorySystem,
		metrics.InteractionSearchType, metrics.InteractionSearchSystem, metrics.InteractionBatch,
		metrics.InteractionCapabilities, metrics.InteractionOperation, metrics.InteractionHealth,
		metrics.InteractionMetrics, metrics.InteractionOther,
	} {
		valid[v] = true
	}
	var classifiers []*metrics.Classifier
	for _, base := range []string{"", "/fhir"} {
		for _, routing := range []string{metrics.RoutingHeader, metrics.RoutingPath, metrics.RoutingBoth} {
			c, err := metrics.NewClassifier(base, routing)
			if err != nil {
				f.Fatal(err)
			}
			classifiers = append(classifiers, c)
		}
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		u := &url.URL{Path: path}
		r := &http.Request{Method: method, URL: u}
		for _, c := range classifiers {
			if got := c.Interaction(r); !valid[got] {
				t.Fatalf("Interaction(%q %q) = %q, not a label value", method, path, got)
			}
		}
	})
}

package server

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"fhirbucket/internal/testenv"
	"fhirbucket/storage/memstore"
)

// metadataETag is the ETag of the CapabilityStatement served for the
// base https://fhir.example.org/fhir by software version 1.2.3. The ETag
// is a hash of the whole document, so this pins it byte for byte: the
// statement is derived from the route table, and a row change that a
// client would see must show up here (with a new capabilityDate).
const metadataETag = `W/"b5438dbb5be4ef22"`

func TestMetadataPinned(t *testing.T) {
	st := newEnv(t, memstore.New()).store
	s, err := New(Config{Store: st, Logger: testenv.QuietLogger(), BaseURL: "https://fhir.example.org/fhir", SoftwareVersion: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/metadata", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metadata: %d %s", rec.Code, rec.Body)
	}
	if got := rec.Header().Get("ETag"); got != metadataETag {
		t.Errorf("the CapabilityStatement changed: ETag %s, want %s; the document is now:\n%s", got, metadataETag, rec.Body)
	}
}

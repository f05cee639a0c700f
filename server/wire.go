package server

import (
	"net/http"
	"strconv"

	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
)

// writeJSON sends v as FHIR JSON with status.
func (s *Server) writeJSON(w http.ResponseWriter, status int, v any) {
	// fhir.Marshal keeps <, > and & as they are inside stored resources.
	data, err := fhir.Marshal(v)
	if err != nil {
		// Only the server's own types reach here; a failure is a bug.
		s.log.Error("encoding response", "error", err)
		status, data = http.StatusInternalServerError, []byte(`{"resourceType":"OperationOutcome","issue":[{"severity":"fatal","code":"exception","diagnostics":"internal server error"}]}`)
	}
	s.writeBody(w, status, data)
}

func (s *Server) writeBody(w http.ResponseWriter, status int, data []byte) {
	h := w.Header()
	h.Set("Content-Type", fhirJSON)
	h.Set("Content-Length", strconv.Itoa(len(data)+1))
	w.WriteHeader(status)
	_, _ = w.Write(data)
	_, _ = w.Write([]byte("\n"))
}

// setVersionHeaders sets ETag and Last-Modified of one stored version.
func setVersionHeaders(w http.ResponseWriter, res *fhirstore.Resource) {
	w.Header().Set("ETag", res.ETag())
	if !res.LastModified.IsZero() {
		w.Header().Set("Last-Modified", res.LastModified.UTC().Format(http.TimeFormat))
	}
}

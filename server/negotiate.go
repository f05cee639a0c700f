package server

import (
	"mime"
	"net/http"
	"strconv"
	"strings"

	"fhirbucket/outcome"
)

// fhirJSON is the Content-Type of every FHIR response.
const fhirJSON = "application/fhir+json; charset=utf-8"

// jsonMediaTypes are the media types (and _format short forms) that mean
// FHIR JSON. application/json+fhir is the DSTU2 spelling some clients
// still send.
var jsonMediaTypes = map[string]bool{
	"json":                  true,
	"application/json":      true,
	"application/fhir+json": true,
	"application/json+fhir": true,
}

// checkAccept decides whether the server can answer the request in JSON:
// _format wins over Accept (FHIR http.html); an Accept without any range
// that covers JSON answers 406.
func checkAccept(r *http.Request) error {
	if formats, ok := r.URL.Query()["_format"]; ok {
		if len(formats) != 1 {
			return outcome.Errorf(http.StatusBadRequest, "invalid", "_format is given %d times; give it once", len(formats))
		}
		f := strings.TrimSpace(formats[0])
		mt := strings.ToLower(f)
		if parsed, _, err := mime.ParseMediaType(f); err == nil {
			mt = parsed
		}
		if !jsonMediaTypes[mt] {
			return outcome.Errorf(http.StatusNotAcceptable, "not-supported", "_format %q is not supported; this server speaks JSON only (_format=json)", f)
		}
		return nil
	}
	accept := strings.Join(r.Header.Values("Accept"), ",")
	if strings.TrimSpace(accept) == "" {
		return nil
	}
	for _, rng := range strings.Split(accept, ",") {
		rng = strings.TrimSpace(rng)
		if rng == "" {
			continue
		}
		mt, params, err := mime.ParseMediaType(rng)
		if err != nil {
			continue
		}
		if q, ok := params["q"]; ok {
			if v, err := strconv.ParseFloat(q, 64); err == nil && v <= 0 {
				continue
			}
		}
		if mt == "*/*" || mt == "application/*" || jsonMediaTypes[mt] {
			return nil
		}
	}
	return outcome.Errorf(http.StatusNotAcceptable, "not-supported", "Accept %q names no JSON media type; this server answers application/fhir+json only", accept)
}

// checkContentType accepts FHIR JSON request bodies only. _format does not
// apply to the request body (FHIR http.html).
func checkContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return outcome.Errorf(http.StatusUnsupportedMediaType, "not-supported", "the request has a body but no Content-Type; send Content-Type: application/fhir+json")
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return outcome.Errorf(http.StatusUnsupportedMediaType, "not-supported", "Content-Type %q cannot be parsed; send application/fhir+json", ct)
	}
	if mt == "json" || !jsonMediaTypes[mt] {
		return outcome.Errorf(http.StatusUnsupportedMediaType, "not-supported", "Content-Type %q is not supported; this server accepts application/fhir+json (or application/json) only", ct)
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "utf8") {
		return outcome.Errorf(http.StatusUnsupportedMediaType, "not-supported", "charset %q is not supported; FHIR JSON is UTF-8", cs)
	}
	return nil
}

// preferences is what the Prefer header (RFC 7240) asks of this server.
type preferences struct {
	ret     string // "minimal", "representation", "OperationOutcome" or "" (server's choice)
	lenient bool   // handling=lenient: ignore unknown search parameters
}

// parsePrefer reads every Prefer header. Unknown preferences are ignored,
// as RFC 7240 requires; an unknown return= value is treated as absent.
func parsePrefer(r *http.Request) preferences {
	var p preferences
	for _, h := range r.Header.Values("Prefer") {
		for pref := range strings.SplitSeq(h, ",") {
			// Parameters after ";" do not change these two preferences.
			pref, _, _ = strings.Cut(pref, ";")
			name, val, _ := strings.Cut(strings.TrimSpace(pref), "=")
			name = strings.ToLower(strings.TrimSpace(name))
			val = strings.Trim(strings.TrimSpace(val), `"`)
			switch name {
			case "return":
				switch strings.ToLower(val) {
				case "minimal":
					p.ret = "minimal"
				case "representation":
					p.ret = "representation"
				case "operationoutcome":
					p.ret = "OperationOutcome"
				}
			case "handling":
				p.lenient = strings.EqualFold(val, "lenient")
			}
		}
	}
	return p
}

// etagMatches reports whether an If-None-Match header value matches the
// version tag etag (W/"n"), comparing weakly as RFC 9110 §8.8.3.2 says for
// If-None-Match: W/"3", "3" and * all match version 3.
func etagMatches(header, etag string) bool {
	want := strings.TrimPrefix(etag, "W/")
	for tag := range strings.SplitSeq(header, ",") {
		tag = strings.TrimSpace(tag)
		if tag == "*" {
			return true
		}
		if strings.TrimPrefix(tag, "W/") == want {
			return true
		}
	}
	return false
}

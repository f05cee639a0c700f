package server

import (
	"fmt"
	"net/http"
	"strings"

	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/outcome"
)

// TenantRouting selects where the server reads the tenant of a request.
type TenantRouting int

const (
	// TenantHeader takes the tenant from the X-Tenant-ID header, or
	// fhirstore.DefaultTenant when it is absent.
	TenantHeader TenantRouting = iota
	// TenantPath takes the tenant from the first path segment below the
	// base path: /{tenant}/Patient/123.
	TenantPath
	// TenantBoth takes the tenant from the path when the first segment is
	// not a FHIR root segment (a resource type, "metadata", "_history" or
	// an operation "$…"), else from the header as TenantHeader does.
	TenantBoth
)

// ParseTenantRouting maps the setting values "header", "path" and "both".
func ParseTenantRouting(s string) (TenantRouting, error) {
	switch s {
	case "header":
		return TenantHeader, nil
	case "path":
		return TenantPath, nil
	case "both":
		return TenantBoth, nil
	}
	return 0, fmt.Errorf("tenant routing %q: want header, path or both", s)
}

func (t TenantRouting) String() string {
	switch t {
	case TenantHeader:
		return "header"
	case TenantPath:
		return "path"
	case TenantBoth:
		return "both"
	}
	return fmt.Sprintf("TenantRouting(%d)", int(t))
}

// TenantHeaderName is the request header that names the tenant.
const TenantHeaderName = "X-Tenant-ID"

// errNoTenantSegment answers a path-routed URL that ends at the base: it
// names neither a tenant nor a route.
var errNoTenantSegment = outcome.Errorf(http.StatusNotFound, "not-found", "tenant routing is by path: request URLs start with /{tenant}/ below the base, e.g. /default/Patient")

// selectTenant finds the tenant of a request whose path segments below
// the base are segs, and returns the segments below the tenant's base.
// The tenant is not checked yet (fhirstore.ValidTenant); inURL reports
// that it came from the path.
func (s *Server) selectTenant(r *http.Request, segs []string) (tenant string, inURL bool, rest []string, err error) {
	switch s.routing {
	case TenantPath:
		// /metadata and the SMART configuration need no tenant: they are
		// the same for all.
		if len(segs) == 1 && segs[0] == "metadata" || len(segs) == 2 && segs[0] == wellKnown {
			return fhirstore.DefaultTenant, false, segs, nil
		}
		if len(segs) == 0 {
			return fhirstore.DefaultTenant, false, nil, errNoTenantSegment
		}
		return segs[0], true, segs[1:], nil
	case TenantBoth:
		if len(segs) > 0 && !isFHIRRootSegment(segs[0]) {
			return segs[0], true, segs[1:], nil
		}
	}
	tenant, err = headerTenant(r)
	return tenant, false, segs, err
}

// headerTenant is the tenant the header names, or the default tenant.
func headerTenant(r *http.Request) (string, error) {
	vals := r.Header.Values(TenantHeaderName)
	switch len(vals) {
	case 0:
		return fhirstore.DefaultTenant, nil
	case 1:
		return strings.TrimSpace(vals[0]), nil
	}
	return fhirstore.DefaultTenant, outcome.Errorf(http.StatusBadRequest, "invalid", "the %s header is given %d times; give it once", TenantHeaderName, len(vals))
}

// isFHIRRootSegment reports whether seg can start a FHIR path at the base
// (so it cannot be a tenant in TenantBoth routing).
func isFHIRRootSegment(seg string) bool {
	return fhir.IsResourceType(seg) || seg == "metadata" || seg == "_history" || seg == wellKnown || strings.HasPrefix(seg, "$")
}

// wellKnown is the first segment of /.well-known/smart-configuration; it
// can never be a tenant (tenants start with a letter or digit).
const wellKnown = ".well-known"

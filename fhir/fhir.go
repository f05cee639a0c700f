// Package fhir owns FHIR R4 JSON as fhirbucket handles it: resources kept
// as raw JSON (never decoded through float64, key order preserved), id and
// resource-type rules, validation against the official R4 JSON schema, and
// the OperationOutcome, Bundle and Parameters documents the server emits.
package fhir

import (
	"regexp"
	"slices"
)

// Version is the FHIR version fhirbucket speaks.
const Version = "4.0.1"

var idPattern = regexp.MustCompile(`^[A-Za-z0-9.-]{1,64}$`)

// IsResourceType reports whether name is an R4 resource type.
func IsResourceType(name string) bool { return resourceTypes[name] }

// ResourceTypes returns every R4 resource type name in sorted order.
func ResourceTypes() []string {
	out := make([]string, 0, len(resourceTypes))
	for n := range resourceTypes {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// ValidID reports whether id is a FHIR id usable as a storage key segment:
// [A-Za-z0-9.-]{1,64}, and neither "." nor "..".
func ValidID(id string) bool {
	return idPattern.MatchString(id) && id != "." && id != ".."
}

package export

import (
	_ "embed"
	"encoding/json"
	"slices"
	"strings"
)

// compartmentJSON is the Patient compartment of FHIR R4
// (CompartmentDefinition/patient), with the element paths taken from the
// expressions of its search parameters: a resource is in a patient's
// compartment when a Reference at one of the paths of its type points at
// that Patient; a Patient is in its own. See docs/bulk-export.md.
//
//go:embed compartment.json
var compartmentJSON []byte

var compartment = func() map[string][][]string {
	var doc struct {
		Types map[string]struct {
			Paths []string `json:"paths"`
		} `json:"types"`
	}
	if err := json.Unmarshal(compartmentJSON, &doc); err != nil {
		panic("export: compartment.json: " + err.Error())
	}
	out := make(map[string][][]string, len(doc.Types))
	for t, d := range doc.Types {
		for _, p := range d.Paths {
			out[t] = append(out[t], strings.Split(p, "."))
		}
	}
	return out
}()

// inCompartment reports whether resources of typ can belong to a Patient
// compartment.
func inCompartment(typ string) bool { _, ok := compartment[typ]; return ok || typ == "Patient" }

// compartmentTypes are the types a Patient- or Group-level export reads,
// sorted.
func compartmentTypes() []string {
	out := []string{"Patient"}
	for t := range compartment {
		if t != "Patient" {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out
}

// patientRefs returns the ids of the Patients the compartment paths of typ
// reference in content (any form ending in Patient/{id}: relative,
// absolute, or with a _history suffix).
func patientRefs(typ string, content []byte) []string {
	paths := compartment[typ]
	if len(paths) == 0 {
		return nil
	}
	var root map[string]json.RawMessage
	if json.Unmarshal(content, &root) != nil {
		return nil
	}
	var out []string
	for _, p := range paths {
		collectRefs(root[p[0]], p[1:], &out)
	}
	return out
}

func collectRefs(v json.RawMessage, rest []string, out *[]string) {
	v = json.RawMessage(strings.TrimSpace(string(v)))
	if len(v) == 0 {
		return
	}
	if v[0] == '[' {
		var items []json.RawMessage
		if json.Unmarshal(v, &items) == nil {
			for _, it := range items {
				collectRefs(it, rest, out)
			}
		}
		return
	}
	var obj map[string]json.RawMessage
	if v[0] != '{' || json.Unmarshal(v, &obj) != nil {
		return
	}
	if len(rest) > 0 {
		collectRefs(obj[rest[0]], rest[1:], out)
		return
	}
	var ref string
	if json.Unmarshal(obj["reference"], &ref) != nil {
		return
	}
	if i := strings.Index(ref, "/_history/"); i >= 0 {
		ref = ref[:i]
	}
	segs := strings.Split(ref, "/")
	if n := len(segs); n >= 2 && segs[n-2] == "Patient" && segs[n-1] != "" {
		*out = append(*out, segs[n-1])
	}
}

var jsonUnmarshal = json.Unmarshal

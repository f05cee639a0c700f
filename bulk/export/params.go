package export

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"fhirbucket/bulk"
	"fhirbucket/fhir"
)

// Levels of an export.
const (
	LevelSystem  = "system"
	LevelPatient = "patient"
	LevelGroup   = "group"
)

// Request is a parsed kick-off.
type Request struct {
	Level   string
	GroupID string // LevelGroup
	// Since and Until bound meta.lastUpdated (zero: unbounded).
	Since, Until time.Time
	Types        []string // empty: every type (of the compartment at Patient and Group level)
	Elements     []string // "element" or "Type.element"
	Patients     []string // patient ids of the patient parameter (POST only)
	AllowPartial bool     // allowPartialManifests
	// Notes are informational messages for the error file: parameters
	// ignored under Prefer: handling=lenient.
	Notes []string
	// URL is the kick-off URL (the manifest's request); Base the absolute
	// FHIR base of the tenant the file URLs are built on; Client the
	// authenticated client ("" without auth).
	URL, Base, Client string
}

// outputFormats are the accepted _outputFormat values.
var outputFormats = map[string]bool{"application/fhir+ndjson": true, "application/ndjson": true, "ndjson": true}

// ParseParams reads the kick-off parameters into r (Level, GroupID, URL,
// Base and Client are the caller's). params maps each name to its values
// (query parameters, or the Parameters of a POST body as strings);
// repeated parameters count as one comma-joined value. post says whether
// the kick-off was a POST (patient is allowed only then); lenient is
// Prefer: handling=lenient, under which unknown types and unsupported
// parameters are ignored and reported in the error file instead of
// refused. Errors wrap bulk.ErrInvalid or bulk.ErrNotSupported.
func ParseParams(r *Request, params map[string][]string, post, lenient bool) error {
	joined := func(name string) []string {
		var out []string
		for _, v := range params[name] {
			for p := range strings.SplitSeq(v, ",") {
				if p = strings.TrimSpace(p); p != "" {
					out = append(out, p)
				}
			}
		}
		return out
	}
	one := func(name string) (string, error) {
		vs := joined(name)
		if len(vs) > 1 {
			return "", fmt.Errorf("%w: %s is given %d times; give it once", bulk.ErrInvalid, name, len(vs))
		}
		if len(vs) == 0 {
			return "", nil
		}
		return vs[0], nil
	}
	for name := range params {
		switch name {
		case "_outputFormat", "_since", "_until", "_type", "_elements", "patient", "allowPartialManifests",
			"includeAssociatedData", "_typeFilter", "organizeOutputBy":
		case "_format":
			// Negotiated by the server.
		default:
			if !lenient {
				return fmt.Errorf("%w: unknown $export parameter %q (send Prefer: handling=lenient to ignore it)", bulk.ErrInvalid, name)
			}
			r.Notes = append(r.Notes, fmt.Sprintf("the unknown parameter %s was ignored", name))
		}
	}
	if f, err := one("_outputFormat"); err != nil {
		return err
	} else if f != "" && !outputFormats[f] {
		return fmt.Errorf("%w: _outputFormat %q is not supported; use application/fhir+ndjson", bulk.ErrInvalid, f)
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"_since", &r.Since}, {"_until", &r.Until}} {
		v, err := one(p.name)
		if err != nil {
			return err
		}
		if v == "" {
			continue
		}
		t, err := fhir.ParseInstant(v)
		if err != nil {
			return fmt.Errorf("%w: %s %q is not a FHIR instant (such as 2024-01-02T03:04:05Z)", bulk.ErrInvalid, p.name, v)
		}
		*p.dst = t
	}
	if !r.Since.IsZero() && !r.Until.IsZero() && r.Until.Before(r.Since) {
		return fmt.Errorf("%w: _until is before _since", bulk.ErrInvalid)
	}
	for _, t := range joined("_type") {
		if !fhir.IsResourceType(t) {
			if !lenient {
				return fmt.Errorf("%w: _type %q is not a FHIR R4 resource type", bulk.ErrInvalid, t)
			}
			r.Notes = append(r.Notes, fmt.Sprintf("_type %s is not a FHIR R4 resource type and was ignored", t))
			continue
		}
		if r.Level != LevelSystem && !inCompartment(t) {
			if !lenient {
				return fmt.Errorf("%w: _type %q has no Patient compartment membership, so a %s-level export never holds it", bulk.ErrInvalid, t, r.Level)
			}
			r.Notes = append(r.Notes, fmt.Sprintf("_type %s is outside the Patient compartment and was ignored", t))
			continue
		}
		if !slices.Contains(r.Types, t) {
			r.Types = append(r.Types, t)
		}
	}
	if len(joined("_type")) > 0 && len(r.Types) == 0 {
		return fmt.Errorf("%w: no _type value names a type this export can hold", bulk.ErrInvalid)
	}
	for _, e := range joined("_elements") {
		typ, el, qualified := strings.Cut(e, ".")
		if !qualified {
			el, typ = typ, ""
		}
		if (typ != "" && !fhir.IsResourceType(typ)) || !validElement(el) {
			return fmt.Errorf("%w: _elements %q is neither element nor Type.element (top-level elements only)", bulk.ErrInvalid, e)
		}
		r.Elements = append(r.Elements, e)
	}
	if pats := joined("patient"); len(pats) > 0 {
		if !post {
			return fmt.Errorf("%w: the patient parameter is allowed with POST only", bulk.ErrInvalid)
		}
		if r.Level == LevelSystem {
			return fmt.Errorf("%w: the patient parameter is allowed at Patient and Group level only", bulk.ErrInvalid)
		}
		for _, p := range pats {
			id, ok := strings.CutPrefix(p, "Patient/")
			if !ok || !fhir.ValidID(id) {
				return fmt.Errorf("%w: patient %q is not a reference Patient/{id}", bulk.ErrInvalid, p)
			}
			if !slices.Contains(r.Patients, id) {
				r.Patients = append(r.Patients, id)
			}
		}
	}
	if v, err := one("allowPartialManifests"); err != nil {
		return err
	} else if v != "" {
		if v != "true" && v != "false" {
			return fmt.Errorf("%w: allowPartialManifests %q is not true or false", bulk.ErrInvalid, v)
		}
		r.AllowPartial = v == "true"
	}
	for _, name := range []string{"includeAssociatedData", "_typeFilter", "organizeOutputBy"} {
		if len(params[name]) == 0 {
			continue
		}
		if !lenient {
			return fmt.Errorf("%w: %s is not supported by this server (send Prefer: handling=lenient to ignore it)", bulk.ErrNotSupported, name)
		}
		r.Notes = append(r.Notes, fmt.Sprintf("%s is not supported and was ignored: the export is not filtered by it", name))
	}
	return nil
}

func validElement(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// FromParameters turns a POST body's Parameters into the name → values
// map of ParseParams. Only primitive values are accepted.
func FromParameters(p *fhir.Parameters) (map[string][]string, error) {
	out := map[string][]string{}
	for _, prm := range p.Parameter {
		var v string
		switch {
		case prm.ValueString != "":
			v = prm.ValueString
		case prm.ValueCode != "":
			v = prm.ValueCode
		case prm.ValueInstant != "":
			v = prm.ValueInstant
		case prm.ValueDT != "":
			v = prm.ValueDT
		case prm.ValueBoolean != nil:
			v = fmt.Sprint(*prm.ValueBoolean)
		case prm.ValueURI != "":
			v = prm.ValueURI
		case prm.ValueCanon != "":
			v = prm.ValueCanon
		case len(prm.Other["valueReference"]) > 0:
			var ref struct {
				Reference string `json:"reference"`
			}
			if err := jsonUnmarshal(prm.Other["valueReference"], &ref); err != nil || ref.Reference == "" {
				return nil, fmt.Errorf("%w: parameter %s has a valueReference without a reference", bulk.ErrInvalid, prm.Name)
			}
			v = ref.Reference
		default:
			return nil, fmt.Errorf("%w: parameter %q has no value this operation reads", bulk.ErrInvalid, prm.Name)
		}
		out[prm.Name] = append(out[prm.Name], v)
	}
	return out, nil
}

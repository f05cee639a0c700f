package fhir

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
)

// Parameters is the Parameters resource used as input and output of
// operations ($export, $validate...).
type Parameters struct {
	ResourceType string      `json:"resourceType"` // "Parameters"
	ID           string      `json:"id,omitempty"`
	Parameter    []Parameter `json:"parameter,omitempty"`
}

// Parameter is Parameters.parameter. The common value[x] types have
// fields; any other member (another value[x] such as valueCoding,
// extension, id) is kept raw in Other, so nothing read is lost when a
// Parameter is written back.
type Parameter struct {
	Name         string          `json:"name"`
	ValueString  string          `json:"valueString,omitempty"`
	ValueBoolean *bool           `json:"valueBoolean,omitempty"`
	ValueInteger *int            `json:"valueInteger,omitempty"`
	ValueDecimal json.Number     `json:"valueDecimal,omitempty"`
	ValueCode    string          `json:"valueCode,omitempty"`
	ValueID      string          `json:"valueId,omitempty"`
	ValueURI     string          `json:"valueUri,omitempty"`
	ValueURL     string          `json:"valueUrl,omitempty"`
	ValueCanon   string          `json:"valueCanonical,omitempty"`
	ValueDate    string          `json:"valueDate,omitempty"`
	ValueDT      string          `json:"valueDateTime,omitempty"`
	ValueInstant string          `json:"valueInstant,omitempty"`
	Resource     json.RawMessage `json:"resource,omitempty"`
	Part         []Parameter     `json:"part,omitempty"`
	// Other holds members without a field above, by name.
	Other map[string]json.RawMessage `json:"-"`
}

// parameterFields are the member names Parameter has fields for.
var parameterFields = map[string]bool{
	"name": true, "valueString": true, "valueBoolean": true, "valueInteger": true,
	"valueDecimal": true, "valueCode": true, "valueId": true, "valueUri": true,
	"valueUrl": true, "valueCanonical": true, "valueDate": true, "valueDateTime": true,
	"valueInstant": true, "resource": true, "part": true,
}

type parameterAlias Parameter

// UnmarshalJSON decodes the known members into fields and keeps the rest
// in Other.
func (p *Parameter) UnmarshalJSON(data []byte) error {
	var a parameterAlias
	if err := decodeObject(data, &a); err != nil {
		return err
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(data, &all); err != nil {
		return err
	}
	for k, v := range all {
		if !parameterFields[k] {
			if a.Other == nil {
				a.Other = make(map[string]json.RawMessage)
			}
			a.Other[k] = v
		}
	}
	*p = Parameter(a)
	return nil
}

// MarshalJSON writes the fields, then Other in name order.
func (p Parameter) MarshalJSON() ([]byte, error) {
	out, err := Marshal(parameterAlias(p))
	if err != nil || len(p.Other) == 0 {
		return out, err
	}
	keys := make([]string, 0, len(p.Other))
	for k := range p.Other {
		if !parameterFields[k] {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	out = bytes.TrimSuffix(out, []byte{'}'})
	for _, k := range keys {
		kb, err := Marshal(k)
		if err != nil {
			return nil, err
		}
		out = append(out, ',')
		out = append(out, kb...)
		out = append(out, ':')
		out = append(out, p.Other[k]...)
	}
	return append(out, '}'), nil
}

// ParseParameters decodes a Parameters resource without schema validation
// (validate it with a Validator first). It checks that data is a JSON
// object with resourceType "Parameters" and that every parameter, at any
// depth of part, has a name. Errors wrap ErrInvalid and name the parameter,
// e.g. Parameters.parameter[1].part[0].
func ParseParameters(data []byte) (*Parameters, error) {
	if d := nesting(data); d > DefaultMaxDepth {
		return nil, invalidf("Parameters: JSON nested deeper than %d levels", DefaultMaxDepth)
	}
	var p Parameters
	if err := decodeObject(data, &p); err != nil {
		return nil, invalidf("Parameters: %v", err)
	}
	if p.ResourceType != "Parameters" {
		return nil, invalidf("resourceType is %q, want \"Parameters\"", p.ResourceType)
	}
	var check func(ps []Parameter, path string) error
	check = func(ps []Parameter, path string) error {
		for i, q := range ps {
			at := path + "[" + strconv.Itoa(i) + "]"
			if strings.TrimSpace(q.Name) == "" {
				return invalidf("%s.name is missing", at)
			}
			if len(q.Resource) > 0 && !isJSONObject(q.Resource) {
				return invalidf("%s.resource: not a JSON object", at)
			}
			if err := check(q.Part, at+".part"); err != nil {
				return err
			}
		}
		return nil
	}
	if err := check(p.Parameter, "Parameters.parameter"); err != nil {
		return nil, err
	}
	return &p, nil
}

// Get returns the first top-level parameter called name, or nil.
func (p *Parameters) Get(name string) *Parameter {
	for i := range p.Parameter {
		if p.Parameter[i].Name == name {
			return &p.Parameter[i]
		}
	}
	return nil
}

// All returns every top-level parameter called name.
func (p *Parameters) All(name string) []*Parameter {
	var out []*Parameter
	for i := range p.Parameter {
		if p.Parameter[i].Name == name {
			out = append(out, &p.Parameter[i])
		}
	}
	return out
}

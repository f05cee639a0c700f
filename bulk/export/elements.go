package export

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// subsetted is the meta.tag of a resource cut down by _elements.
const subsetted = `{"system":"http://terminology.hl7.org/CodeSystem/v3-ObservationValue","code":"SUBSETTED","display":"subsetted"}`

// elementsFor returns the top-level elements _elements keeps for typ (nil:
// the parameter does not restrict typ).
func elementsFor(elements []string, typ string) map[string]bool {
	var keep map[string]bool
	for _, e := range elements {
		t, el, qualified := strings.Cut(e, ".")
		if !qualified {
			el, t = t, typ
		}
		if t != typ {
			continue
		}
		if keep == nil {
			keep = map[string]bool{"resourceType": true, "id": true, "meta": true}
		}
		keep[el] = true
	}
	return keep
}

// subset keeps the top-level members of content named in keep, in their
// order and byte for byte, and tags meta SUBSETTED.
func subset(content []byte, keep map[string]bool) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(content))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("export: resource is not a JSON object")
	}
	var out bytes.Buffer
	out.WriteByte('{')
	first, sawMeta := true, false
	emit := func(name string, v []byte) {
		if !first {
			out.WriteByte(',')
		}
		first = false
		k, _ := json.Marshal(name)
		out.Write(k)
		out.WriteByte(':')
		out.Write(v)
	}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, _ := t.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		if !keep[name] {
			continue
		}
		if name == "meta" {
			sawMeta = true
			tagged, err := tagMeta(v)
			if err != nil {
				return nil, err
			}
			v = tagged
		}
		emit(name, v)
	}
	if !sawMeta {
		emit("meta", []byte(`{"tag":[`+subsetted+`]}`))
	}
	out.WriteByte('}')
	return out.Bytes(), nil
}

// tagMeta appends the SUBSETTED tag to meta.tag, keeping everything else
// of meta.
func tagMeta(meta json.RawMessage) (json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(meta, &m); err != nil {
		return nil, err
	}
	var tags []json.RawMessage
	if raw, ok := m["tag"]; ok {
		if err := json.Unmarshal(raw, &tags); err != nil {
			return nil, err
		}
	}
	tags = append(tags, json.RawMessage(subsetted))
	t, _ := json.Marshal(tags)
	m["tag"] = t
	return json.Marshal(m)
}

//go:build ignore

// Gen makes fhir.schema.json.gz, the copy of the HL7 FHIR R4 JSON schema
// that package fhir embeds, from the official fhir.schema.json
// (https://hl7.org/fhir/R4/fhir.schema.json.zip). Run from package fhir:
//
//	go generate ./fhir   (with FHIR_SCHEMA pointing at fhir.schema.json)
//
// or directly: go run schema/gen.go -in /path/to/fhir.schema.json -out schema/fhir.schema.json.gz
//
// The changes it makes are described in README.md; each keeps the set of
// valid documents the same except where the official schema contradicts
// the specification's own examples.
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"strings"
)

func main() {
	in := flag.String("in", os.Getenv("FHIR_SCHEMA"), "official fhir.schema.json")
	out := flag.String("out", "schema/fhir.schema.json.gz", "output file")
	flag.Parse()
	if *in == "" {
		log.Fatal("set -in or FHIR_SCHEMA to the official fhir.schema.json")
	}
	data, err := os.ReadFile(*in)
	if err != nil {
		log.Fatal(err)
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var schema map[string]any
	if err := d.Decode(&schema); err != nil {
		log.Fatal(err)
	}
	defs := schema["definitions"].(map[string]any)

	// 1. Every enumeration of FHIR versions must allow 4.0.1, the version
	// this server speaks.
	walk(schema, "", func(path string, obj map[string]any) {
		enum, ok := obj["enum"].([]any)
		if !ok || !strings.Contains(strings.ToLower(path), "fhirversion") {
			return
		}
		if !slices.Contains(enum, any("4.0.1")) {
			obj["enum"] = append(enum, "4.0.1")
			log.Printf("added 4.0.1 to %s/enum", path)
		} else {
			log.Printf("%s/enum already lists 4.0.1", path)
		}
	})

	// 2. In FHIR JSON every primitive element may carry its id and
	// extensions in a companion member named with a leading underscore
	// (http://hl7.org/fhir/R4/json.html#primitive). The official schema
	// has the companion for every primitive type except canonical: 72
	// canonical elements (Meta.profile, ElementDefinition.type.profile,
	// ...) lack it, and the official example
	// structuredefinition-example-composition.json uses
	// ElementDefinition.type._profile. The companion is added, shaped like
	// the existing ones (a single Element, or an array of them for a
	// repeating element).
	added := 0
	for _, def := range defs {
		props, _ := def.(map[string]any)["properties"].(map[string]any)
		for name, p := range props {
			prop := p.(map[string]any)
			if strings.HasPrefix(name, "_") || props["_"+name] != nil {
				continue
			}
			const canonical = "#/definitions/canonical"
			element := map[string]any{"$ref": "#/definitions/Element"}
			switch {
			case prop["$ref"] == canonical:
				props["_"+name] = element
			case prop["type"] == "array" && prop["items"].(map[string]any)["$ref"] == canonical:
				props["_"+name] = map[string]any{"type": "array", "items": element}
			default:
				continue
			}
			added++
		}
	}
	log.Printf("added %d _element companions for canonical elements", added)

	// 3. Complex types and resources are JSON objects
	// (http://hl7.org/fhir/R4/json.html), but the official definitions
	// only constrain properties, which JSON Schema applies to objects
	// alone: an array or a string where a CodeableConcept belongs
	// validated. Every definition with properties gets "type": "object".
	typed := 0
	for _, def := range defs {
		def := def.(map[string]any)
		if _, ok := def["properties"]; ok && def["type"] == nil {
			def["type"] = "object"
			typed++
		}
	}
	log.Printf("added type object to %d definitions", typed)

	// 4. ResourceList, used for contained resources, Bundle.entry.resource,
	// Bundle.entry.response.outcome and Parameters.parameter.resource, is a
	// oneOf over all 146 resource types. Every resource definition requires
	// resourceType with a const value, so at most one branch can match: the
	// oneOf is a lookup on resourceType. Here it only checks that the value
	// is an object with a known resourceType; the Validator then checks
	// each embedded resource against the definition of its type (see
	// embeddedResources in validate.go). The same documents validate, but
	// the reference graph loses the cycle through every resource type, so
	// each type compiles on its own, on first use, in milliseconds instead
	// of the whole schema at once, and an error names the faulty element
	// instead of 146 failed branches.
	rl := defs["ResourceList"].(map[string]any)
	var names []any
	for _, b := range rl["oneOf"].([]any) {
		ref := b.(map[string]any)["$ref"].(string)
		name := strings.TrimPrefix(ref, "#/definitions/")
		def := defs[name].(map[string]any)
		if !slices.Contains(def["required"].([]any), any("resourceType")) {
			log.Fatalf("%s does not require resourceType: rewrite would change meaning", name)
		}
		names = append(names, name)
	}
	defs["ResourceList"] = map[string]any{
		"type":       "object",
		"required":   []any{"resourceType"},
		"properties": map[string]any{"resourceType": map[string]any{"enum": names}},
	}

	// 5. The root schema is a oneOf over all resource types (plus a
	// non-standard discriminator). fhirbucket checks resourceType itself
	// and validates against #/definitions/<type>, which is what the oneOf
	// would select. The compiler compiles a document's root whenever it
	// compiles any definition in it, so keeping the oneOf would compile
	// all 146 resource types (seconds) on first use of any one of them.
	delete(schema, "oneOf")
	delete(schema, "discriminator")

	// 6. Descriptions are documentation only; dropping them halves the
	// size and the time to load the schema. Only string-valued
	// "description" keywords go: a property named description has an
	// object (a schema) as its value and stays.
	walk(schema, "", func(_ string, obj map[string]any) {
		if _, ok := obj["description"].(string); ok {
			delete(obj, "description")
		}
	})

	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	enc := json.NewEncoder(zw)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(schema); err != nil {
		log.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*out, buf.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("wrote %s (%d bytes)\n", *out, buf.Len())
}

// walk calls fn for every object in v, depth first, with its JSON pointer.
func walk(v any, path string, fn func(string, map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		fn(path, v)
		for k, c := range v {
			walk(c, path+"/"+k, fn)
		}
	case []any:
		for i, c := range v {
			walk(c, fmt.Sprintf("%s/%d", path, i), fn)
		}
	}
}

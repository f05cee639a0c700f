package fhir

import (
	"bytes"
	"compress/gzip"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

//go:generate go run schema/gen.go -out schema/fhir.schema.json.gz

// schemaGz is the HL7 FHIR R4 JSON schema as made by schema/gen.go (see
// schema/README.md for what differs from the official file).
//
//go:embed schema/fhir.schema.json.gz
var schemaGz []byte

// definitionURL+name names definition name of the embedded schema for the
// compiler; the prefix is the id the official file declares.
const definitionURL = "http://hl7.org/fhir/json-schema/4.0/definitions/"

// rewriteRefs turns the document-local references of a definition
// ("#/definitions/X" or "#/definitions/X/rest") into references relative to
// definitionURL ("X", "X#/rest").
func rewriteRefs(v any) {
	switch v := v.(type) {
	case map[string]any:
		if ref, ok := v["$ref"].(string); ok {
			if rest, ok := strings.CutPrefix(ref, "#/definitions/"); ok {
				name, ptr, found := strings.Cut(rest, "/")
				if found {
					name += "#/" + ptr
				}
				v["$ref"] = name
			}
		}
		for _, c := range v {
			rewriteRefs(c)
		}
	case []any:
		for _, c := range v {
			rewriteRefs(c)
		}
	}
}

// Defaults for ValidatorOptions.
const (
	DefaultMaxBytes = 8 << 20
	DefaultMaxDepth = 100
)

// ValidatorOptions configures a Validator. Zero values take the defaults.
type ValidatorOptions struct {
	// MaxBytes is the largest resource accepted; larger ones fail with
	// ErrTooLarge. Default DefaultMaxBytes (8 MiB).
	MaxBytes int64
	// MaxDepth bounds how deeply objects and arrays may nest. Default
	// DefaultMaxDepth (100); the deepest official example nests about 15.
	MaxDepth int
}

// Info is what Validate learns about a valid resource.
type Info struct {
	Type string
	ID   string // "" when the resource has no id
}

// Validator checks resources against the R4 JSON schema. It is safe for
// concurrent use. All Validators share one compiled schema per process.
type Validator struct {
	maxBytes int64
	maxDepth int
}

// compiled is the schema state shared by every Validator: loading and
// compiling the 3 MB schema takes about a second, so it happens once per
// process, and per-type entry points are compiled on first use.
var compiled struct {
	once     sync.Once
	err      error
	mu       sync.Mutex // guards compiler, which is not safe for concurrent use
	compiler *jsonschema.Compiler
	byType   sync.Map // resource type -> *jsonschema.Schema
}

func loadSchema() error {
	compiled.once.Do(func() {
		zr, err := gzip.NewReader(bytes.NewReader(schemaGz))
		if err != nil {
			compiled.err = fmt.Errorf("fhir: embedded schema: %w", err)
			return
		}
		doc, err := jsonschema.UnmarshalJSON(zr)
		if err != nil {
			compiled.err = fmt.Errorf("fhir: embedded schema: %w", err)
			return
		}
		// Each definition is added as a schema resource of its own, its
		// references rewritten to match. The compiler checks every
		// resource against the JSON Schema meta-schema when it first
		// loads it; as one 1.5 MB document that cost about a second on
		// first use, as separate resources it is paid per definition,
		// only for the definitions a resource type reaches.
		root, ok := doc.(map[string]any)
		defs, ok2 := root["definitions"].(map[string]any)
		if !ok || !ok2 {
			compiled.err = fmt.Errorf("fhir: embedded schema has no definitions")
			return
		}
		c := jsonschema.NewCompiler()
		c.DefaultDraft(jsonschema.Draft6)
		for _, f := range integerFormats {
			c.RegisterFormat(f)
		}
		c.AssertFormat() // the FHIR schema has no other "format"
		for name, def := range defs {
			rewriteRefs(def)
			restrictIntegers(def)
			if err := c.AddResource(definitionURL+name, def); err != nil {
				compiled.err = fmt.Errorf("fhir: embedded schema: %w", err)
				return
			}
		}
		compiled.compiler = c
		// Compiling Extension checks the whole document against the
		// JSON Schema meta-schema and compiles the data types every
		// resource shares, so a broken embedded schema fails here and
		// the first request does not pay for it.
		if _, err := c.Compile(definitionURL + "Extension"); err != nil {
			compiled.err = fmt.Errorf("fhir: compiling embedded schema: %w", err)
		}
	})
	return compiled.err
}

// integerFormats check the FHIR integer types (32-bit signed). The
// official JSON schema gives each only a "pattern" (inline in every
// property), which JSON Schema applies to strings alone, so 1.5 or
// 1e999999 would pass as an integer. restrictIntegers replaces such a
// pattern with one of these formats, which check the number's text: cheap
// even for 1e999999, where a numeric "maximum" would first compute the
// number exactly.
var integerFormats = map[string]*jsonschema.Format{
	`^-?([0]|([1-9][0-9]*))$`: {Name: "fhir-integer", Validate: func(v any) error { return checkInteger(v, -1<<31) }},
	`^[1-9][0-9]*$`:           {Name: "fhir-positiveInt", Validate: func(v any) error { return checkInteger(v, 1) }},
	`^[0]|([1-9][0-9]*)$`:     {Name: "fhir-unsignedInt", Validate: func(v any) error { return checkInteger(v, 0) }},
}

var integerText = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)

// checkInteger accepts a JSON number written as a plain integer in
// [minimum, 2^31-1]; other JSON types are the "type" keyword's business.
func checkInteger(v any, minimum int64) error {
	n, ok := v.(json.Number)
	if !ok {
		return nil
	}
	s := string(n)
	if !integerText.MatchString(s) {
		return fmt.Errorf("%s is not an integer (no fraction or exponent)", s)
	}
	i, err := strconv.ParseInt(s, 10, 32)
	if err != nil || i < minimum {
		return fmt.Errorf("%s is outside %d..%d", s, minimum, int64(1<<31-1))
	}
	return nil
}

// restrictIntegers gives every integer-typed node of a schema definition
// its integer format.
func restrictIntegers(v any) {
	switch v := v.(type) {
	case map[string]any:
		if pat, ok := v["pattern"].(string); ok && v["type"] == "number" {
			if f, ok := integerFormats[pat]; ok {
				v["format"] = f.Name
			}
		}
		for _, c := range v {
			restrictIntegers(c)
		}
	case []any:
		for _, c := range v {
			restrictIntegers(c)
		}
	}
}

func schemaFor(resourceType string) (*jsonschema.Schema, error) {
	if s, ok := compiled.byType.Load(resourceType); ok {
		return s.(*jsonschema.Schema), nil
	}
	compiled.mu.Lock()
	defer compiled.mu.Unlock()
	if s, ok := compiled.byType.Load(resourceType); ok {
		return s.(*jsonschema.Schema), nil
	}
	s, err := compiled.compiler.Compile(definitionURL + resourceType)
	if err != nil {
		return nil, fmt.Errorf("fhir: compiling schema for %s: %w", resourceType, err)
	}
	compiled.byType.Store(resourceType, s)
	return s, nil
}

// NewValidator returns a Validator. The first call in a process loads the
// embedded schema (about 0.2 s); its error, if any, is returned by every
// call. The schema of each resource type is compiled on first use (2-30 ms)
// and shared by all Validators.
func NewValidator(opts ValidatorOptions) (*Validator, error) {
	if opts.MaxBytes < 0 || opts.MaxDepth < 0 {
		return nil, fmt.Errorf("fhir: ValidatorOptions: negative MaxBytes or MaxDepth")
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MaxDepth == 0 {
		opts.MaxDepth = DefaultMaxDepth
	}
	if err := loadSchema(); err != nil {
		return nil, err
	}
	return &Validator{maxBytes: opts.MaxBytes, maxDepth: opts.MaxDepth}, nil
}

// Validate checks one resource, in this order, stopping at the first step
// that finds problems: size (ErrTooLarge), UTF-8, exactly one JSON object
// with nothing after it, no duplicate member names at any depth, nesting
// at most MaxDepth, resourceType present and an R4 type, id (when present)
// a string satisfying ValidID, and finally the R4 JSON schema definition of
// that type, and of their own types for embedded resources (contained,
// Bundle.entry.resource and response.outcome, Parameters.parameter.resource).
// Problems are returned as a *ValidationError (wrapping
// ErrInvalid) listing every issue the failing step found.
func (v *Validator) Validate(resource []byte) (Info, error) {
	if int64(len(resource)) > v.maxBytes {
		return Info{}, fmt.Errorf("%w: resource is %d bytes, the limit is %d", ErrTooLarge, len(resource), v.maxBytes)
	}
	if !utf8.Valid(resource) {
		return Info{}, &ValidationError{Issues: []Issue{{
			Code:    "structure",
			Message: fmt.Sprintf("not valid UTF-8 at offset %d", invalidUTF8Offset(resource)),
		}}}
	}
	p := treeParser{data: resource, maxDepth: v.maxDepth}
	doc, _ := p.parse()
	if len(p.issues) > 0 {
		return Info{}, p.validationError()
	}
	top, ok := doc.(map[string]any)
	if !ok {
		return Info{}, &ValidationError{Issues: []Issue{{
			Code:    "structure",
			Message: fmt.Sprintf("a resource must be a JSON object, not %s", jsonKind(doc)),
		}}}
	}
	info, err := checkEnvelope(top)
	if err != nil {
		return Info{}, err
	}
	var issues []Issue
	if err := validateResource(info.Type, top, info.Type, &issues); err != nil {
		return Info{}, err
	}
	if len(issues) > 0 {
		return Info{}, &ValidationError{Issues: sortIssues(issues)}
	}
	return info, nil
}

// validateResource checks res against the definition of typ and then each
// resource embedded in it against its own type's definition, appending
// issues with paths under root.
func validateResource(typ string, res map[string]any, root string, issues *[]Issue) error {
	sch, err := schemaFor(typ)
	if err != nil {
		return err
	}
	if err := sch.Validate(res); err != nil {
		var verr *jsonschema.ValidationError
		if !errors.As(err, &verr) {
			return fmt.Errorf("fhir: schema validation: %w", err)
		}
		*issues = append(*issues, schemaIssues(root, res, verr)...)
	}
	var ferr error
	embeddedResources(typ, res, func(segs []pathSeg, emb map[string]any) {
		rt, ok := emb["resourceType"].(string)
		if ferr != nil || !ok || !IsResourceType(rt) || len(*issues) >= maxIssues {
			// A missing or unknown type was reported by the schema
			// (ResourceList requires a known resourceType).
			return
		}
		ferr = validateResource(rt, emb, formatPath(root, segs), issues)
	})
	return ferr
}

// embeddedResources calls fn for every resource embedded in res, with its
// location relative to res: the places where the official schema refers
// to ResourceList (see schema/README.md). Values of the wrong shape are
// skipped; the schema reports them.
func embeddedResources(typ string, res map[string]any, fn func([]pathSeg, map[string]any)) {
	each := func(v any, f func(i int, m map[string]any)) {
		arr, _ := v.([]any)
		for i, e := range arr {
			if m, ok := e.(map[string]any); ok {
				f(i, m)
			}
		}
	}
	key := func(k string) pathSeg { return pathSeg{key: k, index: -1} }
	idx := func(i int) pathSeg { return pathSeg{index: i} }
	each(res["contained"], func(i int, m map[string]any) {
		fn([]pathSeg{key("contained"), idx(i)}, m)
	})
	switch typ {
	case "Bundle":
		each(res["entry"], func(i int, e map[string]any) {
			if m, ok := e["resource"].(map[string]any); ok {
				fn([]pathSeg{key("entry"), idx(i), key("resource")}, m)
			}
			if r, ok := e["response"].(map[string]any); ok {
				if m, ok := r["outcome"].(map[string]any); ok {
					fn([]pathSeg{key("entry"), idx(i), key("response"), key("outcome")}, m)
				}
			}
		})
	case "Parameters":
		var params func(v any, prefix []pathSeg)
		params = func(v any, prefix []pathSeg) {
			each(v, func(i int, p map[string]any) {
				at := append(slices.Clip(prefix), idx(i))
				if m, ok := p["resource"].(map[string]any); ok {
					fn(append(slices.Clip(at), key("resource")), m)
				}
				params(p["part"], append(slices.Clip(at), key("part")))
			})
		}
		params(res["parameter"], []pathSeg{key("parameter")})
	}
}

// checkEnvelope checks resourceType and id, the two members everything
// else in fhirbucket relies on.
func checkEnvelope(top map[string]any) (Info, error) {
	root := rootName(top)
	rtv, ok := top["resourceType"]
	if !ok {
		return Info{}, &ValidationError{Issues: []Issue{{Code: "required", Path: root + ".resourceType", Message: "resourceType is missing"}}}
	}
	rt, ok := rtv.(string)
	if !ok {
		return Info{}, &ValidationError{Issues: []Issue{{Code: "value", Path: root + ".resourceType", Message: fmt.Sprintf("resourceType must be a string, not %s", jsonKind(rtv))}}}
	}
	if !IsResourceType(rt) {
		return Info{}, &ValidationError{Issues: []Issue{{Code: "value", Path: root + ".resourceType", Message: fmt.Sprintf("unknown resource type %q", rt)}}}
	}
	info := Info{Type: rt}
	if idv, ok := top["id"]; ok {
		id, ok := idv.(string)
		if !ok {
			return Info{}, &ValidationError{Issues: []Issue{{Code: "value", Path: rt + ".id", Message: fmt.Sprintf("id must be a string, not %s", jsonKind(idv))}}}
		}
		if !ValidID(id) {
			return Info{}, &ValidationError{Issues: []Issue{{Code: "value", Path: rt + ".id", Message: fmt.Sprintf("id %q is not a valid FHIR id (1 to 64 of A-Z a-z 0-9 - .)", id)}}}
		}
		info.ID = id
	}
	return info, nil
}

func (p *treeParser) validationError() *ValidationError {
	root := "Resource"
	if p.top != nil {
		root = rootName(p.top)
	}
	issues := make([]Issue, len(p.issues))
	for i, r := range p.issues {
		issues[i] = Issue{Code: r.code, Path: formatPath(root, r.segs), Message: r.msg}
	}
	return &ValidationError{Issues: issues}
}

func invalidUTF8Offset(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return i
		}
		i += n
	}
	return len(b)
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

var printer = message.NewPrinter(language.English)

// schemaIssues turns the library's error tree into Issues: one per leaf
// (the keyword that failed), with the instance location rendered as a
// FHIRPath-like path and the FHIR type named where the schema says it.
func schemaIssues(root string, doc any, verr *jsonschema.ValidationError) []Issue {
	var issues []Issue
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(issues) >= maxIssues {
			return
		}
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		path := instancePath(root, doc, e.InstanceLocation)
		typ := fhirTypeOf(e.SchemaURL)
		switch k := e.ErrorKind.(type) {
		case *kind.AdditionalProperties:
			for _, name := range k.Properties {
				issues = append(issues, Issue{Code: "structure", Path: appendKey(path, name), Message: fmt.Sprintf("unknown element %q", name)})
			}
		case *kind.Required:
			for _, name := range k.Missing {
				issues = append(issues, Issue{Code: "required", Path: appendKey(path, name), Message: fmt.Sprintf("required element %q is missing", name)})
			}
		case *kind.Type:
			msg := fmt.Sprintf("wrong JSON type: got %s, want %s", k.Got, strings.Join(k.Want, " or "))
			if typ != "" {
				msg += " (FHIR " + typ + ")"
			}
			issues = append(issues, Issue{Code: "structure", Path: path, Message: msg})
		case *kind.Pattern:
			msg := fmt.Sprintf("%q does not match pattern %s", k.Got, k.Want)
			if typ != "" {
				msg = fmt.Sprintf("%q is not a valid FHIR %s", k.Got, typ)
			}
			issues = append(issues, Issue{Code: "value", Path: path, Message: msg})
		case *kind.Enum, *kind.Const:
			issues = append(issues, Issue{Code: "value", Path: path, Message: e.ErrorKind.LocalizedString(printer)})
		case *kind.MaxLength, *kind.MaxItems:
			issues = append(issues, Issue{Code: "too-long", Path: path, Message: e.ErrorKind.LocalizedString(printer)})
		default:
			issues = append(issues, Issue{Code: "invalid", Path: path, Message: e.ErrorKind.LocalizedString(printer)})
		}
	}
	walk(verr)
	if len(issues) == 0 {
		// Cannot happen with the schema we embed; never report an error
		// without saying something.
		issues = append(issues, Issue{Code: "invalid", Path: root, Message: verr.Error()})
	}
	return issues
}

// sortIssues orders issues by path: the library visits object members in
// map order. Repeats (a value failing the same way via two keywords) go.
func sortIssues(issues []Issue) []Issue {
	slices.SortStableFunc(issues, func(a, b Issue) int {
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		return strings.Compare(a.Message, b.Message)
	})
	return slices.Compact(issues)
}

// instancePath renders a JSON-pointer token list as a path, using the
// document to tell array indexes from member names.
func instancePath(root string, doc any, loc []string) string {
	segs := make([]pathSeg, 0, len(loc))
	cur := doc
	for _, tok := range loc {
		switch c := cur.(type) {
		case []any:
			var i int
			if _, err := fmt.Sscanf(tok, "%d", &i); err == nil && i >= 0 && i < len(c) {
				segs = append(segs, pathSeg{index: i})
				cur = c[i]
				continue
			}
		case map[string]any:
			cur = c[tok]
		default:
			cur = nil
		}
		segs = append(segs, pathSeg{key: tok, index: -1})
	}
	return formatPath(root, segs)
}

func appendKey(path, key string) string {
	return formatPath(path, []pathSeg{{key: key, index: -1}})
}

// fhirTypeOf extracts the definition name, the FHIR type, from a schema
// location such as http://hl7.org/fhir/json-schema/4.0/definitions/date or
// .../definitions/Patient#/properties/gender.
func fhirTypeOf(schemaURL string) string {
	name, ok := strings.CutPrefix(schemaURL, definitionURL)
	if !ok {
		return ""
	}
	name, _, _ = strings.Cut(name, "#")
	return name
}

package server

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"

	"fhirbucket/fhir"
	"fhirbucket/index"
)

// capabilityDate is CapabilityStatement.date: the day the statement last
// changed. Change it with the statement, so that every replica of one
// release serves the same document and ETag.
const capabilityDate = "2026-11-26"

type capabilityStatement struct {
	ResourceType   string      `json:"resourceType"`
	ID             string      `json:"id"`
	URL            string      `json:"url"`
	Version        string      `json:"version"`
	Name           string      `json:"name"`
	Title          string      `json:"title"`
	Status         string      `json:"status"`
	Experimental   bool        `json:"experimental"`
	Date           string      `json:"date"`
	Publisher      string      `json:"publisher"`
	Description    string      `json:"description"`
	Kind           string      `json:"kind"`
	Software       capSoftware `json:"software"`
	Instantiates   []string    `json:"instantiates,omitempty"`
	Implementation capImpl     `json:"implementation"`
	FhirVersion    string      `json:"fhirVersion"`
	Format         []string    `json:"format"`
	Rest           []capRest   `json:"rest"`
}

type capSoftware struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

type capImpl struct {
	Description string `json:"description"`
	URL         string `json:"url"`
}

type capRest struct {
	Mode          string           `json:"mode"`
	Documentation string           `json:"documentation"`
	Security      *capSecurity     `json:"security,omitempty"`
	Resource      []capResource    `json:"resource"`
	Interaction   []capInteraction `json:"interaction"`
	Operation     []capOperation   `json:"operation,omitempty"`
}

type capOperation struct {
	Name       string `json:"name"`
	Definition string `json:"definition"`
}

// bulkDataCapability is the Bulk Data Access CapabilityStatement an
// export-enabled server instantiates.
const bulkDataCapability = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"

// capabilityOperations are the operations of the route table's rows that
// claim one, once each, in table order; none when the service behind them
// is not configured.
func (s *Server) capabilityOperations() []capOperation {
	if s.export == nil {
		return nil
	}
	var out []capOperation
	seen := map[string]bool{}
	for _, rt := range s.table {
		def, ok := operationDefinitions[rt.capability]
		if ok && !seen[rt.capability] {
			seen[rt.capability] = true
			out = append(out, capOperation{Name: rt.capability, Definition: def})
		}
	}
	return out
}

// capSecurity is rest.security: the SMART-on-FHIR service with the
// oauth-uris extension naming the token endpoint (auth mode smart), or
// only a description (auth mode token).
type capSecurity struct {
	Extension   []capExtension       `json:"extension,omitempty"`
	Service     []capCodeableConcept `json:"service,omitempty"`
	Description string               `json:"description"`
}

type capExtension struct {
	URL       string         `json:"url"`
	ValueURI  string         `json:"valueUri,omitempty"`
	Extension []capExtension `json:"extension,omitempty"`
}

type capCodeableConcept struct {
	Coding []capCoding `json:"coding"`
	Text   string      `json:"text,omitempty"`
}

type capCoding struct {
	System  string `json:"system"`
	Code    string `json:"code"`
	Display string `json:"display,omitempty"`
}

// security is rest.security for the server's auth mode; nil without
// access control.
func (s *Server) security(tokenURL string) *capSecurity {
	switch {
	case s.tokens != nil:
		return &capSecurity{
			Extension: []capExtension{{
				URL:       "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
				Extension: []capExtension{{URL: "token", ValueURI: tokenURL}},
			}},
			Service: []capCodeableConcept{{
				Coding: []capCoding{{System: "http://terminology.hl7.org/CodeSystem/restful-security-service", Code: "SMART-on-FHIR", Display: "SMART-on-FHIR"}},
				Text:   "SMART Backend Services: OAuth 2.0 client credentials with a signed JWT assertion (private_key_jwt)",
			}},
			Description: "Every request except /metadata and /.well-known/smart-configuration needs an access token from the token endpoint, " +
				"granted to a registered client bound to one tenant (or all) and to SMART system scopes (v1 and v2 syntax). " +
				"See .well-known/smart-configuration.",
		}
	case s.auth != nil:
		return &capSecurity{Description: "Every request except /metadata needs a bearer token issued out of band, " +
			"bound to one tenant (or all) and to SMART system scopes (v1 and v2 syntax)."}
	}
	return nil
}

type capResource struct {
	Type              string           `json:"type"`
	Interaction       []capInteraction `json:"interaction"`
	Versioning        string           `json:"versioning"`
	ReadHistory       bool             `json:"readHistory"`
	UpdateCreate      bool             `json:"updateCreate"`
	ConditionalCreate bool             `json:"conditionalCreate"`
	ConditionalRead   string           `json:"conditionalRead"`
	ConditionalUpdate bool             `json:"conditionalUpdate"`
	ConditionalDelete string           `json:"conditionalDelete"`
	SearchParam       []capSearchParam `json:"searchParam"`
}

type capInteraction struct {
	Code          string `json:"code"`
	Documentation string `json:"documentation,omitempty"`
}

type capSearchParam struct {
	Name          string `json:"name"`
	Definition    string `json:"definition,omitempty"`
	Type          string `json:"type"`
	Documentation string `json:"documentation"`
}

// capabilityInteractions are the capability codes of the route table, in
// table order: the type-level ones every resource type supports, and the
// system-level ones.
func (s *Server) capabilityInteractions() (typeLevel, system []capInteraction, flags map[string]bool) {
	flags = map[string]bool{}
	for _, rt := range s.table {
		for _, code := range strings.Fields(rt.capability) {
			if capabilityFlags[code] {
				flags[code] = true
				continue
			}
			switch systemLevel, ok := capabilityLevels[code]; {
			case !ok: // an operation (capabilityOperations)
			case systemLevel:
				system = append(system, capInteraction{Code: code})
			default:
				typeLevel = append(typeLevel, capInteraction{Code: code})
			}
		}
	}
	return typeLevel, system, flags
}

// capabilityStatement builds the statement for the FHIR base base. It
// states only what this server does: the interactions are those of the
// route table's rows that claim one (no batch or transaction), no
// conditional create/update/delete, search by _id (plus _count and
// _summary=count) only.
func (s *Server) capabilityStatement(base, tokenURL string) capabilityStatement {
	ia, system, flags := s.capabilityInteractions()
	cs := capabilityStatement{
		ResourceType:   "CapabilityStatement",
		ID:             "fhirbucket",
		URL:            base + "/metadata",
		Version:        s.version,
		Name:           "FhirbucketCapabilityStatement",
		Title:          "fhirbucket FHIR R4 server",
		Status:         "active",
		Date:           capabilityDate,
		Publisher:      "fhirbucket",
		Description:    "A FHIR R4 server whose only database is object storage: versioned reads and writes, history at every level, and listing by type.",
		Kind:           "instance",
		Software:       capSoftware{Name: "fhirbucket", Version: s.version},
		Implementation: capImpl{Description: "fhirbucket", URL: base},
		FhirVersion:    fhir.Version,
		Format:         []string{"json"},
	}
	var doc string
	switch {
	case s.index == nil && s.bundles == nil:
		doc = "JSON only. Search supports _id, _count and _summary=count; other search parameters answer 501 " +
			"unless Prefer: handling=lenient is sent. Conditional create, update and delete, batch and transaction answer 501."
	case s.index == nil:
		doc = "JSON only. Search supports _id, _count and _summary=count; other search parameters answer 501 " +
			"unless Prefer: handling=lenient is sent. Conditional create, update and delete answer 501. Transactions are " +
			"all or nothing (a journal in the bucket, committed by one conditional write); PATCH and conditional entries " +
			"in Bundles answer 501."
	default:
		doc = "JSON only. Search supports _id, _count, _summary=count and, on types with an identifier element, " +
			"identifier (system|value, |value, value; commas mean OR); other search parameters answer 501 unless " +
			"Prefer: handling=lenient is sent. Conditional create (If-None-Exist), update and delete accept identifier " +
			"(and _id) criteria only; of concurrent conditional creates of one identifier exactly one creates."
		if s.bundles != nil {
			doc += " Transactions are all or nothing (a journal in the bucket, committed by one conditional write); " +
				"PATCH entries in Bundles answer 501."
		} else {
			doc += " Batch and transaction answer 501."
		}
	}
	rest := capRest{Mode: "server", Documentation: doc, Security: s.security(tokenURL), Interaction: system, Operation: s.capabilityOperations()}
	if len(rest.Operation) > 0 {
		cs.Instantiates = []string{bulkDataCapability}
	}
	for _, t := range fhir.ResourceTypes() {
		// Conditional interactions and identifier search need the
		// identifier index, which covers the types with an identifier
		// element.
		indexed := s.index != nil && index.HasIdentifier(t)
		r := capResource{
			Type:              t,
			Interaction:       ia,
			Versioning:        "versioned-update",
			ReadHistory:       true,
			UpdateCreate:      true,
			ConditionalCreate: indexed && flags["conditionalCreate"],
			ConditionalRead:   "full-support",
			ConditionalUpdate: indexed && flags["conditionalUpdate"],
			ConditionalDelete: "not-supported",
			SearchParam: []capSearchParam{{
				Name:          "_id",
				Definition:    "http://hl7.org/fhir/SearchParameter/Resource-id",
				Type:          "token",
				Documentation: "One id or a comma-separated list of ids.",
			}},
		}
		if indexed && flags["conditionalDelete"] {
			r.ConditionalDelete = "single"
		}
		if indexed {
			r.SearchParam = append(r.SearchParam, capSearchParam{
				Name:          "identifier",
				Definition:    index.IdentifierParamURL(t),
				Type:          "token",
				Documentation: "system|value, |value (no system) or value (any system); comma-separated values mean OR; escape , | $ \\ inside a value with \\. No modifiers.",
			})
		}
		rest.Resource = append(rest.Resource, r)
	}
	cs.Rest = []capRest{rest}
	return cs
}

func (s *Server) capabilities(w http.ResponseWriter, r *http.Request) {
	data, err := fhir.Marshal(s.capabilityStatement(info(r).base, s.tokenURL(r)))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	sum := sha256.Sum256(data)
	etag := `W/"` + hex.EncodeToString(sum[:8]) + `"`
	w.Header().Set("ETag", etag)
	if inm := r.Header.Values("If-None-Match"); len(inm) > 0 && etagMatches(strings.Join(inm, ","), etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	s.writeBody(w, http.StatusOK, data)
}

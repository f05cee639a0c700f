package index

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"sync"

	"fhirbucket/fhirstore"
	"fhirbucket/internal/layout"
	"fhirbucket/storage"
)

// Identifier is one top-level identifier of a resource, as far as the
// index cares: its system ("" when absent) and value.
type Identifier struct {
	System, Value string
}

// HasIdentifier reports whether resources of typ have a top-level
// identifier element, that is whether the index covers them.
func HasIdentifier(typ string) bool { return identifierTypes[typ] }

// Identifiers returns the top-level identifiers of a resource (content is
// resource JSON) that have a value; the order is the resource's. Content
// that does not parse, or an identifier element of the wrong shape,
// yields none: the validator rejects such content before it is stored.
func Identifiers(content []byte) []Identifier {
	var top struct {
		Identifier json.RawMessage `json:"identifier"`
	}
	if json.Unmarshal(content, &top) != nil {
		return nil
	}
	raw := bytes.TrimSpace(top.Identifier)
	if len(raw) == 0 {
		return nil
	}
	type ident struct {
		System string `json:"system"`
		Value  string `json:"value"`
	}
	var list []ident
	if raw[0] == '[' {
		if json.Unmarshal(raw, &list) != nil {
			return nil
		}
	} else {
		var one ident
		if json.Unmarshal(raw, &one) != nil {
			return nil
		}
		list = []ident{one}
	}
	out := make([]Identifier, 0, len(list))
	for _, i := range list {
		if i.Value != "" {
			out = append(out, Identifier(i))
		}
	}
	return out
}

// Keys is the fhirstore.Indexer of the identifier index: a version of a
// type with an identifier element needs one entry per distinct
// identifier (layout.IdentifierEntryKey). Its zero value is ready to use;
// it must not be copied after first use.
type Keys struct {
	// prepared are the tenants known to be indexed (see PrepareTenant).
	prepared sync.Map
}

var (
	_ fhirstore.Indexer       = (*Keys)(nil)
	_ fhirstore.IndexPreparer = (*Keys)(nil)
)

// PrepareTenant implements fhirstore.IndexPreparer: before this
// process's first write of a tenant it makes sure the tenant's index is
// marked complete when the tenant has no resources yet (1 HEAD, and for
// a new tenant 1 LIST + 1 PUT; nothing once known). A tenant that holds
// resources without the marker stays unmarked until reindex.
func (k *Keys) PrepareTenant(ctx context.Context, tenant string, b storage.Bucket) {
	if _, ok := k.prepared.Load(tenant); ok {
		return
	}
	ok, err := markIfEmpty(ctx, b, "no resources at the first indexed write")
	if err == nil && ok {
		k.prepared.Store(tenant, struct{}{})
	}
}

// IndexKeys implements fhirstore.Indexer.
func (*Keys) IndexKeys(typ, id string, version int, content []byte) []string {
	if !identifierTypes[typ] {
		return nil
	}
	return entryKeys(typ, id, version, Identifiers(content))
}

func entryKeys(typ, id string, version int, ids []Identifier) []string {
	var out []string
	for _, i := range ids {
		k := layout.IdentifierEntryKey(typ, layout.IdentifierValueHash(i.Value), layout.IdentifierSystemHash(i.System), id, version)
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

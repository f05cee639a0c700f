package auth

import (
	"fmt"
	"strings"

	"fhirbucket/fhir"
)

// Perm is a set of SMART permissions on resources: the letters of a SMART
// v2 scope (c, r, u, d, s). The v1 suffixes map onto them: read = r|s,
// write = c|u|d, * = all five.
type Perm uint8

// The permissions, in the order SMART v2 spells them.
const (
	PermCreate Perm = 1 << iota
	PermRead
	PermUpdate
	PermDelete
	PermSearch

	PermAll = PermCreate | PermRead | PermUpdate | PermDelete | PermSearch
)

// String spells p as SMART v2 letters ("cruds", "rs", …).
func (p Perm) String() string {
	var b strings.Builder
	for i, c := range "cruds" {
		if p&(1<<i) != 0 {
			b.WriteRune(c)
		}
	}
	if b.Len() == 0 {
		return "none"
	}
	return b.String()
}

// v1Suffix spells p as a SMART v1 suffix when one says exactly p.
func (p Perm) v1Suffix() string {
	switch p {
	case PermRead | PermSearch:
		return "read"
	case PermCreate | PermUpdate | PermDelete:
		return "write"
	case PermAll:
		return "*"
	}
	return p.String()
}

// Interaction names what a route does, in the FHIR RESTful API's terms.
// The server labels every route it registers with one; Need says which
// permission the interaction asks for.
type Interaction string

// The interactions. Capabilities and Discovery are the public ones.
const (
	Capabilities Interaction = "capabilities"
	// Discovery is the SMART configuration of a FHIR base
	// (/.well-known/smart-configuration): clients read it before they
	// have a token.
	Discovery       Interaction = "discovery"
	Read            Interaction = "read"
	VRead           Interaction = "vread"
	Update          Interaction = "update"
	Delete          Interaction = "delete"
	Create          Interaction = "create"
	HistoryInstance Interaction = "history-instance"
	HistoryType     Interaction = "history-type"
	HistorySystem   Interaction = "history-system"
	SearchType      Interaction = "search-type"
	SearchSystem    Interaction = "search-system"
	// Batch is a batch or transaction Bundle posted to the base. Its
	// entries may touch any type, so until entries are checked one by one
	// it needs every permission on every type.
	Batch Interaction = "batch"
	// Operation is an operation ($name) or any other request on a type or
	// instance that is not one of the interactions above. It needs every
	// permission on the type: an unknown operation may read or write.
	Operation Interaction = "operation"
	// BulkSubmit is a bulk-submit request; it needs the named scope
	// system/bulk-submit.
	BulkSubmit Interaction = "bulk-submit"
	// Export is a Bulk Data export request (kick-off, status, files): it
	// reads every type, so it needs read on "*".
	Export Interaction = "export"
)

// Requirement is what an interaction needs of a principal.
type Requirement struct {
	// Public interactions need no token at all.
	Public bool
	// Perm is needed on the request's resource type (or, when AllTypes,
	// on every type: only a scope on "*" grants it).
	Perm     Perm
	AllTypes bool
	// Named is a named scope (such as "bulk-submit") needed instead of
	// Perm.
	Named string
}

// requirements is the one table of what each interaction needs.
var requirements = map[Interaction]Requirement{
	Capabilities:    {Public: true},
	Discovery:       {Public: true},
	Read:            {Perm: PermRead},
	VRead:           {Perm: PermRead},
	HistoryInstance: {Perm: PermRead},
	SearchType:      {Perm: PermSearch},
	HistoryType:     {Perm: PermSearch},
	// System-wide listings show every type, so they need a scope on "*"
	// rather than a filter by the types a token may read.
	SearchSystem:  {Perm: PermSearch, AllTypes: true},
	HistorySystem: {Perm: PermSearch, AllTypes: true},
	Create:        {Perm: PermCreate},
	// PUT may create a resource (update-as-create); SMART's "u" covers it
	// here, as v1's ".write" does.
	Update:     {Perm: PermUpdate},
	Delete:     {Perm: PermDelete},
	Batch:      {Perm: PermAll, AllTypes: true},
	Operation:  {Perm: PermAll},
	BulkSubmit: {Named: "bulk-submit"},
	Export:     {Perm: PermRead, AllTypes: true},
}

// Need returns what in needs. An interaction not in the table (a
// programming error) needs what nothing grants, so it fails closed.
func (in Interaction) Need() Requirement {
	if r, ok := requirements[in]; ok {
		return r
	}
	return Requirement{Named: "\x00unknown interaction " + string(in)}
}

// Known reports whether in is one of the interactions above.
func (in Interaction) Known() bool {
	_, ok := requirements[in]
	return ok
}

// namedScopes are the scopes that are not about resource types.
var namedScopes = map[string]bool{"bulk-submit": true}

// Scope is one parsed system-level scope.
type Scope struct {
	// Type is a resource type, or "*" for every type; "" for a named
	// scope.
	Type string
	Perm Perm
	// Named is the name of a named scope ("bulk-submit"), else "".
	Named string
}

// String spells the scope canonically (v1 suffixes where they fit).
func (s Scope) String() string {
	if s.Named != "" {
		return "system/" + s.Named
	}
	return "system/" + s.Type + "." + s.Perm.v1Suffix()
}

// ParseScope parses one SMART-style scope. Accepted forms:
//
//	system/<Type|*>.read | .write | .*       (SMART v1)
//	system/<Type|*>.<cruds>                  (SMART v2: a non-empty subset of c r u d s, in that order)
//	system/bulk-submit                       (named scope)
//
// patient/ and user/ scopes, v2 query suffixes (?category=…) and unknown
// names are rejected: this server has only system-level access control,
// and a scope it would silently ignore must not look granted.
func ParseScope(s string) (Scope, error) {
	rest, ok := strings.CutPrefix(s, "system/")
	if !ok {
		if strings.HasPrefix(s, "patient/") || strings.HasPrefix(s, "user/") {
			return Scope{}, fmt.Errorf("%w: scope %q: only system/ scopes are supported", ErrInvalidConfig, s)
		}
		return Scope{}, fmt.Errorf("%w: scope %q must start with system/", ErrInvalidConfig, s)
	}
	if namedScopes[rest] {
		return Scope{Named: rest}, nil
	}
	if strings.ContainsAny(rest, "?&=") {
		return Scope{}, fmt.Errorf("%w: scope %q: query-restricted scopes are not supported", ErrInvalidConfig, s)
	}
	typ, suffix, ok := strings.Cut(rest, ".")
	if !ok {
		return Scope{}, fmt.Errorf("%w: scope %q is neither system/<Type>.<permission> nor a known named scope (bulk-submit)", ErrInvalidConfig, s)
	}
	if typ != "*" && !fhir.IsResourceType(typ) {
		return Scope{}, fmt.Errorf("%w: scope %q: %q is not a FHIR R4 resource type or *", ErrInvalidConfig, s, typ)
	}
	perm, err := parsePerm(suffix)
	if err != nil {
		return Scope{}, fmt.Errorf("%w: scope %q: %v", ErrInvalidConfig, s, err)
	}
	return Scope{Type: typ, Perm: perm}, nil
}

func parsePerm(suffix string) (Perm, error) {
	switch suffix {
	case "read":
		return PermRead | PermSearch, nil
	case "write":
		return PermCreate | PermUpdate | PermDelete, nil
	case "*":
		return PermAll, nil
	}
	// SMART v2 letters: each at most once, in the order c r u d s.
	var p Perm
	next := 0
	for _, c := range suffix {
		i := strings.IndexRune("cruds", c)
		if i < next {
			return 0, fmt.Errorf("permission %q: want read, write, * or the letters of cruds in that order", suffix)
		}
		p |= 1 << i
		next = i + 1
	}
	if p == 0 {
		return 0, fmt.Errorf("permission is empty")
	}
	return p, nil
}

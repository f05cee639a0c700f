package bundle

import (
	"fmt"
)

// Conditional entries. NewPlan lets ifNoneExist, conditional PUT and
// DELETE (Type?criteria) and conditional references through without I/O:
// a batch dispatches each such entry as its single interaction, and a
// transaction's caller resolves them against the store before Commit
// (the criteria are the identifier index's business, not this
// package's): it settles each conditional entry's id, marks the entries
// that need no write NoOp, and calls Rewrite with what every reference
// becomes, then Replan.

// Rewrite replaces, in the resource of every POST and PUT entry that is
// not NoOp, each reference value (conditional or not) that is a key of
// refs by its value, and sets the resource's id to the entry's ID. The
// entries' CondRefs are cleared: every conditional reference must be a key
// of refs. It is
// called after conditional entries were resolved: their ids may differ
// from the ones NewPlan drew, which references to their fullUrls name.
func (p *Plan) Rewrite(refs map[string]string) error {
	for _, e := range p.Entries {
		if e.Err != nil || e.NoOp || e.Resource == nil {
			continue
		}
		if err := e.Rewrite(refs); err != nil {
			return &EntryError{Index: e.Index, FullURL: e.FullURL, Err: err}
		}
	}
	return nil
}

// Rewrite is Plan.Rewrite for one entry.
func (e *Entry) Rewrite(refs map[string]string) error {
	if e.Resource == nil {
		return nil
	}
	out, err := rewriteResource(e.Resource, mapSub(refs), e.ID)
	if err != nil {
		return err
	}
	e.Resource, e.CondRefs = out, nil
	return nil
}

// Replan checks a resolved transaction plan as NewPlan checks a plain
// one (each resource changed at most once) and groups its entries by
// phase again. A conditional entry left unresolved is an error.
func (p *Plan) Replan() error {
	changes := map[string]int{}
	for _, e := range p.Entries {
		if e.Phase() == PhaseRead || e.NoOp || e.Err != nil {
			continue
		}
		if e.Interaction == ConditionalUpdate || e.Interaction == ConditionalDelete {
			return &EntryError{Index: e.Index, FullURL: e.FullURL, Err: fmt.Errorf("%w: the conditional %s was not resolved", ErrInvalid, e.Method)}
		}
		ref := e.Reference()
		if j, dup := changes[ref]; dup {
			return &EntryError{Index: e.Index, FullURL: e.FullURL,
				Err: invalidf("Bundle.entry[%d] also changes %s (after resolving the conditional entries); a transaction may change a resource once", j, ref)}
		}
		changes[ref] = e.Index
	}
	p.phases = [numPhases][]*Entry{}
	for _, e := range p.Entries {
		if e.Err == nil {
			p.phases[e.Phase()] = append(p.phases[e.Phase()], e)
		}
	}
	return nil
}

// mapSub substitutes the values of a map, in references and conditional
// references alike.
type mapSub map[string]string

func (m mapSub) subst(v []byte) (string, bool, error) {
	r, ok := m[string(v)]
	return r, ok, nil
}

func (m mapSub) conditional(string) error { return nil }

package server

// Conditional entries of Bundles. A batch entry with ifNoneExist or a
// conditional URL is dispatched to the conditional handlers like any
// other entry; its conditional references are resolved first. A
// transaction resolves all of them before its journal is written
// (resolveTransaction), so the journal names plain writes only.

import (
	"context"
	"fmt"
	"net/http"

	"fhirbucket/bundle"
	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/index"
)

// hasConditional reports whether an entry needs the index.
func hasConditional(e *bundle.Entry) bool {
	return e.IfNoneExist != "" || len(e.CondRefs) > 0 ||
		e.Interaction == bundle.ConditionalUpdate || e.Interaction == bundle.ConditionalDelete
}

// errNoIndex answers conditional entries on a server without the index.
var errNoIndex = fmt.Errorf("%w: conditional entries (ifNoneExist, conditional PUT and DELETE, conditional references) are not supported: this server runs without the identifier index; nothing was written", fhirstore.ErrNotSupported)

// entryFail is an entry's failure, naming it.
func entryFail(e *bundle.Entry, format string, args ...any) error {
	return &bundle.EntryError{Index: e.Index, FullURL: e.FullURL, Err: fmt.Errorf(format, args...)}
}

// criteriaOf parses an entry's criteria.
func criteriaOf(e *bundle.Entry, query string) (index.Criteria, error) {
	c, err := index.ParseCriteria(query)
	if err != nil {
		return c, &bundle.EntryError{Index: e.Index, FullURL: e.FullURL, Err: err}
	}
	return c, nil
}

// resolveRefs resolves the conditional references of e into refs (those
// already there are not looked up again): each must match exactly one
// resource, else the entry fails with 412.
func (s *Server) resolveRefs(ctx context.Context, tenant string, e *bundle.Entry, refs map[string]string) error {
	for _, cr := range e.CondRefs {
		if _, done := refs[cr.Ref]; done {
			continue
		}
		c, err := criteriaOf(e, cr.Query)
		if err != nil {
			return err
		}
		matches, err := s.index.Search(ctx, tenant, cr.Type, c)
		if err != nil {
			return &bundle.EntryError{Index: e.Index, FullURL: e.FullURL, Err: err}
		}
		if len(matches) != 1 {
			return entryFail(e, "%w: the conditional reference %q matches %d %s resources; it must match exactly one",
				fhirstore.ErrPreconditionFailed, cr.Ref, len(matches), cr.Type)
		}
		refs[cr.Ref] = cr.Type + "/" + matches[0].ID
	}
	return nil
}

// resolveBatchEntry resolves the conditional references of a batch entry
// (its conditional interaction is the handler's).
func (s *Server) resolveBatchEntry(ctx context.Context, tenant string, e *bundle.Entry) error {
	if len(e.CondRefs) == 0 {
		return nil
	}
	if s.index == nil {
		return errNoIndex
	}
	refs := map[string]string{}
	if err := s.resolveRefs(ctx, tenant, e, refs); err != nil {
		return err
	}
	id := e.ID
	if e.Interaction == bundle.ConditionalUpdate {
		// The placeholder id stays out of a conditional update's body.
		_, id, _ = fhir.Peek(e.Resource)
	}
	saved := e.ID
	e.ID = id
	err := e.Rewrite(refs)
	e.ID = saved
	return err
}

// resolveTransaction resolves the conditional entries of a transaction
// plan in place: conditional references become Type/id (exactly one
// match, else 412 naming the entry); a conditional DELETE deletes its one
// match or is a no-op; a conditional PUT updates its one match or creates;
// an ifNoneExist with one match is a no-op answered with it, with none a
// POST. More than one match fails the transaction with 412 naming the
// entry. The creates hold the identifier claims of the index (the same a
// single conditional create takes) until the caller ends them: Release
// once committed, Abandon otherwise. Nil Claims when there was nothing to
// resolve.
func (s *Server) resolveTransaction(ctx context.Context, tenant string, plan *bundle.Plan) (*index.Claims, error) {
	var conditional []*bundle.Entry
	for _, e := range plan.Entries {
		if hasConditional(e) {
			conditional = append(conditional, e)
		}
	}
	if len(conditional) == 0 {
		return nil, nil
	}
	if s.index == nil {
		e := conditional[0]
		return nil, &bundle.EntryError{Index: e.Index, FullURL: e.FullURL, Err: errNoIndex}
	}
	refs := map[string]string{}
	var creates []*bundle.Entry
	var reqs []index.CreateClaim
	for _, e := range conditional {
		if err := s.resolveRefs(ctx, tenant, e, refs); err != nil {
			return nil, err
		}
		switch {
		case e.Interaction == bundle.ConditionalDelete:
			c, err := criteriaOf(e, e.Query.Encode())
			if err != nil {
				return nil, err
			}
			matches, err := s.index.Search(ctx, tenant, e.Type, c)
			if err != nil {
				return nil, &bundle.EntryError{Index: e.Index, FullURL: e.FullURL, Err: err}
			}
			switch len(matches) {
			case 0:
				e.NoOp = true
			case 1:
				e.ID, e.Interaction = matches[0].ID, bundle.Delete
			default:
				return nil, entryFail(e, "%w: %d %s resources match the conditional delete; it must match at most one", fhirstore.ErrPreconditionFailed, len(matches), e.Type)
			}
		case e.Interaction == bundle.ConditionalUpdate:
			c, err := criteriaOf(e, e.Query.Encode())
			if err != nil {
				return nil, err
			}
			id := e.ID
			if _, bodyID, _ := fhir.Peek(e.Resource); bodyID != "" {
				id = bodyID
			}
			creates = append(creates, e)
			reqs = append(reqs, index.CreateClaim{Type: e.Type, Criteria: c, ID: id})
		case e.IfNoneExist != "":
			c, err := criteriaOf(e, e.IfNoneExist)
			if err != nil {
				return nil, err
			}
			creates = append(creates, e)
			reqs = append(reqs, index.CreateClaim{Type: e.Type, Criteria: c, ID: e.ID})
		}
	}
	var claims *index.Claims
	if len(reqs) > 0 {
		results, cl, err := s.index.ClaimCreates(ctx, tenant, reqs)
		if err != nil {
			return nil, err
		}
		claims = cl
		if err := resolveCreates(creates, results, refs); err != nil {
			claims.Release(ctx) // nothing was written
			return nil, err
		}
	}
	if err := plan.Rewrite(refs); err != nil {
		claims.Release(ctx)
		return nil, err
	}
	if err := plan.Replan(); err != nil {
		claims.Release(ctx)
		return nil, err
	}
	return claims, nil
}

// resolveCreates applies the outcome of the claims to the conditional
// creates and updates, recording in refs what references to their
// planned ids become.
func resolveCreates(creates []*bundle.Entry, results []index.ClaimResult, refs map[string]string) error {
	for i, e := range creates {
		r := results[i]
		planned := e.Type + "/" + e.ID
		if len(r.Matches) > 1 {
			return entryFail(e, "%w: %d %s resources match the criteria of the conditional %s; they must match at most one",
				fhirstore.ErrPreconditionFailed, len(r.Matches), e.Type, map[bool]string{true: "update", false: "create"}[e.Method == http.MethodPut])
		}
		id := r.ID
		if len(r.Matches) == 1 {
			id = r.Matches[0].ID
		}
		if e.Method == http.MethodPut {
			if _, bodyID, _ := fhir.Peek(e.Resource); bodyID != "" && bodyID != id {
				return entryFail(e, "%w: the resource id %q differs from the id %q of the resource the criteria match", fhirstore.ErrInvalid, bodyID, id)
			}
			e.Interaction = bundle.Update
		} else if len(r.Matches) == 1 {
			e.NoOp, e.Existing = true, r.Matches[0]
		}
		e.IfNoneExist = ""
		if id != e.ID {
			refs[planned] = e.Type + "/" + id
			e.ID = id
		}
	}
	return nil
}

package index

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"slices"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/fhirstore"
	"fhirbucket/internal/layout"
	"fhirbucket/lease"
	"fhirbucket/storage"
)

// Conditional interactions. A conditional create that finds no match
// takes the claim of every identifier value it names (a lease document,
// layout.IdentifierClaimKey) and searches again under it before it
// writes, so of concurrent conditional creates of one identifier exactly
// one writes. The claim's state names the id the holder creates; a
// holder released its claim names the next id to use. Whoever takes a
// claim over after its holder stopped creates that same id, so a stopped
// holder's half-done create and the new one are the same resource: the
// version-1 claim of fhirstore lets only one of them write it, and the
// other answers with it.

// maxRetries bounds how often a conditional update or delete that lost a
// race against another writer of the matched resource starts again.
const maxRetries = 8

// claimState is the state of a claim document.
type claimState struct {
	// ID is the id the holder creates (the next one when released).
	ID string `json:"id"`
}

func encodeClaim(id string) json.RawMessage {
	data, _ := json.Marshal(claimState{ID: id})
	return data
}

// errClaimBusy: a claim is held by another request (or changed under us).
var errClaimBusy = errors.New("index: claim busy")

// claim is one claim this request holds.
type claim struct {
	doc lease.Doc
	id  string
	// expired: taken over from a holder whose lease ran out, which may
	// have created id half way.
	expired bool
}

// CreateIfNoneExist is conditional create (POST with If-None-Exist): no
// match -> body is created with a server id (created true); one match ->
// that resource, nothing written; several -> ErrPreconditionFailed.
// Concurrent calls with criteria naming the same identifier, in any
// number of processes, create at most one resource.
//
// Cost when the resource exists: 1 LIST + 1 GET. When it does not: 2
// LISTs, 1 PUT (or 1 GET + 1 PUT) per claimed value, the create (4 PUTs +
// 1 per identifier), 1 PUT per claim to release it.
func (ix *Index) CreateIfNoneExist(ctx context.Context, tenant, typ string, c Criteria, body []byte) (*fhirstore.Resource, bool, error) {
	if err := ix.validate(body, typ); err != nil {
		return nil, false, err
	}
	res, matches, err := ix.createClaimed(ctx, tenant, typ, c, body, "")
	if err != nil {
		return nil, false, err
	}
	if res != nil {
		return res, true, nil
	}
	return one(typ, c, matches)
}

// one returns the only match, or ErrPreconditionFailed for several.
func one(typ string, c Criteria, matches []*fhirstore.Resource) (*fhirstore.Resource, bool, error) {
	if len(matches) > 1 {
		return nil, false, fmt.Errorf("%w: %d %s resources match %s; the criteria must match at most one", fhirstore.ErrPreconditionFailed, len(matches), typ, describe(c))
	}
	return matches[0], false, nil
}

func describe(c Criteria) string {
	var b bytes.Buffer
	b.WriteString("identifier=")
	for i, t := range c.Tokens {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(t.String())
	}
	return b.String()
}

// ConditionalUpdate is PUT [type]?criteria: no match -> create (with the
// body's id when it has one, as update-as-create, else a server id);
// one match -> update it (a body id naming another resource ->
// ErrInvalid), honouring ifMatch; several -> ErrPreconditionFailed.
// created reports a new resource.
func (ix *Index) ConditionalUpdate(ctx context.Context, tenant, typ string, c Criteria, body []byte, ifMatch *fhirstore.Match) (*fhirstore.Resource, bool, error) {
	if err := ix.validate(body, typ); err != nil {
		return nil, false, err
	}
	_, bodyID, _ := fhir.Peek(body)
	for attempt := 0; ; attempt++ {
		matches, err := ix.Search(ctx, tenant, typ, c)
		if err != nil {
			return nil, false, err
		}
		switch {
		case len(matches) > 1:
			_, _, err := one(typ, c, matches)
			return nil, false, err
		case len(matches) == 0 && ifMatch != nil:
			return nil, false, fmt.Errorf("%w: If-Match %s: no %s matches %s", fhirstore.ErrPreconditionFailed, ifMatch, typ, describe(c))
		case len(matches) == 0:
			res, matches, err := ix.createClaimed(ctx, tenant, typ, c, body, bodyID)
			if err != nil || res != nil {
				return res, res != nil && res.Version == 1, err
			}
			if len(matches) > 1 {
				_, _, err := one(typ, c, matches)
				return nil, false, err
			}
			continue // a match appeared: update it
		}
		m := matches[0]
		if bodyID != "" && bodyID != m.ID {
			return nil, false, fmt.Errorf("%w: the resource id %q differs from the id %q of the resource the criteria match", fhirstore.ErrInvalid, bodyID, m.ID)
		}
		content, err := withID(body, m.ID)
		if err != nil {
			return nil, false, err
		}
		res, _, err := ix.store.Apply(ctx, tenant, fhirstore.Change{Type: typ, ID: m.ID, Method: fhirstore.MethodPut,
			Content: content, Base: m.Version, IfMatch: ifMatch, Validated: true})
		if errors.Is(err, fhirstore.ErrPreconditionFailed) && ifMatch == nil && attempt < maxRetries {
			continue // another writer got there first: look again
		}
		return res, false, err
	}
}

// ConditionalDelete is DELETE [type]?criteria (conditionalDelete
// single): no match -> nothing (nil, nil); one -> delete it (the
// tombstone is returned); several -> ErrPreconditionFailed.
func (ix *Index) ConditionalDelete(ctx context.Context, tenant, typ string, c Criteria, ifMatch *fhirstore.Match) (*fhirstore.Resource, error) {
	for attempt := 0; ; attempt++ {
		matches, err := ix.Search(ctx, tenant, typ, c)
		if err != nil {
			return nil, err
		}
		switch {
		case len(matches) == 0:
			return nil, nil
		case len(matches) > 1:
			_, _, err := one(typ, c, matches)
			return nil, err
		}
		m := matches[0]
		res, _, err := ix.store.Apply(ctx, tenant, fhirstore.Change{Type: typ, ID: m.ID, Method: fhirstore.MethodDelete,
			Base: m.Version, IfMatch: ifMatch})
		if errors.Is(err, fhirstore.ErrPreconditionFailed) && ifMatch == nil && attempt < maxRetries {
			continue
		}
		return res, err
	}
}

// createClaimed searches, and when nothing matches takes the claims of
// c's values, searches again and creates body: as the claim's id (POST),
// or as bodyID when set (PUT, update-as-create). It returns the resource
// written, or the matches found (nothing written).
func (ix *Index) createClaimed(ctx context.Context, tenant, typ string, c Criteria, body []byte, bodyID string) (*fhirstore.Resource, []*fhirstore.Resource, error) {
	b, err := ix.store.TenantBucket(tenant)
	if err != nil {
		return nil, nil, err
	}
	m, err := ix.claimManager(b)
	if err != nil {
		return nil, nil, err
	}
	keys := claimKeys(typ, c)
	deadline := time.Now().Add(ix.wait)
	for attempt := 0; ; attempt++ {
		matches, err := ix.Search(ctx, tenant, typ, c)
		if err != nil || len(matches) > 0 {
			return nil, matches, err
		}
		claims, err := ix.acquire(ctx, m, keys)
		if errors.Is(err, errClaimBusy) {
			if time.Now().After(deadline) {
				return nil, nil, fmt.Errorf("%w: %s of %s was held for more than %v; retry", ErrBusy, describe(c), typ, ix.wait)
			}
			if err := sleepJitter(ctx, attempt); err != nil {
				return nil, nil, err
			}
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		res, matches, err := ix.createHeld(ctx, tenant, typ, c, body, bodyID, m, claims)
		if err != nil {
			// The claims stay held (and expire): whoever takes them over
			// settles their id first.
			return nil, nil, err
		}
		ix.release(ctx, m, claims)
		return res, matches, nil
	}
}

// createHeld is createClaimed's work under the claims.
func (ix *Index) createHeld(ctx context.Context, tenant, typ string, c Criteria, body []byte, bodyID string, m *lease.Manager, claims []claim) (*fhirstore.Resource, []*fhirstore.Resource, error) {
	// A stopped holder may have created its id without (all of) its index
	// entries: such a resource is a match too.
	for _, cl := range claims {
		if !cl.expired {
			continue
		}
		if res, err := ix.settle(ctx, tenant, typ, cl.id, c); err != nil || res != nil {
			return nil, []*fhirstore.Resource{res}, err
		}
	}
	matches, err := ix.Search(ctx, tenant, typ, c)
	if err != nil || len(matches) > 0 {
		return nil, matches, err
	}
	id, method := claims[0].id, fhirstore.MethodPost
	if bodyID != "" {
		// Say in the claim which id is being written, so that a takeover
		// settles this one.
		id, method = bodyID, fhirstore.MethodPut
		for i := range claims {
			d, err := m.Update(ctx, claims[i].doc, encodeClaim(bodyID))
			if err != nil {
				return nil, nil, fmt.Errorf("index: recording the id in the claim: %w", err)
			}
			claims[i].doc, claims[i].id = d, bodyID
		}
	}
	ch := fhirstore.Change{Type: typ, ID: id, Method: method, Content: body, Validated: true}
	if method == fhirstore.MethodPut {
		ch.AnyBase = true
		if ch.Content, err = withID(body, id); err != nil {
			return nil, nil, err
		}
	}
	res, _, err := ix.store.Apply(ctx, tenant, ch)
	if errors.Is(err, fhirstore.ErrPreconditionFailed) && method == fhirstore.MethodPost {
		// The id exists: the claim's earlier holder created it (and the
		// create rolled it forward). It is the answer if it matches.
		if res, err := ix.settle(ctx, tenant, typ, id, c); err != nil || res != nil {
			return nil, []*fhirstore.Resource{res}, err
		}
		res, err = ix.store.Create(ctx, tenant, typ, body)
		return res, nil, err
	}
	return res, nil, err
}

// settle reads id and, when it is current and matches c, writes its
// index entries again (its writer may have stopped before them) and
// returns it.
func (ix *Index) settle(ctx context.Context, tenant, typ, id string, c Criteria) (*fhirstore.Resource, error) {
	res, err := ix.store.Read(ctx, tenant, typ, id)
	switch {
	case errors.Is(err, fhirstore.ErrNotFound), errors.Is(err, fhirstore.ErrGone):
		return nil, nil
	case err != nil:
		return nil, err
	case !c.Match(res.Content):
		return nil, nil
	}
	if err := ix.putEntries(ctx, tenant, res); err != nil {
		return nil, err
	}
	return res, nil
}

// putEntries writes the index entries of res.
func (ix *Index) putEntries(ctx context.Context, tenant string, res *fhirstore.Resource) error {
	b, err := ix.store.TenantBucket(tenant)
	if err != nil {
		return err
	}
	for _, k := range entryKeys(res.Type, res.ID, res.Version, Identifiers(res.Content)) {
		if _, err := b.Put(ctx, k, bytes.NewReader([]byte("{}")), storage.PutOptions{ContentType: "application/json", Size: 2}); err != nil {
			return fmt.Errorf("index: writing %s: %w", k, err)
		}
	}
	return nil
}

// claimKeys are the claim keys of c's values, sorted (every request takes
// them in the same order).
func claimKeys(typ string, c Criteria) []string {
	var out []string
	for _, t := range c.Tokens {
		k := layout.IdentifierClaimKey(typ, layout.IdentifierValueHash(t.Value))
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// acquire takes every claim of keys: creating it (If-None-Match) or
// taking over a released or expired one. When one is held by another
// request it gives back those it took and fails with errClaimBusy.
func (ix *Index) acquire(ctx context.Context, m *lease.Manager, keys []string) ([]claim, error) {
	var out []claim
	fail := func(err error) ([]claim, error) {
		ix.release(ctx, m, out)
		return nil, err
	}
	for _, k := range keys {
		id := newID()
		d, err := m.Create(ctx, k, encodeClaim(id))
		if err == nil {
			out = append(out, claim{doc: d, id: id})
			continue
		}
		if !errors.Is(err, lease.ErrExists) {
			return fail(fmt.Errorf("index: claiming %s: %w", k, err))
		}
		d, err = m.Read(ctx, k)
		if errors.Is(err, storage.ErrNotExist) {
			return fail(errClaimBusy)
		}
		if err != nil {
			return fail(fmt.Errorf("index: reading claim %s: %w", k, err))
		}
		status := m.Status(d.Lease)
		if status == lease.Held {
			return fail(errClaimBusy)
		}
		d, err = m.TakeOver(ctx, d)
		if errors.Is(err, lease.ErrLost) || errors.Is(err, lease.ErrHeld) {
			return fail(errClaimBusy)
		}
		if err != nil {
			return fail(fmt.Errorf("index: taking over claim %s: %w", k, err))
		}
		var st claimState
		if json.Unmarshal(d.State, &st) != nil || !fhir.ValidID(st.ID) {
			st.ID = newID()
		}
		out = append(out, claim{doc: d, id: st.ID, expired: status == lease.Expired})
	}
	return out, nil
}

// release gives the claims back, each naming a fresh id for its next
// holder. A failure leaves the claim to expire.
func (ix *Index) release(ctx context.Context, m *lease.Manager, claims []claim) {
	for _, cl := range claims {
		if _, err := m.Release(context.WithoutCancel(ctx), cl.doc, encodeClaim(newID())); err != nil {
			ix.log.Debug("index: releasing a claim", "key", cl.doc.Key, "err", err)
		}
	}
}

// validate checks body with the store's rules before anything is claimed.
func (ix *Index) validate(body []byte, typ string) error {
	if ix.validator == nil {
		return nil
	}
	info, err := ix.validator.Validate(body)
	if err != nil {
		if errors.Is(err, fhir.ErrTooLarge) {
			return err
		}
		return fmt.Errorf("%w: %w", fhirstore.ErrInvalid, err)
	}
	if info.Type != typ {
		return fmt.Errorf("%w: resourceType %q does not match the resource type %q of the request", fhirstore.ErrInvalid, info.Type, typ)
	}
	return nil
}

// withID returns body with its id set to id.
func withID(body []byte, id string) ([]byte, error) {
	out, err := fhir.SetMeta(body, id, "1", time.Now())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", fhirstore.ErrInvalid, err)
	}
	return out, nil
}

// newID is a server-assigned id as fhirstore draws them: 32 hex digits.
func newID() string { return randomHex(16) }

// sleepJitter waits a random time up to min(5ms * 2^attempt, 250ms).
func sleepJitter(ctx context.Context, attempt int) error {
	limit := min(5*time.Millisecond<<min(attempt, 6), 250*time.Millisecond)
	t := time.NewTimer(time.Duration(mrand.Int64N(int64(limit))) + time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

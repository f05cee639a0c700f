package index

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"fhirbucket/fhirstore"
	"fhirbucket/lease"
)

// Conditional creates inside a transaction. The transaction takes the
// same claims as a single conditional create (layout.IdentifierClaimKey)
// before its journal is written, records in each the id it will create,
// and keeps them renewed until the transaction has committed. A request
// that takes a claim over after its holder stopped settles the recorded
// id first: when the transaction committed, that id is the match; while
// its journal is open, the version-1 claim of that id makes the taker's
// create of the same id wait for the journal's outcome (fhirstore), so a
// transaction and a single conditional create, or two transactions, never
// both create a resource for one identifier.

// CreateClaim is one conditional create of a transaction.
type CreateClaim struct {
	Type     string
	Criteria Criteria
	// ID is the id the transaction means to create when nothing matches.
	ID string
}

// ClaimResult is the outcome of one CreateClaim.
type ClaimResult struct {
	// Matches are the resources the criteria match; empty: none, and the
	// claims are held.
	Matches []*fhirstore.Resource
	// ID is the id to create when nothing matches: CreateClaim.ID, or the
	// id a stopped holder of the claim had recorded (it may have created
	// it half way, so only that id may be created).
	ID string
}

// Claims are the claims a transaction holds for its conditional creates.
type Claims struct {
	holders []*lease.Holder
	log     func(msg string, args ...any)
}

// Release gives the claims back once the transaction committed: the
// resources it created are visible and indexed, so a later conditional
// create finds them.
func (c *Claims) Release(ctx context.Context) {
	if c == nil {
		return
	}
	for _, h := range c.holders {
		if _, err := h.Release(context.WithoutCancel(ctx), encodeClaim(newID())); err != nil {
			c.log("index: releasing a transaction's claim", "err", err)
		}
	}
}

// Abandon stops renewing the claims without releasing them, for a
// transaction whose outcome is not a commit (or is unknown): they expire
// after the claim TTL, and whoever takes one over settles the recorded
// id, so it never gets created twice.
func (c *Claims) Abandon() {
	if c == nil {
		return
	}
	for _, h := range c.holders {
		_ = h.Stop()
	}
}

// ClaimCreates resolves the conditional creates of a transaction: for
// each request the resources its criteria match, or, when none, the id to
// create, with its claims held and naming that id. Two requests naming the same
// identifier value fail with fhirstore.ErrInvalid. The caller ends the
// returned Claims with Release (committed) or Abandon.
func (ix *Index) ClaimCreates(ctx context.Context, tenant string, reqs []CreateClaim) ([]ClaimResult, *Claims, error) {
	out := make([][]*fhirstore.Resource, len(reqs))
	ids := make([]string, len(reqs))
	for i, r := range reqs {
		ids[i] = r.ID
	}
	result := func() []ClaimResult {
		res := make([]ClaimResult, len(reqs))
		for i := range reqs {
			res[i] = ClaimResult{Matches: out[i], ID: ids[i]}
		}
		return res
	}
	keys := make([][]string, len(reqs))
	owner := map[string]int{}
	for i, r := range reqs {
		keys[i] = claimKeys(r.Type, r.Criteria)
		for _, k := range keys[i] {
			if j, dup := owner[k]; dup {
				return nil, nil, fmt.Errorf("%w: conditional creates %d and %d of the transaction name the same identifier (%s of %s); a transaction creates it once",
					fhirstore.ErrInvalid, j, i, describe(r.Criteria), r.Type)
			}
			owner[k] = i
		}
	}
	search := func(pending []int) error {
		return forEach(ctx, ix.par, len(pending), func(ctx context.Context, n int) error {
			i := pending[n]
			m, err := ix.Search(ctx, tenant, reqs[i].Type, reqs[i].Criteria)
			out[i] = m
			return err
		})
	}
	all := make([]int, len(reqs))
	for i := range all {
		all[i] = i
	}
	if err := search(all); err != nil {
		return nil, nil, err
	}
	b, err := ix.store.TenantBucket(tenant)
	if err != nil {
		return nil, nil, err
	}
	m, err := ix.claimManager(b)
	if err != nil {
		return nil, nil, err
	}
	deadline := time.Now().Add(ix.wait)
	for attempt := 0; ; attempt++ {
		var pending []int
		var want []string
		for i := range reqs {
			if len(out[i]) == 0 {
				pending = append(pending, i)
				want = append(want, keys[i]...)
			}
		}
		if len(pending) == 0 {
			return result(), &Claims{log: ix.log.Debug}, nil
		}
		slices.Sort(want)
		claims, err := ix.acquire(ctx, m, want)
		if errors.Is(err, errClaimBusy) {
			if time.Now().After(deadline) {
				return nil, nil, fmt.Errorf("%w: an identifier of the transaction's conditional creates was held for more than %v; retry", ErrBusy, ix.wait)
			}
			if err := sleepJitter(ctx, attempt); err != nil {
				return nil, nil, err
			}
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		held, err := ix.claimHeld(ctx, tenant, m, reqs, owner, pending, claims, out, ids, search)
		if err != nil {
			// Claims taken over may name an id being settled: leave them
			// to expire rather than release them with a new id.
			return nil, nil, err
		}
		return result(), &Claims{holders: held, log: ix.log.Debug}, nil
	}
}

// claimHeld is ClaimCreates' work under the claims: settle the ids of
// stopped holders, search again, then record each pending request's id
// in its claims and keep those renewed. Claims of requests that found a
// match are released.
func (ix *Index) claimHeld(ctx context.Context, tenant string, m *lease.Manager, reqs []CreateClaim, owner map[string]int,
	pending []int, claims []claim, out [][]*fhirstore.Resource, ids []string, search func([]int) error) ([]*lease.Holder, error) {
	settled := map[int]bool{}
	for _, cl := range claims {
		if !cl.expired {
			continue
		}
		i := owner[cl.doc.Key]
		if !settled[i] {
			// As a single conditional create: the first stopped holder's id.
			settled[i], ids[i] = true, cl.id
		}
		res, err := ix.settle(ctx, tenant, reqs[i].Type, cl.id, reqs[i].Criteria)
		if err != nil {
			return nil, err
		}
		if res != nil {
			out[i] = []*fhirstore.Resource{res}
		}
	}
	var still []int
	for _, i := range pending {
		if len(out[i]) == 0 {
			still = append(still, i)
		}
	}
	if err := search(still); err != nil {
		return nil, err
	}
	var holders []*lease.Holder
	var done []claim
	for _, cl := range claims {
		i := owner[cl.doc.Key]
		if len(out[i]) > 0 {
			done = append(done, cl)
			continue
		}
		d, err := m.Update(ctx, cl.doc, encodeClaim(ids[i]))
		if err != nil {
			(&Claims{holders: holders}).Abandon()
			return nil, fmt.Errorf("index: recording the id in the claim: %w", err)
		}
		h, err := m.Keep(context.WithoutCancel(ctx), d)
		if err != nil {
			(&Claims{holders: holders}).Abandon()
			return nil, fmt.Errorf("index: keeping the claim: %w", err)
		}
		holders = append(holders, h)
	}
	ix.release(ctx, m, done)
	return holders, nil
}

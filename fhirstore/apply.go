package fhirstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"fhirbucket/fhir"
)

// Change is one write Apply makes: the next version of one resource. New
// fields may be added; the zero value of each keeps today's behaviour.
type Change struct {
	Type, ID string
	// Method is MethodPost (create version 1; Base must be 0 and AnyBase
	// false), MethodPut (new content) or MethodDelete (a tombstone).
	Method Method
	// Content is the resource JSON of a POST or PUT. Apply validates it:
	// its resourceType must be Type and, for a PUT, its id must be ID (a
	// POST's id is replaced). id, meta.versionId and meta.lastUpdated are
	// set by Apply. Ignored for a DELETE: a tombstone keeps the content of
	// the version it deletes.
	Content []byte
	// Base is the version this change replaces: Apply writes Base+1, and
	// fails with ErrPreconditionFailed when the current version is not
	// Base. Base 0: the resource must have no version at all (a deleted
	// resource has one: its tombstone's).
	Base int
	// AnyBase builds on whatever version is current instead of Base
	// (which must then be 0), and retries when another writer takes the
	// version first, as unconditional updates and deletes do.
	AnyBase bool
	// IfMatch, when set, must also hold for the visible current version
	// (see Match).
	IfMatch *Match
	// Tx is the id of the transaction the change belongs to, recorded in
	// the version; readers do not see the version until the transaction's
	// journal says committed (see tx.go). "" for a plain write.
	Tx string
	// Head, when set, is what the caller read with Store.Head for this
	// change (its Base must be Base): the first attempt starts from it
	// instead of reading current.json again, saving a GET.
	Head *Head
	// Validated says the caller already checked Content with this store's
	// validator (a transaction plan does), so Apply checks only the
	// resourceType and id.
	Validated bool
}

// Apply writes c as the next version of c.Type/c.ID, with the write
// protocol of the package doc, and returns the version written. created
// is true when it is version 1.
//
// Guarantees. With AnyBase false, Apply writes exactly version Base+1 on
// top of Base, or nothing: when another writer gets there first (Base is
// no longer current, or another writer claims Base+1 while Apply runs)
// it fails with ErrPreconditionFailed and never overwrites or rebuilds on
// that writer's version; a version claimed by a writer that stopped half
// way is completed (rolled forward) before the 412. With AnyBase, lost
// races are retried up to Config.WriteRetries times, then
// ErrVersionConflict. IfMatch not holding -> ErrPreconditionFailed. Once
// Apply has returned a version, that version is durable, current.json
// has moved to it (or past it) and both its history events exist. When
// Apply fails after the claim the version is committed all the same
// (the error says so) and the next write or a repair completes it: a
// caller that undoes its changes reverts such a version too (Revert
// completes it first).
//
// A DELETE of a resource that does not exist or is deleted writes nothing
// and returns a nil Resource (after the Base and IfMatch checks). An
// invalid change (method, Base, content) -> ErrInvalid before any I/O.
//
// Cost: a POST or PUT with Base 0 is exactly 4 PUTs (claiming version 1
// proves there was none, so nothing is read); anything else 1 GET + 4 PUTs
// (1 GET when a DELETE has nothing to delete).
func (s *Store) Apply(ctx context.Context, tenant string, c Change) (res *Resource, created bool, err error) {
	sc, err := s.checkTarget(tenant, c.Type, c.ID, true)
	if err != nil {
		return nil, false, err
	}
	if err := s.checkChange(c); err != nil {
		return nil, false, err
	}
	return s.apply(ctx, sc, c, false)
}

// checkChange checks everything of c that needs no I/O.
func (s *Store) checkChange(c Change) error {
	switch {
	case c.Method != MethodPost && c.Method != MethodPut && c.Method != MethodDelete:
		return fmt.Errorf("%w: method %q is not POST, PUT or DELETE", ErrInvalid, c.Method)
	case c.Base < 0:
		return fmt.Errorf("%w: base version %d", ErrInvalid, c.Base)
	case c.AnyBase && c.Base != 0:
		return fmt.Errorf("%w: a change names base version %d and any base", ErrInvalid, c.Base)
	case c.Method == MethodPost && (c.Base != 0 || c.AnyBase):
		return fmt.Errorf("%w: a POST creates version 1 and so has base version 0", ErrInvalid)
	case c.Method == MethodDelete:
		return nil
	}
	var info fhir.Info
	var err error
	if c.Validated {
		info.Type, info.ID, err = fhir.Peek(c.Content)
		if err == nil && info.Type != c.Type {
			err = fmt.Errorf("resourceType %q does not match the resource type %q of the request", info.Type, c.Type)
		}
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	} else {
		info, err = s.validate(c.Content, c.Type)
	}
	if err != nil || c.Method == MethodPost {
		return err
	}
	if info.ID == "" {
		return fmt.Errorf("%w: the resource has no id; an update must carry id %q", ErrInvalid, c.ID)
	}
	if info.ID != c.ID {
		return fmt.Errorf("%w: the resource id %q does not match the id %q of the request", ErrInvalid, info.ID, c.ID)
	}
	return nil
}

// apply writes a checked change (see Apply); fresh marks a server-assigned
// id just drawn (see writeReq).
func (s *Store) apply(ctx context.Context, sc scope, c Change, fresh bool) (*Resource, bool, error) {
	typ, id := c.Type, c.ID
	w := writeReq{typ: typ, id: id, fresh: fresh, base: c.Base, anyBase: c.AnyBase, ifMatch: c.IfMatch}
	switch {
	case c.Head != nil && c.Head.cur != nil && c.Head.Base == c.Base && !c.AnyBase:
		w.known = c.Head.cur
	case !c.AnyBase && c.Base == 0 && c.Method != MethodDelete:
		w.known, w.assumed = &current{}, true
	}
	created := false
	switch c.Method {
	case MethodPost, MethodPut:
		w.build = func(cur *Resource, v int, lu time.Time) (*Resource, error) {
			createdAt := lu
			created = cur == nil
			if cur != nil {
				createdAt = cur.CreatedAt
			}
			content, err := fhir.SetMeta(c.Content, id, strconv.Itoa(v), lu)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
			}
			return &Resource{Type: typ, ID: id, Tenant: sc.tenant, Content: content, CreatedAt: createdAt, LastModified: lu, Method: c.Method, Tx: c.Tx}, nil
		}
	case MethodDelete:
		w.build = func(cur *Resource, _ int, lu time.Time) (*Resource, error) {
			if cur == nil || cur.Deleted() {
				return nil, nil
			}
			return &Resource{Type: typ, ID: id, Tenant: sc.tenant, Content: cur.Content, CreatedAt: cur.CreatedAt,
				LastModified: lu, DeletedAt: &lu, Method: MethodDelete, Tx: c.Tx}, nil
		}
	}
	res, err := s.write(ctx, sc, w)
	if err != nil || res == nil {
		return nil, false, err
	}
	return res, created, nil
}

// Current returns the current version of typ/id, a tombstone included,
// and (nil, nil) when the resource does not exist: what a caller planning
// Apply calls with Base = its Version (0 when nil). Like Read it returns
// current.json, so a version claimed by a writer that has not finished is
// not returned (Apply with that Base completes it and fails). Cost: 1 GET.
func (s *Store) Current(ctx context.Context, tenant, typ, id string) (*Resource, error) {
	sc, err := s.checkTarget(tenant, typ, id, true)
	if err != nil {
		return nil, err
	}
	cur, err := s.readCurrent(ctx, sc, typ, id)
	if err != nil {
		return nil, err
	}
	return cur.res, nil
}

// Revert undoes version written of typ/id, which the caller wrote with
// Apply: while written is current it writes written+1 with the state of
// written-1, that is its content (method PUT), or a tombstone keeping
// written's content when written-1 does not exist or is a tombstone. The
// write is conditional on written being current (Apply with Base written).
//
// Revert never undoes a later writer: when a version after written exists
// that is not its revert, it fails with ErrPreconditionFailed. It is
// idempotent: when written+1 already is a revert of written (by an earlier
// Revert, or by any write with the same effect: written-1's content, or a
// tombstone where the revert writes one), it returns written+1 and writes
// nothing, also when later versions follow. It recognises a revert by
// its effect because the envelope does not record why a version was
// written. When written is claimed but not yet current (its writer
// stopped half way), Revert first completes it and then reverts it. When
// written was never written -> ErrNotFound.
//
// Cost: 2 GETs (current.json and version written-1, in parallel) + 4 PUTs;
// 1 GET + 4 PUTs for written 1. Already reverted: 3 GETs (2 for written 1).
func (s *Store) Revert(ctx context.Context, tenant, typ, id string, written int) (*Resource, error) {
	sc, err := s.checkTarget(tenant, typ, id, true)
	if err != nil {
		return nil, err
	}
	if written < 1 {
		return nil, fmt.Errorf("%w: version %d", ErrInvalid, written)
	}
	var cur *current
	var prev *Resource // written-1, nil for written 1
	err = s.forEach(ctx, 2, func(ctx context.Context, i int) error {
		var err error
		if i == 0 {
			cur, err = s.readCurrent(ctx, sc, typ, id)
		} else if written > 1 {
			prev, err = s.readVersion(ctx, sc, typ, id, written-1)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if cur.version() == written-1 {
		rolled, err := s.rollForward(ctx, sc, typ, id, cur)
		ok := rolled != nil
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("%w: %s/%s has no version %d to revert", ErrNotFound, typ, id, written)
		}
		if cur, err = s.readCurrent(ctx, sc, typ, id); err != nil {
			return nil, err
		}
	}
	switch v := cur.version(); {
	case v > written:
		return s.reverted(ctx, sc, typ, id, written, prev)
	case v < written:
		return nil, fmt.Errorf("%w: %s/%s has no version %d to revert (current is %d)", ErrNotFound, typ, id, written, v)
	}
	res, err := s.write(ctx, sc, writeReq{typ: typ, id: id, known: cur, base: written,
		build: func(cur *Resource, v int, lu time.Time) (*Resource, error) {
			next := &Resource{Type: typ, ID: id, Tenant: sc.tenant, CreatedAt: cur.CreatedAt, LastModified: lu}
			if prev == nil || prev.Deleted() {
				next.Content, next.DeletedAt, next.Method = cur.Content, &lu, MethodDelete
				return next, nil
			}
			content, err := fhir.SetMeta(prev.Content, id, strconv.Itoa(v), lu)
			if err != nil {
				return nil, fmt.Errorf("fhirstore: restoring %s/%s version %d: %w", typ, id, written-1, err)
			}
			next.Content, next.Method = content, MethodPut
			return next, nil
		}})
	if errors.Is(err, ErrPreconditionFailed) {
		// Another writer took written+1: maybe a concurrent Revert.
		return s.reverted(ctx, sc, typ, id, written, prev)
	}
	return res, err
}

// reverted returns version written+1 when it is a revert of written (see
// Revert), and ErrPreconditionFailed otherwise. prev is version written-1
// (nil for written 1).
func (s *Store) reverted(ctx context.Context, sc scope, typ, id string, written int, prev *Resource) (*Resource, error) {
	after, err := s.readVersion(ctx, sc, typ, id, written+1)
	if err != nil {
		return nil, err
	}
	is := after.Deleted()
	if prev != nil && !prev.Deleted() {
		want, err := fhir.SetMeta(prev.Content, id, after.VersionID(), after.LastModified)
		is = err == nil && !after.Deleted() && bytes.Equal(want, after.Content)
	}
	if !is {
		return nil, fmt.Errorf("%w: %s/%s version %d was followed by version %d, which does not revert it; Revert never undoes a later write",
			ErrPreconditionFailed, typ, id, written, written+1)
	}
	return after, nil
}

// WriteOptions control Update and Delete.
type WriteOptions struct {
	IfMatch *Match // nil = unconditional
}

// Create stores a new resource of type typ with a server-assigned id (32
// lowercase hex digits) as version 1 (method POST). Any id, meta.versionId
// or meta.lastUpdated in body is replaced. Cost: exactly 4 PUTs (claim,
// current.json, two events), no GET or HEAD.
func (s *Store) Create(ctx context.Context, tenant, typ string, body []byte) (*Resource, error) {
	sc, err := s.checkTarget(tenant, typ, "", false)
	if err != nil {
		return nil, err
	}
	if _, err := s.validate(body, typ); err != nil {
		return nil, err
	}
	for range 3 {
		res, _, err := s.apply(ctx, sc, Change{Type: typ, ID: newID(), Method: MethodPost, Content: body}, true)
		if errors.Is(err, errIDTaken) {
			continue
		}
		return res, err
	}
	return nil, fmt.Errorf("%w: could not draw an unused id", ErrVersionConflict)
}

// Update writes a new version of typ/id with method PUT: Apply with
// AnyBase.
//
// Decisions: when typ/id does not exist it is created as version 1 and
// created is true (FHIR update-as-create, 201). A PUT on a tombstone
// restores the resource as the next version with created == false: the
// resource and its history already exist, only its current version was a
// deletion, so the answer is 200 with the new version; created_at keeps
// the time of the original version 1. body's resourceType must be typ and
// its id must equal id (missing or different -> ErrInvalid). With
// opts.IfMatch not matching the current version -> ErrPreconditionFailed
// (see Match for "*" and tombstones); an If-Match on a missing resource
// fails and never creates. A lost race of an unconditional update is
// retried up to Config.WriteRetries times, then ErrVersionConflict. Cost
// with a known current: 1 GET + 4 PUTs.
func (s *Store) Update(ctx context.Context, tenant, typ, id string, body []byte, opts WriteOptions) (res *Resource, created bool, err error) {
	return s.Apply(ctx, tenant, Change{Type: typ, ID: id, Method: MethodPut, Content: body, AnyBase: true, IfMatch: opts.IfMatch})
}

// Delete writes a tombstone: a new version with method DELETE and
// deleted_at set, whose content is the previous version's content byte for
// byte (its meta.versionId therefore still names the previous version; the
// tombstone's own version is Resource.Version). Deleting a missing or
// already deleted resource writes nothing and returns (nil, nil), also
// with an If-Match naming the tombstone's version. IfMatch not holding ->
// ErrPreconditionFailed (also on a missing resource). Cost with a known
// current: 1 GET + 4 PUTs; 1 GET when there is nothing to delete.
func (s *Store) Delete(ctx context.Context, tenant, typ, id string, opts WriteOptions) (*Resource, error) {
	res, _, err := s.Apply(ctx, tenant, Change{Type: typ, ID: id, Method: MethodDelete, AnyBase: true, IfMatch: opts.IfMatch})
	return res, err
}

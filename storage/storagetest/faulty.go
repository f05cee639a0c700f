package storagetest

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"fhirbucket/storage"
)

// Fault is one rule of a Faulty bucket. A call matches the rule when its
// operation is Op and its key (the Prefix for List) satisfies KeyContains
// and Match. Of the matching calls, the rule fires on the Nth (1-based),
// or on every one when Nth is 0.
type Fault struct {
	Op storage.Op
	// KeyContains, when non-empty, restricts the rule to keys containing it.
	KeyContains string
	// Match, when non-nil, restricts the rule to keys it accepts.
	Match func(key string) bool
	// Nth selects the one matching call the rule fires on (1-based); 0
	// fires on every matching call.
	Nth int
	// Err is returned by the call when the rule fires, wrapped in a
	// *storage.Error; nil means only Delay applies.
	Err error
	// AfterWrite performs the call on the inner bucket first and returns
	// Err afterwards: the write landed but the caller saw a failure (a
	// lost response). For Get the body is discarded.
	AfterWrite bool
	// Delay is slept before the call (or before returning Err). The sleep
	// ends early, with the context's error, when ctx is done.
	Delay time.Duration
}

// Rule is a Fault added to a Faulty bucket; it counts its matches and
// firings.
type Rule struct {
	Fault
	seen, fired int
	f           *Faulty
}

// Seen is how many calls have matched the rule so far.
func (r *Rule) Seen() int {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	return r.seen
}

// Fired is how many times the rule has fired so far.
func (r *Rule) Fired() int {
	r.f.mu.Lock()
	defer r.f.mu.Unlock()
	return r.fired
}

// Faulty wraps a storage.Bucket and injects failures and delays according
// to its rules, so that tests can reproduce lost writes, lost responses,
// throttling and slow stores deterministically. It is safe for concurrent
// use; rules may be added and reset while calls are in flight.
type Faulty struct {
	inner storage.Bucket
	mu    sync.Mutex
	rules []*Rule
}

var _ storage.Bucket = (*Faulty)(nil)

// NewFaulty wraps b with no rules: every call passes through.
func NewFaulty(b storage.Bucket) *Faulty { return &Faulty{inner: b} }

// Inner returns the wrapped bucket, for inspecting state behind the faults.
func (f *Faulty) Inner() storage.Bucket { return f.inner }

// Add installs a rule and returns it, to read its counters.
func (f *Faulty) Add(fault Fault) *Rule {
	r := &Rule{Fault: fault, f: f}
	f.mu.Lock()
	f.rules = append(f.rules, r)
	f.mu.Unlock()
	return r
}

// Reset removes every rule. Rules already returned keep their counters.
func (f *Faulty) Reset() {
	f.mu.Lock()
	f.rules = nil
	f.mu.Unlock()
}

// decide counts the call against every matching rule and returns the
// first rule that fires, if any. Every matching rule counts the call, so
// each rule's Nth is independent of the others.
func (f *Faulty) decide(op storage.Op, key string) *Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	var fire *Fault
	for _, r := range f.rules {
		if r.Op != op || !strings.Contains(key, r.KeyContains) || (r.Match != nil && !r.Match(key)) {
			continue
		}
		r.seen++
		if r.Nth != 0 && r.seen != r.Nth {
			continue
		}
		if fire == nil {
			r.fired++
			fire = &r.Fault
		}
	}
	return fire
}

// opNames are the storage.Error Op values of each request kind.
var opNames = map[storage.Op]string{
	storage.OpGet: "get", storage.OpPut: "put", storage.OpHead: "stat",
	storage.OpList: "list", storage.OpDelete: "delete",
}

// apply runs the delay of rule (if any); it returns whether the call
// should reach the inner bucket, and the error to report afterwards.
func apply(ctx context.Context, rule *Fault, op storage.Op, key string) (callInner bool, err error) {
	if rule == nil {
		return true, nil
	}
	if rule.Delay > 0 {
		t := time.NewTimer(rule.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false, &storage.Error{Op: opNames[op], Key: key, Err: ctx.Err()}
		}
	}
	if rule.Err == nil {
		return true, nil
	}
	return rule.AfterWrite, &storage.Error{Op: opNames[op], Key: key, Err: fmt.Errorf("injected fault: %w", rule.Err)}
}

func (f *Faulty) Get(ctx context.Context, key string) (io.ReadCloser, storage.Attrs, error) {
	callInner, ferr := apply(ctx, f.decide(storage.OpGet, key), storage.OpGet, key)
	if !callInner {
		return nil, storage.Attrs{}, ferr
	}
	rc, a, err := f.inner.Get(ctx, key)
	if ferr != nil {
		if err == nil {
			rc.Close()
		}
		return nil, storage.Attrs{}, ferr
	}
	return rc, a, err
}

func (f *Faulty) Put(ctx context.Context, key string, body io.Reader, opts storage.PutOptions) (storage.Attrs, error) {
	callInner, ferr := apply(ctx, f.decide(storage.OpPut, key), storage.OpPut, key)
	if !callInner {
		return storage.Attrs{}, ferr
	}
	a, err := f.inner.Put(ctx, key, body, opts)
	if ferr != nil {
		return storage.Attrs{}, ferr
	}
	return a, err
}

func (f *Faulty) Stat(ctx context.Context, key string) (storage.Attrs, error) {
	callInner, ferr := apply(ctx, f.decide(storage.OpHead, key), storage.OpHead, key)
	if !callInner {
		return storage.Attrs{}, ferr
	}
	a, err := f.inner.Stat(ctx, key)
	if ferr != nil {
		return storage.Attrs{}, ferr
	}
	return a, err
}

func (f *Faulty) Delete(ctx context.Context, key string) error {
	callInner, ferr := apply(ctx, f.decide(storage.OpDelete, key), storage.OpDelete, key)
	if !callInner {
		return ferr
	}
	err := f.inner.Delete(ctx, key)
	if ferr != nil {
		return ferr
	}
	return err
}

func (f *Faulty) List(ctx context.Context, opts storage.ListOptions) (storage.ListPage, error) {
	callInner, ferr := apply(ctx, f.decide(storage.OpList, opts.Prefix), storage.OpList, opts.Prefix)
	if !callInner {
		return storage.ListPage{}, ferr
	}
	page, err := f.inner.List(ctx, opts)
	if ferr != nil {
		return storage.ListPage{}, ferr
	}
	return page, err
}

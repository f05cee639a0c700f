package fhirstore

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"fhirbucket/internal/layout"
	"fhirbucket/storage"
)

// putJournal writes a journal of transaction tx with status st, as
// package bundle does (a lease document whose state has a status).
func putJournal(t *testing.T, b storage.Bucket, tx string, st TxState) {
	t.Helper()
	doc := `{"lease":{"owner":"test","expires":"2999-01-01T00:00:00.000Z","token":1},"state":{"tx_id":"` + tx + `","status":"` + string(st) + `"}}`
	if _, err := b.Put(context.Background(), "default/"+layout.TransactionKey(tx), strings.NewReader(doc), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestTransactionVisibility: versions of a transaction are invisible to
// every reader until its journal says committed, and for good when it says
// aborted; a writer meeting an open one waits and then fails with
// ErrTxInProgress, and after an abort builds on the visible version.
func TestTransactionVisibility(t *testing.T) {
	eachBackend(t, func(t *testing.T, bk backend) {
		b := bk.Open(t)
		s := newStore(t, b, func(c *Config) { c.TxWait = 300 * time.Millisecond })
		ctx := t.Context()
		if _, _, err := s.Update(ctx, DefaultTenant, "Patient", "a", patient("a", "old"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		const tx = "0123456789abcdef0123456789abcdef"
		putJournal(t, b, tx, TxOpen)
		h, err := s.Head(ctx, DefaultTenant, "Patient", "a")
		if err != nil || h.Base != 1 {
			t.Fatalf("Head: %+v %v", h, err)
		}
		res, _, err := s.Apply(ctx, DefaultTenant, Change{Type: "Patient", ID: "a", Method: MethodPut, Content: patient("a", "new"), Base: 1, Tx: tx, Head: &h})
		if err != nil || res.Version != 2 || res.Tx != tx {
			t.Fatalf("Apply in a transaction: %+v %v", res, err)
		}
		created, _, err := s.Apply(ctx, DefaultTenant, Change{Type: "Patient", ID: "b", Method: MethodPut, Content: patient("b", "new"), Tx: tx})
		if err != nil {
			t.Fatal(err)
		}
		data, _ := mustRead(t, b, "default/"+layout.VersionKey("Patient", "a", 2))
		if !bytes.HasSuffix(bytes.TrimSpace(data), []byte(`"transaction_id":"`+tx+`"}`)) {
			t.Errorf("the version does not name its transaction: %s", data)
		}

		hidden := func(when string) {
			t.Helper()
			if r, err := s.Read(ctx, DefaultTenant, "Patient", "a"); err != nil || r.Version != 1 {
				t.Errorf("%s: read a: %+v %v, want version 1", when, r, err)
			}
			if _, err := s.VRead(ctx, DefaultTenant, "Patient", "a", "2"); !errors.Is(err, ErrNotFound) {
				t.Errorf("%s: vread a/2: %v, want not found", when, err)
			}
			if _, err := s.Read(ctx, DefaultTenant, "Patient", "b"); !errors.Is(err, ErrNotFound) {
				t.Errorf("%s: read b: %v, want not found", when, err)
			}
			if n, err := s.Count(ctx, DefaultTenant, "Patient"); err != nil || n != 1 {
				t.Errorf("%s: count %d %v, want 1", when, n, err)
			}
			if lp, err := s.List(ctx, DefaultTenant, "Patient", ListQuery{}); err != nil || len(lp.Resources) != 1 || lp.Resources[0].Version != 1 {
				t.Errorf("%s: list %+v %v", when, lp, err)
			}
			for _, q := range []HistoryQuery{{Type: "Patient", ID: "a"}, {Type: "Patient"}, {}} {
				hp, err := s.History(ctx, DefaultTenant, q)
				if err != nil {
					t.Fatalf("%s: history %+v: %v", when, q, err)
				}
				for _, e := range hp.Entries {
					if e.Tx != "" {
						t.Errorf("%s: history %+v shows %s/%s version %d of the transaction", when, q, e.Type, e.ID, e.Version)
					}
				}
			}
			if _, err := s.History(ctx, DefaultTenant, HistoryQuery{Type: "Patient", ID: "b"}); !errors.Is(err, ErrNotFound) {
				t.Errorf("%s: history of b: %v, want not found", when, err)
			}
		}
		hidden("open")
		// A writer waits for the open transaction, then gives up.
		start := time.Now()
		_, _, err = s.Update(ctx, DefaultTenant, "Patient", "a", patient("a", "other"), WriteOptions{})
		if !errors.Is(err, ErrTxInProgress) || time.Since(start) < 250*time.Millisecond {
			t.Errorf("update during the transaction: %v after %v, want ErrTxInProgress after the wait", err, time.Since(start))
		}

		// Committed: everything is visible at once (a fresh store: no cache).
		putJournal(t, b, tx, TxCommitted)
		s2 := newStore(t, b)
		if r, err := s2.Read(ctx, DefaultTenant, "Patient", "a"); err != nil || r.Version != 2 {
			t.Errorf("committed: read a %+v %v", r, err)
		}
		if r, err := s2.Read(ctx, DefaultTenant, "Patient", "b"); err != nil || r.Version != created.Version {
			t.Errorf("committed: read b %+v %v", r, err)
		}

		// Aborted (another store, as the cache of s2 says committed):
		// hidden again, and a writer with If-Match on the visible
		// version builds version 3 on version 1.
		putJournal(t, b, tx, TxAborted)
		s3 := newStore(t, b)
		s = s3
		hidden("aborted")
		m, _ := ParseIfMatch(`W/"1"`)
		res, created2, err := s3.Update(ctx, DefaultTenant, "Patient", "a", patient("a", "after"), WriteOptions{IfMatch: m})
		if err != nil || res.Version != 3 || created2 {
			t.Fatalf("update after the abort: %+v created=%v %v", res, created2, err)
		}
		if !strings.Contains(string(res.Content), `"versionId":"3"`) {
			t.Errorf("meta.versionId of version 3: %s", res.Content)
		}
		if r, err := s3.Read(ctx, DefaultTenant, "Patient", "a"); err != nil || !strings.Contains(string(r.Content), "after") {
			t.Errorf("read after the update: %+v %v", r, err)
		}
		hp, err := s3.History(ctx, DefaultTenant, HistoryQuery{Type: "Patient", ID: "a"})
		if err != nil || len(hp.Entries) != 2 || hp.Entries[0].Version != 3 || hp.Entries[1].Version != 1 {
			t.Errorf("history after the abort: %+v %v, want versions 3 and 1", hp, err)
		}
		// A create on top of an aborted version 1 is a create.
		res, created2, err = s3.Update(ctx, DefaultTenant, "Patient", "b", patient("b", "again"), WriteOptions{})
		if err != nil || !created2 || res.Version != 2 {
			t.Errorf("re-create of b: %+v created=%v %v", res, created2, err)
		}
	})
}

// TestAbortedClaimIsSkipped: a version claimed by a transaction that then
// aborted, whose current.json was never moved (its process died between
// the steps), takes a version number but nothing else: a write planned on
// the visible version builds on top of it, with a Base or an If-Match.
func TestAbortedClaimIsSkipped(t *testing.T) {
	eachBackend(t, func(t *testing.T, bk backend) {
		b := bk.Open(t)
		s := newStore(t, b)
		ctx := t.Context()
		for _, id := range []string{"a", "b"} {
			if _, _, err := s.Update(ctx, DefaultTenant, "Patient", id, patient(id, "old"), WriteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		const tx = "fedcba9876543210fedcba9876543210"
		putJournal(t, b, tx, TxAborted)
		for _, id := range []string{"a", "b"} {
			// The claim alone, as a process killed after step 1 leaves it.
			v2 := &Resource{Type: "Patient", ID: id, Version: 2, Tenant: DefaultTenant, Content: patient(id, "aborted"),
				CreatedAt: time.Now(), LastModified: time.Now(), Method: MethodPut, Tx: tx}
			if _, err := b.Put(ctx, "default/"+layout.VersionKey("Patient", id, 2), bytes.NewReader(encodeEnvelope(v2)), storage.PutOptions{IfNoneMatch: "*"}); err != nil {
				t.Fatal(err)
			}
		}
		h, err := s.Head(ctx, DefaultTenant, "Patient", "a")
		if err != nil || h.Base != 1 {
			t.Fatalf("Head: %+v %v", h, err)
		}
		res, _, err := s.Apply(ctx, DefaultTenant, Change{Type: "Patient", ID: "a", Method: MethodPut, Content: patient("a", "new"), Base: 1, Head: &h})
		if err != nil || res.Version != 3 || !strings.Contains(string(res.Content), `"versionId":"3"`) {
			t.Fatalf("Apply with Base 1 over an aborted claim: %+v %v", res, err)
		}
		m, _ := ParseIfMatch(`W/"1"`)
		res, _, err = s.Update(ctx, DefaultTenant, "Patient", "b", patient("b", "new"), WriteOptions{IfMatch: m})
		if err != nil || res.Version != 3 {
			t.Fatalf("If-Match update over an aborted claim: %+v %v", res, err)
		}
		for _, id := range []string{"a", "b"} {
			hp, err := s.History(ctx, DefaultTenant, HistoryQuery{Type: "Patient", ID: id})
			if err != nil || len(hp.Entries) != 2 || hp.Entries[0].Version != 3 || hp.Entries[1].Version != 1 {
				t.Errorf("history of %s: %+v %v, want versions 3 and 1", id, hp, err)
			}
		}
	})
}

// TestAsOfTransactions: a snapshot at instant T holds a transaction's
// versions only when the transaction committed by T.
func TestAsOfTransactions(t *testing.T) {
	b := newMem()
	s := newStore(t, b)
	ctx := t.Context()
	if _, _, err := s.Update(ctx, DefaultTenant, "Patient", "a", patient("a", "old"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	const tx = "00112233445566778899aabbccddeeff"
	putJournal(t, b, tx, TxOpen)
	res, _, err := s.Apply(ctx, DefaultTenant, Change{Type: "Patient", ID: "a", Method: MethodPut, Content: patient("a", "new"), Base: 1, Tx: tx})
	if err != nil {
		t.Fatal(err)
	}
	written := res.LastModified
	commit := written.Add(time.Second)
	doc := `{"lease":{"token":1},"state":{"tx_id":"` + tx + `","status":"committed","finished":"` + commit.UTC().Format(time.RFC3339Nano) + `"}}`
	if _, err := b.Put(ctx, "default/"+layout.TransactionKey(tx), strings.NewReader(doc), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		at   time.Time
		want int
	}{{written, 1}, {commit.Add(-time.Millisecond), 1}, {commit, 2}, {commit.Add(time.Hour), 2}} {
		got, err := newStore(t, b).AsOf(ctx, DefaultTenant, "Patient", "a", c.at)
		if err != nil || got == nil || got.Version != c.want {
			t.Errorf("AsOf(%v): %+v %v, want version %d", c.at, got, err, c.want)
		}
	}
}

package fhirstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"fhirbucket/fhir"
	"fhirbucket/storage"
)

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

// metaOf decodes id, meta.versionId and meta.lastUpdated of content.
func metaOf(t testing.TB, content []byte) (id, vid, lu string) {
	t.Helper()
	var r struct {
		ID   string `json:"id"`
		Meta struct {
			VersionID   string `json:"versionId"`
			LastUpdated string `json:"lastUpdated"`
		} `json:"meta"`
	}
	if err := json.Unmarshal(content, &r); err != nil {
		t.Fatalf("content %s: %v", content, err)
	}
	return r.ID, r.Meta.VersionID, r.Meta.LastUpdated
}

func TestCRUD(t *testing.T) {
	eachBackend(t, func(t *testing.T, bk backend) {
		ctx := t.Context()
		clk := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 6_700_000, time.UTC), step: time.Second}
		s := newStore(t, bk.Open(t), withClock(clk))

		c, err := s.Create(ctx, "acme", "Patient", patient("client-id", "One"))
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		if !hex32.MatchString(c.ID) || c.Version != 1 || c.Method != MethodPost || c.Deleted() || c.Tenant != "acme" {
			t.Fatalf("Create = %+v", c)
		}
		if id, vid, lu := metaOf(t, c.Content); id != c.ID || vid != "1" || lu != "2026-01-02T03:04:05.006Z" {
			t.Fatalf("created content has id %q versionId %q lastUpdated %q: %s", id, vid, lu, c.Content)
		}
		if !c.LastModified.Equal(time.Date(2026, 1, 2, 3, 4, 5, 6_000_000, time.UTC)) || !c.CreatedAt.Equal(c.LastModified) {
			t.Fatalf("times %v %v", c.CreatedAt, c.LastModified)
		}
		r, err := s.Read(ctx, "acme", "Patient", c.ID)
		if err != nil || !bytes.Equal(r.Content, c.Content) || r.Version != 1 {
			t.Fatalf("Read = %+v, %v", r, err)
		}

		u, created, err := s.Update(ctx, "acme", "Patient", c.ID, patient(c.ID, "Two"), WriteOptions{})
		if err != nil || created || u.Version != 2 || u.Method != MethodPut || !u.CreatedAt.Equal(c.CreatedAt) {
			t.Fatalf("Update = %+v, %v, %v", u, created, err)
		}
		if !bytes.Contains(u.Content, []byte(`"Two"`)) {
			t.Fatalf("update content %s", u.Content)
		}
		for v, want := range map[string]string{"1": `"One"`, "2": `"Two"`} {
			r, err := s.VRead(ctx, "acme", "Patient", c.ID, v)
			if err != nil || !bytes.Contains(r.Content, []byte(want)) || r.VersionID() != v {
				t.Fatalf("VRead %s = %+v, %v", v, r, err)
			}
		}

		d, err := s.Delete(ctx, "acme", "Patient", c.ID, WriteOptions{})
		if err != nil || d == nil || d.Version != 3 || !d.Deleted() || d.Method != MethodDelete || !bytes.Equal(d.Content, u.Content) {
			t.Fatalf("Delete = %+v, %v", d, err)
		}
		r, err = s.Read(ctx, "acme", "Patient", c.ID)
		if !errors.Is(err, ErrGone) || r == nil || r.Version != 3 || r.ETag() != `W/"3"` {
			t.Fatalf("Read after delete = %+v, %v", r, err)
		}
		if r, err := s.VRead(ctx, "acme", "Patient", c.ID, "3"); !errors.Is(err, ErrGone) || r == nil || !r.Deleted() {
			t.Fatalf("VRead tombstone = %+v, %v", r, err)
		}
		for _, v := range []string{"4", "0", "01", "x", "-1", ""} {
			if _, err := s.VRead(ctx, "acme", "Patient", c.ID, v); !errors.Is(err, ErrNotFound) {
				t.Errorf("VRead %q = %v, want ErrNotFound", v, err)
			}
		}
		if d, err := s.Delete(ctx, "acme", "Patient", c.ID, WriteOptions{}); d != nil || err != nil {
			t.Fatalf("second Delete = %+v, %v", d, err)
		}
		if d, err := s.Delete(ctx, "acme", "Patient", "never", WriteOptions{}); d != nil || err != nil {
			t.Fatalf("Delete of missing = %+v, %v", d, err)
		}

		// PUT on a tombstone restores it as the next version.
		u, created, err = s.Update(ctx, "acme", "Patient", c.ID, patient(c.ID, "Three"), WriteOptions{})
		if err != nil || created || u.Version != 4 || u.Deleted() {
			t.Fatalf("restore = %+v, %v, %v", u, created, err)
		}
		if r, err := s.Read(ctx, "acme", "Patient", c.ID); err != nil || r.Version != 4 {
			t.Fatalf("Read after restore = %+v, %v", r, err)
		}
		if vs, err := s.Versions(ctx, "acme", "Patient", c.ID); err != nil || !slices.Equal(vs, []int{1, 2, 3, 4}) {
			t.Fatalf("Versions = %v, %v", vs, err)
		}

		// Update-as-create.
		u, created, err = s.Update(ctx, "acme", "Patient", "p2", patient("p2", "New"), WriteOptions{})
		if err != nil || !created || u.Version != 1 || u.Method != MethodPut || u.ID != "p2" {
			t.Fatalf("update-as-create = %+v, %v, %v", u, created, err)
		}
		if _, err := s.Read(ctx, "acme", "Patient", "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Read unknown = %v", err)
		}
		if _, err := s.Versions(ctx, "acme", "Patient", "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Versions unknown = %v", err)
		}
		if rep, err := s.Verify(ctx, "acme", false); err != nil || len(rep.Problems) != 0 || rep.Resources != 2 || rep.Versions != 5 || rep.Events != 10 {
			t.Fatalf("Verify = %+v, %v", rep, err)
		}
	})
}

// TestLayout checks the keys and bytes against docs/object-layout.md.
func TestLayout(t *testing.T) {
	eachBackend(t, func(t *testing.T, bk backend) {
		ctx := t.Context()
		b := bk.Open(t)
		clk := &fakeClock{t: time.Date(2026, 3, 4, 5, 6, 7, 891_000_000, time.UTC), step: 1500 * time.Millisecond}
		s := newStore(t, b, withClock(clk), func(c *Config) { c.Prefix = "/g/" })
		base := "g/acme/"
		var currents [][]byte // current.json bytes after each write
		snap := func() {
			data, a := mustRead(t, b, base+"resources/Patient/p1/current.json")
			if a.ContentType != "application/json" {
				t.Errorf("current.json content type %q", a.ContentType)
			}
			currents = append(currents, data)
		}
		if _, _, err := s.Update(ctx, "acme", "Patient", "p1", patient("p1", "A"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		snap()
		if _, _, err := s.Update(ctx, "acme", "Patient", "p1", patient("p1", "B"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		snap()
		if _, err := s.Delete(ctx, "acme", "Patient", "p1", WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		snap()

		times := []string{"2026-03-04T05:06:07.891Z", "2026-03-04T05:06:09.391Z", "2026-03-04T05:06:10.891Z"}
		ms := []int64{1772600767891, 1772600769391, 1772600770891}
		var want []string
		for v := 1; v <= 3; v++ {
			suffix := eventSuffix("acme", "Patient", "p1", v)
			want = append(want,
				base+"resources/Patient/p1/_history/"+strconv.Itoa(v)+".json",
				fmt.Sprintf("%shistory/type/Patient/%013d_p1_%d_%s.json", base, ms[v-1], v, suffix),
				fmt.Sprintf("%shistory/system/%013d_Patient_p1_%d_%s.json", base, ms[v-1], v, suffix))
		}
		want = append(want, base+"resources/Patient/p1/current.json")
		slices.Sort(want)
		if got := allKeys(t, b); !slices.Equal(got, want) {
			t.Fatalf("keys:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		methods := []string{"PUT", "PUT", "DELETE"}
		for v := 1; v <= 3; v++ {
			data, a := mustRead(t, b, fmt.Sprintf("%sresources/Patient/p1/_history/%d.json", base, v))
			if !bytes.Equal(data, currents[v-1]) {
				t.Errorf("version %d differs from what current.json held:\n%s\n%s", v, data, currents[v-1])
			}
			if a.ContentType != "application/json" {
				t.Errorf("version %d content type %q", v, a.ContentType)
			}
			// Field order and values, exactly.
			var fields []string
			dec := json.NewDecoder(bytes.NewReader(data))
			dec.UseNumber()
			var env map[string]json.RawMessage
			if err := json.Unmarshal(data, &env); err != nil {
				t.Fatal(err)
			}
			tok, _ := dec.Token()
			for dec.More() && tok != nil {
				k, _ := dec.Token()
				fields = append(fields, k.(string))
				var skip json.RawMessage
				if err := dec.Decode(&skip); err != nil {
					t.Fatal(err)
				}
			}
			wantFields := []string{"resource_type", "id", "version_id", "tenant_id", "fhir_version", "content", "created_at", "last_modified", "deleted_at", "etag", "method"}
			if !slices.Equal(fields, wantFields) {
				t.Errorf("envelope fields %v", fields)
			}
			deleted := "null"
			if v == 3 {
				deleted = `"` + times[2] + `"`
			}
			checks := map[string]string{
				"resource_type": `"Patient"`, "id": `"p1"`, "version_id": `"` + strconv.Itoa(v) + `"`, "tenant_id": `"acme"`,
				"fhir_version": `"4.0.1"`, "created_at": `"` + times[0] + `"`, "last_modified": `"` + times[v-1] + `"`,
				"deleted_at": deleted, "etag": `"W/\"` + strconv.Itoa(v) + `\""`, "method": `"` + methods[v-1] + `"`,
			}
			for k, w := range checks {
				if string(env[k]) != w {
					t.Errorf("version %d %s = %s, want %s", v, k, env[k], w)
				}
			}
			if v == 3 && !bytes.Equal(env["content"], mustEnv(t, currents[1])["content"]) {
				t.Errorf("tombstone content differs from the previous version's")
			}
			suffix := eventSuffix("acme", "Patient", "p1", v)
			for _, k := range []string{
				fmt.Sprintf("%shistory/type/Patient/%013d_p1_%d_%s.json", base, ms[v-1], v, suffix),
				fmt.Sprintf("%shistory/system/%013d_Patient_p1_%d_%s.json", base, ms[v-1], v, suffix),
			} {
				ev, a := mustRead(t, b, k)
				wantEv := fmt.Sprintf(`{"resource_type":"Patient","id":"p1","version_id":"%d","timestamp":"%s","method":"%s","deleted":%v}`,
					v, times[v-1], methods[v-1], v == 3)
				if string(bytes.TrimSpace(ev)) != wantEv || a.ContentType != "application/json" {
					t.Errorf("event %s = %s (%s), want %s", k, ev, a.ContentType, wantEv)
				}
			}
		}
	})
}

func mustEnv(t testing.TB, data []byte) map[string]json.RawMessage {
	var env map[string]json.RawMessage
	if err := json.Unmarshal(data, &env); err != nil {
		t.Fatal(err)
	}
	return env
}

// TestBadInputWritesNothing: every rejected input is rejected before any
// I/O, with the documented error.
func TestBadInputWritesNothing(t *testing.T) {
	ctx := t.Context()
	mem := newMem()
	c := storage.NewCounter(mem)
	s := newStore(t, c)
	if _, _, err := s.Update(ctx, "acme", "Patient", "p1", patient("p1", "A"), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	keys := allKeys(t, mem)
	big := []byte(`{"resourceType":"Patient","id":"p1","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">` +
		strings.Repeat("x", 5<<20) + `</div>"}}`)
	tests := []struct {
		name string
		op   func() error
		want error
	}{
		{"create bad tenant", func() error { _, err := s.Create(ctx, "bulk", "Patient", patient("", "x")); return err }, ErrInvalidTenant},
		{"create bad tenant chars", func() error { _, err := s.Create(ctx, "a/b", "Patient", patient("", "x")); return err }, ErrInvalidTenant},
		{"create bad type", func() error { _, err := s.Create(ctx, "acme", "Patients", patient("", "x")); return err }, ErrInvalid},
		{"create type mismatch", func() error { _, err := s.Create(ctx, "acme", "Observation", patient("", "x")); return err }, ErrInvalid},
		{"create not json", func() error { _, err := s.Create(ctx, "acme", "Patient", []byte(`{"resourceType":`)); return err }, fhir.ErrInvalid},
		{"create schema", func() error {
			_, err := s.Create(ctx, "acme", "Patient", []byte(`{"resourceType":"Patient","gender":42}`))
			return err
		}, ErrInvalid},
		{"create too large", func() error { _, err := s.Create(ctx, "acme", "Patient", big); return err }, fhir.ErrTooLarge},
		{"update bad id", func() error {
			_, _, err := s.Update(ctx, "acme", "Patient", "a_b", patient("a_b", "x"), WriteOptions{})
			return err
		}, ErrInvalid},
		{"update dotdot", func() error {
			_, _, err := s.Update(ctx, "acme", "Patient", "..", patient("..", "x"), WriteOptions{})
			return err
		}, ErrInvalid},
		{"update id mismatch", func() error {
			_, _, err := s.Update(ctx, "acme", "Patient", "p1", patient("p2", "x"), WriteOptions{})
			return err
		}, ErrInvalid},
		{"update no id", func() error {
			_, _, err := s.Update(ctx, "acme", "Patient", "p1", patient("", "x"), WriteOptions{})
			return err
		}, ErrInvalid},
		{"update bad tenant", func() error {
			_, _, err := s.Update(ctx, "", "Patient", "p1", patient("p1", "x"), WriteOptions{})
			return err
		}, ErrInvalidTenant},
		{"delete bad id", func() error { _, err := s.Delete(ctx, "acme", "Patient", "a b", WriteOptions{}); return err }, ErrInvalid},
		{"delete bad type", func() error { _, err := s.Delete(ctx, "acme", "patient", "p1", WriteOptions{}); return err }, ErrInvalid},
		{"read bad type", func() error { _, err := s.Read(ctx, "acme", "", "p1"); return err }, ErrInvalid},
		{"vread bad tenant", func() error { _, err := s.VRead(ctx, "tenants", "Patient", "p1", "1"); return err }, ErrInvalidTenant},
		{"history id without type", func() error { _, err := s.History(ctx, "acme", HistoryQuery{ID: "p1"}); return err }, ErrInvalid},
		{"history bad cursor", func() error { _, err := s.History(ctx, "acme", HistoryQuery{Cursor: "!!"}); return err }, ErrInvalid},
		{"history foreign cursor", func() error {
			_, err := s.History(ctx, "acme", HistoryQuery{Type: "Patient", Cursor: "aTE6Mw"}) // "i1:3"
			return err
		}, ErrInvalid},
		{"list bad cursor", func() error { _, err := s.List(ctx, "acme", "Patient", ListQuery{Cursor: "zz"}); return err }, ErrInvalid},
	}
	for _, tt := range tests {
		cost := costOf(c, func() {
			if err := tt.op(); !errors.Is(err, tt.want) {
				t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
			}
		})
		if cost.Total() != 0 {
			t.Errorf("%s: made %+v requests, want none", tt.name, cost)
		}
	}
	// Validation errors carry the *fhir.ValidationError too.
	_, err := s.Create(ctx, "acme", "Patient", []byte(`{"resourceType":"Patient","gender":42}`))
	var ve *fhir.ValidationError
	if !errors.As(err, &ve) || !errors.Is(err, ErrInvalid) || !errors.Is(err, fhir.ErrInvalid) {
		t.Errorf("schema error %v does not wrap both ErrInvalid and *fhir.ValidationError", err)
	}
	if got := allKeys(t, mem); !slices.Equal(got, keys) {
		t.Errorf("keys changed: %v -> %v", keys, got)
	}
}

func TestIfMatch(t *testing.T) {
	eachBackend(t, func(t *testing.T, bk backend) {
		ctx := t.Context()
		s := newStore(t, bk.Open(t))
		put := func(id, name string, m string) (*Resource, bool, error) {
			t.Helper()
			var opts WriteOptions
			if m != "" {
				mm, err := ParseIfMatch(m)
				if err != nil {
					t.Fatal(err)
				}
				opts.IfMatch = mm
			}
			return s.Update(ctx, "acme", "Patient", id, patient(id, name), opts)
		}
		del := func(id, m string) (*Resource, error) {
			mm, err := ParseIfMatch(m)
			if err != nil {
				t.Fatal(err)
			}
			return s.Delete(ctx, "acme", "Patient", id, WriteOptions{IfMatch: mm})
		}
		if _, _, err := put("p", "v1", ""); err != nil {
			t.Fatal(err)
		}
		steps := []struct {
			name    string
			op      func() (*Resource, error)
			wantErr error
			wantVer int // version after the step (read)
		}{
			{"missing resource W/1", func() (*Resource, error) { r, _, err := put("q", "x", `W/"1"`); return r, err }, ErrPreconditionFailed, 1},
			{"missing resource *", func() (*Resource, error) { r, _, err := put("q", "x", `*`); return r, err }, ErrPreconditionFailed, 1},
			{"delete missing with If-Match", func() (*Resource, error) { return del("q", `*`) }, ErrPreconditionFailed, 1},
			{"match", func() (*Resource, error) { r, _, err := put("p", "v2", `W/"1"`); return r, err }, nil, 2},
			{"stale", func() (*Resource, error) { r, _, err := put("p", "x", `W/"1"`); return r, err }, ErrPreconditionFailed, 2},
			{"strong tag", func() (*Resource, error) { r, _, err := put("p", "v3", `"2"`); return r, err }, nil, 3},
			{"list with match", func() (*Resource, error) { r, _, err := put("p", "v4", `W/"1", W/"3"`); return r, err }, nil, 4},
			{"list without match", func() (*Resource, error) { r, _, err := put("p", "x", `W/"1", W/"3"`); return r, err }, ErrPreconditionFailed, 4},
			{"star", func() (*Resource, error) { r, _, err := put("p", "v5", `*`); return r, err }, nil, 5},
			{"delete stale", func() (*Resource, error) { return del("p", `W/"4"`) }, ErrPreconditionFailed, 5},
			{"delete match", func() (*Resource, error) { return del("p", `W/"5"`) }, nil, 6},
			{"star on tombstone", func() (*Resource, error) { r, _, err := put("p", "x", `*`); return r, err }, ErrPreconditionFailed, 6},
			{"delete tombstone star", func() (*Resource, error) { return del("p", `*`) }, ErrPreconditionFailed, 6},
			{"delete tombstone matching", func() (*Resource, error) { return del("p", `W/"6"`) }, nil, 6},
			{"revive with tombstone etag", func() (*Resource, error) { r, _, err := put("p", "v7", `W/"6"`); return r, err }, nil, 7},
		}
		for _, st := range steps {
			_, err := st.op()
			if !errors.Is(err, st.wantErr) || (st.wantErr == nil && err != nil) {
				t.Fatalf("%s: err = %v, want %v", st.name, err, st.wantErr)
			}
			r, _ := s.Read(ctx, "acme", "Patient", "p")
			if r == nil || r.Version != st.wantVer {
				t.Fatalf("%s: current = %+v, want version %d", st.name, r, st.wantVer)
			}
		}
		if _, err := s.Read(ctx, "acme", "Patient", "q"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("conditional writes created q: %v", err)
		}
	})
}

// TestCosts states the price of each operation in storage requests.
func TestCosts(t *testing.T) {
	eachBackend(t, func(t *testing.T, bk backend) {
		ctx := t.Context()
		c := storage.NewCounter(bk.Open(t))
		s := newStore(t, c)
		var res *Resource
		check := func(name string, want storage.Counts, f func() error) {
			t.Helper()
			var err error
			got := costOf(c, func() { err = f() })
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got != want {
				t.Errorf("%s cost %+v, want %+v", name, got, want)
			}
		}
		check("create", storage.Counts{Put: 4}, func() (err error) {
			res, err = s.Create(ctx, "acme", "Patient", patient("", "A"))
			return err
		})
		check("update", storage.Counts{Get: 1, Put: 4}, func() error {
			_, _, err := s.Update(ctx, "acme", "Patient", res.ID, patient(res.ID, "B"), WriteOptions{})
			return err
		})
		check("update-as-create", storage.Counts{Get: 1, Put: 4}, func() error {
			_, _, err := s.Update(ctx, "acme", "Patient", "new", patient("new", "B"), WriteOptions{})
			return err
		})
		check("conditional update", storage.Counts{Get: 1, Put: 4}, func() error {
			_, _, err := s.Update(ctx, "acme", "Patient", res.ID, patient(res.ID, "C"), WriteOptions{IfMatch: &Match{Versions: []int{2}}})
			return err
		})
		check("read", storage.Counts{Get: 1}, func() error { _, err := s.Read(ctx, "acme", "Patient", res.ID); return err })
		check("vread", storage.Counts{Get: 1}, func() error { _, err := s.VRead(ctx, "acme", "Patient", res.ID, "2"); return err })
		check("delete", storage.Counts{Get: 1, Put: 4}, func() error { _, err := s.Delete(ctx, "acme", "Patient", res.ID, WriteOptions{}); return err })
		check("delete again", storage.Counts{Get: 1}, func() error { _, err := s.Delete(ctx, "acme", "Patient", res.ID, WriteOptions{}); return err })
		check("instance history page", storage.Counts{Get: 3}, func() error {
			p, err := s.History(ctx, "acme", HistoryQuery{Type: "Patient", ID: res.ID, Count: 3})
			if err == nil && (len(p.Entries) != 3 || p.Next == "") {
				err = fmt.Errorf("page %d entries, next %q", len(p.Entries), p.Next)
			}
			return err
		})
	})
}

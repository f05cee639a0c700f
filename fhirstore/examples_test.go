package fhirstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"testing"

	"fhirbucket/fhir"
	"fhirbucket/internal/testenv"
)

// TestExamplesRoundTrip stores every official example and reads it back.
func TestExamplesRoundTrip(t *testing.T) {
	files := testenv.Examples(t)
	if len(files) < 500 {
		t.Fatalf("found %d examples in testdata/r4/examples, want the official 505", len(files))
	}
	eachBackend(t, func(t *testing.T, bk backend) {
		ctx := t.Context()
		s := newStore(t, bk.Open(t))
		subset := files
		if bk.S3 {
			// Every 5th file keeps the S3 runs short while still covering
			// a spread of types.
			subset = nil
			for i := 0; i < len(files); i += 5 {
				subset = append(subset, files[i])
			}
		}
		stored := 0
		for _, f := range subset {
			body := f.Body
			typ, id, err := fhir.Peek(body)
			if err != nil {
				t.Errorf("%s: Peek: %v", f.Name, err)
				continue
			}
			var res *Resource
			if id != "" {
				res, _, err = s.Update(ctx, "acme", typ, id, body, WriteOptions{})
			} else {
				res, err = s.Create(ctx, "acme", typ, body)
			}
			if err != nil {
				t.Errorf("%s: storing: %v", f.Name, err)
				continue
			}
			got, err := s.Read(ctx, "acme", typ, res.ID)
			if err != nil {
				t.Errorf("%s: Read: %v", f.Name, err)
				continue
			}
			if !bytes.Equal(got.Content, res.Content) {
				t.Errorf("%s: read content differs from the written content", f.Name)
			}
			if msg := sameApartFromMeta(body, got.Content, id == ""); msg != "" {
				t.Errorf("%s: %s", f.Name, msg)
			}
			stored++
		}
		t.Logf("%d of %d examples round-tripped", stored, len(subset))
	})
}

// sameApartFromMeta compares two resources as JSON (numbers as literal
// text), ignoring meta.versionId and meta.lastUpdated (and id when the
// original had none).
func sameApartFromMeta(orig, got []byte, ignoreID bool) string {
	decode := func(b []byte) (map[string]any, error) {
		d := json.NewDecoder(bytes.NewReader(b))
		d.UseNumber()
		var m map[string]any
		return m, d.Decode(&m)
	}
	a, err := decode(orig)
	if err != nil {
		return "original: " + err.Error()
	}
	b, err := decode(got)
	if err != nil {
		return "stored: " + err.Error()
	}
	for _, m := range []map[string]any{a, b} {
		if meta, ok := m["meta"].(map[string]any); ok {
			delete(meta, "versionId")
			delete(meta, "lastUpdated")
			if len(meta) == 0 {
				delete(m, "meta")
			}
		}
		if ignoreID {
			delete(m, "id")
		}
	}
	aj, _ := json.Marshal(a)
	bj, _ := json.Marshal(b)
	if !bytes.Equal(aj, bj) {
		return fmt.Sprintf("content differs:\n%.300s\n%.300s", aj, bj)
	}
	return ""
}

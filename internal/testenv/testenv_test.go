package testenv_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"fhirbucket/fhir"
	"fhirbucket/internal/s3test"
	"fhirbucket/internal/testenv"
	"fhirbucket/storage"
)

func TestMain(m *testing.M) { s3test.Main(m) }

func TestValidatorIsShared(t *testing.T) {
	v := testenv.Validator(t)
	if testenv.Validator(t) != v {
		t.Error("Validator built a second validator")
	}
	small := testenv.ValidatorWith(t, fhir.ValidatorOptions{MaxBytes: 1 << 10})
	if small == v || testenv.ValidatorWith(t, fhir.ValidatorOptions{MaxBytes: 1 << 10}) != small {
		t.Error("ValidatorWith does not keep one validator per options")
	}
	if _, err := small.Validate([]byte(`{"resourceType":"Patient","text":{"status":"generated","div":"<div xmlns=\"http://www.w3.org/1999/xhtml\">` + strings.Repeat("x", 2<<10) + `</div>"}}`)); err == nil {
		t.Error("the 1 KiB validator accepted a 2 KiB resource")
	}
}

func TestLockedBuffer(t *testing.T) {
	var b testenv.LockedBuffer
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			fmt.Fprintf(&b, "line %d\n", i)
			_ = b.String()
		})
	}
	wg.Wait()
	if n := strings.Count(b.String(), "\n"); n != 8 {
		t.Errorf("%d lines, want 8:\n%s", n, b.String())
	}
	testenv.QuietLogger().Info("dropped")
}

func TestExamples(t *testing.T) {
	ex := testenv.Examples(t)
	if len(ex) < 500 {
		t.Fatalf("%d examples, want the official 505", len(ex))
	}
	for _, e := range ex[:5] {
		if _, _, err := fhir.Peek(e.Body); err != nil {
			t.Errorf("%s: %v", e.Name, err)
		}
	}
}

func TestEachBackend(t *testing.T) {
	var ran []string
	testenv.EachBackend(t, func(t *testing.T, b testenv.Backend) {
		ran = append(ran, b.Name)
		bucket := b.Open(t)
		if _, err := bucket.Put(t.Context(), "k", strings.NewReader("v"), storage.PutOptions{}); err != nil {
			t.Fatalf("Put: %v", err)
		}
		page, err := bucket.List(t.Context(), storage.ListOptions{})
		if err != nil || len(page.Objects) != 1 {
			t.Fatalf("a fresh bucket with one Put lists %+v, %v; want one key", page, err)
		}
	})
	if len(ran) < 2 || ran[0] != "memstore" || ran[1] != "filestore" {
		t.Errorf("ran on %q, want memstore and filestore first", ran)
	}
}

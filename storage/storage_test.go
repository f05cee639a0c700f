package storage_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
	"fhirbucket/storage/storagetest"
)

func TestValidKey(t *testing.T) {
	valid := []string{
		"a", "a/b", "resources/Patient/p1/current.json", ".hidden", "a/...", "x-y_z.~",
		"é/日本", strings.Repeat("k", storage.MaxKeyLen), "a b",
	}
	for _, k := range valid {
		if err := storage.ValidKey(k); err != nil {
			t.Errorf("ValidKey(%.40q) = %v, want nil", k, err)
		}
	}
	for _, k := range storagetest.InvalidKeys {
		if err := storage.ValidKey(k); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("ValidKey(%.40q) = %v, want ErrInvalidKey", k, err)
		}
	}
}

// FuzzValidKey checks the promise ValidKey makes to the local-folder
// driver: a valid key is a local, clean, relative path.
func FuzzValidKey(f *testing.F) {
	for _, k := range append([]string{"a", "a/b", "a/../b", "./a", "a\\b", "\xff", ".."}, storagetest.InvalidKeys...) {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if storage.ValidKey(key) != nil {
			return
		}
		if !utf8.ValidString(key) || len(key) > storage.MaxKeyLen || strings.ContainsAny(key, "\x00\\") {
			t.Fatalf("ValidKey accepted %q", key)
		}
		if !filepath.IsLocal(key) || filepath.Clean(key) != key {
			t.Fatalf("ValidKey accepted %q, which is not a clean local path", key)
		}
		if storage.ValidPrefix(key+"/") != nil {
			t.Fatalf("ValidPrefix rejects valid key %q plus a slash", key)
		}
	})
}

func TestCheckListOptions(t *testing.T) {
	for _, tc := range []struct {
		delim string
		ok    bool
	}{{"", true}, {"/", true}, {",", false}, {"//", false}, {"a", false}} {
		err := storage.CheckListOptions(storage.ListOptions{Delimiter: tc.delim})
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, storage.ErrInvalidArgument)) {
			t.Errorf("CheckListOptions(Delimiter %q) = %v, want ok=%v", tc.delim, err, tc.ok)
		}
	}
}

func TestPageSize(t *testing.T) {
	for _, tc := range []struct{ in, want int }{{-1, 1000}, {0, 1000}, {1, 1}, {1000, 1000}, {1001, 1000}} {
		if got := storage.PageSize(tc.in); got != tc.want {
			t.Errorf("PageSize(%d) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestPrefixedConformance(t *testing.T) {
	storagetest.RunConformanceTests(t, func(t *testing.T) storage.Bucket {
		p, err := storage.Prefixed(memstore.New(), "/global/tenant/")
		if err != nil {
			t.Fatal(err)
		}
		return p
	})
}

func TestPrefixed(t *testing.T) {
	ctx := t.Context()
	inner := memstore.New()
	if b, err := storage.Prefixed(inner, ""); err != nil || b != storage.Bucket(inner) {
		t.Errorf("Prefixed with an empty prefix = %v, %v; want the bucket itself", b, err)
	}
	if _, err := storage.Prefixed(inner, "a/../b"); !errors.Is(err, storage.ErrInvalidKey) {
		t.Errorf("Prefixed with an invalid prefix = %v, want ErrInvalidKey", err)
	}
	p, err := storage.Prefixed(inner, "/t1/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Put(ctx, "k", strings.NewReader("v"), storage.PutOptions{Size: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := inner.Stat(ctx, "t1/k"); err != nil {
		t.Errorf("Prefixed put did not land at t1/k: %v", err)
	}
	// Keys outside the prefix are invisible through it.
	if _, err := inner.Put(ctx, "t2/k", strings.NewReader("w"), storage.PutOptions{Size: 1}); err != nil {
		t.Fatal(err)
	}
	page, err := p.List(ctx, storage.ListOptions{})
	if err != nil || len(page.Objects) != 1 || page.Objects[0].Key != "k" {
		t.Errorf("Prefixed List = %+v, %v; want only k", page, err)
	}
}

func TestCounter(t *testing.T) {
	ctx := t.Context()
	c := storage.NewCounter(memstore.New())
	c.Put(ctx, "a", strings.NewReader("x"), storage.PutOptions{Size: 1})
	c.Put(ctx, "a", strings.NewReader("x"), storage.PutOptions{Size: 1, IfNoneMatch: "*"}) // fails, still costs a request
	storage.ReadAll(ctx, c, "a")
	c.Stat(ctx, "missing")
	c.List(ctx, storage.ListOptions{})
	c.Delete(ctx, "a")
	before := c.Counts()
	want := storage.Counts{Get: 1, Put: 2, Head: 1, List: 1, Delete: 1}
	if before != want || before.Total() != 6 {
		t.Errorf("Counts = %+v (total %d), want %+v", before, before.Total(), want)
	}
	c.Stat(ctx, "a")
	if d := c.Counts().Sub(before); d != (storage.Counts{Head: 1}) {
		t.Errorf("Sub = %+v, want one HEAD", d)
	}
}

func TestWalk(t *testing.T) {
	ctx := t.Context()
	b := memstore.New()
	var want []string
	for i := range 2500 {
		k := fmt.Sprintf("w/%05d", i)
		want = append(want, k)
		if _, err := b.Put(ctx, k, strings.NewReader("x"), storage.PutOptions{Size: 1}); err != nil {
			t.Fatal(err)
		}
	}
	c := storage.NewCounter(b)
	var got []string
	for a, err := range storage.Walk(ctx, c, storage.ListOptions{Prefix: "w/", StartAfter: "w/00499"}) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.Key)
	}
	if !slices.Equal(got, want[500:]) {
		t.Errorf("Walk returned %d keys, want %d in order", len(got), len(want)-500)
	}
	if n := c.Counts().List; n != 2 {
		t.Errorf("Walk made %d List requests, want 2", n)
	}
	// Stopping early makes no further requests.
	c2 := storage.NewCounter(b)
	for range storage.Walk(ctx, c2, storage.ListOptions{}) {
		break
	}
	if n := c2.Counts().List; n != 1 {
		t.Errorf("an abandoned Walk made %d List requests, want 1", n)
	}
	// Errors are yielded, and end the walk.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	n := 0
	for _, err := range storage.Walk(cctx, b, storage.ListOptions{}) {
		n++
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Walk error = %v, want context.Canceled", err)
		}
	}
	if n != 1 {
		t.Errorf("Walk yielded %d times after an error, want 1", n)
	}
}

func TestDeleteAll(t *testing.T) {
	b := memstore.New()
	keys := []string{"a/1", "a/2", "a/b/3", "ab", "b/1"}
	for i := range 1500 {
		keys = append(keys, fmt.Sprintf("a/many/%04d", i))
	}
	for _, k := range keys {
		if _, err := b.Put(t.Context(), k, strings.NewReader("x"), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := storage.DeleteAll(t.Context(), b, "a/", 8); err != nil {
		t.Fatal(err)
	}
	var left []string
	for a, err := range storage.Walk(t.Context(), b, storage.ListOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		left = append(left, a.Key)
	}
	if want := []string{"ab", "b/1"}; !slices.Equal(left, want) {
		t.Errorf("after DeleteAll(a/): %q, want %q", left, want)
	}
}

// Prefixed and Counter keep the streaming capability of what they wrap.
func TestWrappedUpload(t *testing.T) {
	storagetest.RunUploadTests(t, func(t *testing.T) storage.Bucket {
		p, err := storage.Prefixed(memstore.New(), "global/tenant")
		if err != nil {
			t.Fatal(err)
		}
		return storage.NewCounter(p)
	}, 1<<20)
}

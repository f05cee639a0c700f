//go:build unix

package filestore_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"fhirbucket/storage"
	"fhirbucket/storage/filestore"
)

func putString(t *testing.T, b storage.Bucket, key, body string) storage.Attrs {
	t.Helper()
	a, err := b.Put(t.Context(), key, strings.NewReader(body), storage.PutOptions{Size: int64(len(body)), ContentType: "application/fhir+json"})
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	return a
}

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
	}{
		{"missing", filepath.Join(dir, "missing")},
		{"not-a-folder", file},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := filestore.Open(tc.path)
			if !errors.Is(err, storage.ErrBucketNotFound) {
				t.Fatalf("Open(%s) = %v, want ErrBucketNotFound", tc.path, err)
			}
			if b != nil {
				t.Error("Open returned a bucket with its error")
			}
			if !strings.Contains(err.Error(), tc.path) {
				t.Errorf("error %q does not name the folder %s", err, tc.path)
			}
		})
	}
	t.Run("create", func(t *testing.T) {
		path := filepath.Join(dir, "new", "data")
		b, err := filestore.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		putString(t, b, "k", "v")
		if _, err := os.Stat(filepath.Join(path, "k")); err != nil {
			t.Errorf("Create did not use the folder: %v", err)
		}
	})
}

// The layout is a public contract: a key is the relative path of a file
// holding exactly the body.
func TestLayout(t *testing.T) {
	dir := t.TempDir()
	b, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	const key, body = "resources/Patient/p1/current.json", `{"resourceType":"Patient"}`
	putString(t, b, key, body)
	data, err := os.ReadFile(filepath.Join(dir, "resources", "Patient", "p1", "current.json"))
	if err != nil || string(data) != body {
		t.Fatalf("file content = %q, %v; want %q", data, err, body)
	}
	// A file written by hand is an object, with a new ETag.
	before, _ := b.Stat(t.Context(), key)
	if err := os.WriteFile(filepath.Join(dir, "resources", "Patient", "p1", "current.json"), []byte(`{}`), 0o644); err != nil {
		t.Fatal(err)
	}
	after, err := b.Stat(t.Context(), key)
	if err != nil || after.ETag == before.ETag || after.Size != 2 {
		t.Errorf("after a hand edit Stat = %+v, %v; want size 2 and an ETag other than %q", after, err, before.ETag)
	}
}

func TestReservedFolder(t *testing.T) {
	dir := t.TempDir()
	b, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	putString(t, b, "a", "x")
	// A put that fails after writing its temporary file leaves nothing.
	_, err = b.Put(t.Context(), "short", strings.NewReader("abc"), storage.PutOptions{Size: 10})
	if !errors.Is(err, storage.ErrInvalidArgument) {
		t.Errorf("Put with a wrong Size = %v, want ErrInvalidArgument", err)
	}
	for _, key := range []string{filestore.ReservedDir + "/tmp/x", filestore.ReservedDir, ".FHIRBUCKET/locks/00"} {
		_, err := b.Put(t.Context(), key, strings.NewReader("x"), storage.PutOptions{Size: 1})
		if !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Put(%q) = %v, want ErrInvalidKey", key, err)
		}
		if _, err := b.Stat(t.Context(), key); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Stat(%q) = %v, want ErrInvalidKey", key, err)
		}
		if err := b.Delete(t.Context(), key); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Delete(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
	for _, opts := range []storage.ListOptions{{}, {Delimiter: "/"}, {Prefix: "."}, {Prefix: filestore.ReservedDir + "/"}} {
		page, err := b.List(t.Context(), opts)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, o := range page.Objects {
			got = append(got, o.Key)
		}
		got = append(got, page.Prefixes...)
		want := "a"
		if opts.Prefix != "" {
			want = ""
		}
		if strings.Join(got, ",") != want {
			t.Errorf("List(%+v) = %q, want only %q", opts, got, want)
		}
	}
	tmp, err := os.ReadDir(filepath.Join(dir, filestore.ReservedDir, "tmp"))
	if err != nil || len(tmp) != 0 {
		t.Errorf("temporary files left behind: %v, %v", tmp, err)
	}
}

func TestFolderObjectCollision(t *testing.T) {
	b, err := filestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	putString(t, b, "file", "x")
	putString(t, b, "folder/child", "y")
	for _, key := range []string{"file/child", "folder", "file/a/b"} {
		_, err := b.Put(t.Context(), key, strings.NewReader("z"), storage.PutOptions{Size: 1})
		if !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Put(%q) = %v, want ErrInvalidKey", key, err)
		}
	}
	if _, err := b.Stat(t.Context(), "folder"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Stat of a folder = %v, want ErrNotExist", err)
	}
	if err := b.Delete(t.Context(), "folder"); err != nil {
		t.Errorf("Delete of a folder = %v, want nil (no such object)", err)
	}
	if _, err := b.Stat(t.Context(), "folder/child"); err != nil {
		t.Errorf("Delete of the folder's name removed its child: %v", err)
	}
}

func TestLongSegment(t *testing.T) {
	b, err := filestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	key := "a/" + strings.Repeat("x", 300)
	_, err = b.Put(t.Context(), key, strings.NewReader("z"), storage.PutOptions{Size: 1})
	if !errors.Is(err, storage.ErrInvalidKey) {
		t.Errorf("Put of a 300-byte segment = %v, want ErrInvalidKey", err)
	}
}

func TestDeleteRemovesEmptyFolders(t *testing.T) {
	dir := t.TempDir()
	b, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	putString(t, b, "a/b/c/d", "1")
	putString(t, b, "a/x", "2")
	if err := b.Delete(t.Context(), "a/b/c/d"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a", "b")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty folder a/b left behind: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a", "x")); err != nil {
		t.Errorf("sibling removed: %v", err)
	}
	if err := b.Delete(t.Context(), "a/x"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty folder a left behind: %v", err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Errorf("root removed: %v", err)
	}
}

func TestETagChangesOnEveryWrite(t *testing.T) {
	b, err := filestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	seen := map[string]int{}
	var prev storage.Attrs
	for i := range 200 {
		// Identical bytes, rewritten as fast as possible: only the
		// driver's modification-time rule keeps the ETags apart.
		opts := storage.PutOptions{Size: 4}
		if i > 0 {
			opts.IfMatch = prev.ETag
		}
		a, err := b.Put(t.Context(), "k", strings.NewReader("same"), opts)
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if j, dup := seen[a.ETag]; dup {
			t.Fatalf("writes %d and %d share ETag %s", j, i, a.ETag)
		}
		seen[a.ETag] = i
		prev = a
	}
}

func TestSymlinksStayInside(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	b, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(dir, "secretlink")); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"escape/secret", "secretlink"} {
		if rc, _, err := b.Get(t.Context(), key); err == nil {
			rc.Close()
			t.Errorf("Get(%q) read a file outside the root", key)
		}
	}
	if _, err := b.Put(t.Context(), "escape/new", strings.NewReader("x"), storage.PutOptions{Size: 1}); err == nil {
		t.Error("Put through a symlink to outside the root succeeded")
	}
	if err := b.Delete(t.Context(), "escape/secret"); err == nil {
		if _, err := os.Stat(filepath.Join(outside, "secret")); err != nil {
			t.Error("Delete removed a file outside the root")
		}
	}
	entries, _ := os.ReadDir(outside)
	if len(entries) != 1 {
		t.Errorf("outside folder changed: %v", entries)
	}
	page, err := b.List(t.Context(), storage.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Objects) != 0 || len(page.Prefixes) != 0 {
		t.Errorf("List shows symlinks: %+v", page)
	}
}

func TestMissingFolderIsNotEmpty(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	b, err := filestore.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	_, err = b.List(t.Context(), storage.ListOptions{})
	if !errors.Is(err, storage.ErrBucketNotFound) {
		t.Errorf("List of a removed folder = %v, want ErrBucketNotFound", err)
	}
}

// A write's modification time is always after the replaced file's, even
// when the clock is behind it (a stepped-back clock, or a file copied in
// from a machine whose clock ran ahead). This is what keeps ETags unique
// when inode numbers are reused within one clock tick.
func TestModTimeNeverGoesBackwards(t *testing.T) {
	dir := t.TempDir()
	b, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	putString(t, b, "k", "same")
	future := time.Now().Add(time.Hour).Truncate(time.Second)
	if err := os.Chtimes(filepath.Join(dir, "k"), future, future); err != nil {
		t.Fatal(err)
	}
	old, err := b.Stat(t.Context(), "k")
	if err != nil {
		t.Fatal(err)
	}
	a, err := b.Put(t.Context(), "k", strings.NewReader("same"), storage.PutOptions{Size: 4, IfMatch: old.ETag})
	if err != nil {
		t.Fatal(err)
	}
	if !a.ModTime.After(future) {
		t.Errorf("rewrite has ModTime %v, not after the replaced file's %v", a.ModTime, future)
	}
	if a.ETag == old.ETag {
		t.Errorf("rewrite kept ETag %s", a.ETag)
	}
}

// Deleting a key removes the folders it leaves empty while other
// goroutines put keys into those same folders: every put must still land.
func TestPutRacesFolderCleanup(t *testing.T) {
	b, err := filestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := range 50 {
				key := fmt.Sprintf("deep/a/b/c/w%d-%d", w, i)
				if _, err := b.Put(t.Context(), key, strings.NewReader("x"), storage.PutOptions{Size: 1}); err != nil {
					errs <- fmt.Errorf("Put(%q): %w", key, err)
					return
				}
				if _, err := b.Stat(t.Context(), key); err != nil {
					errs <- fmt.Errorf("Stat(%q) after Put: %w", key, err)
					return
				}
				if err := b.Delete(t.Context(), key); err != nil {
					errs <- fmt.Errorf("Delete(%q): %w", key, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	page, err := b.List(t.Context(), storage.ListOptions{})
	if err != nil || len(page.Objects) != 0 {
		t.Errorf("List after deleting everything = %+v, %v", page, err)
	}
}

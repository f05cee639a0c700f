//go:build unix

package filestore_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"fhirbucket/storage"
	"fhirbucket/storage/filestore"
	"fhirbucket/storage/storagetest"
)

// FuzzKeyConfinement puts an arbitrary key: either it is rejected and
// nothing is written, or the object is exactly the file root/key. In no
// case does a file appear anywhere else, inside or outside the root.
func FuzzKeyConfinement(f *testing.F) {
	seeds := []string{"a", "a/b/c.json", ".fhirbucket/x", "..a", "a..", "~", "a/.../b", ".FhirBucket"}
	for _, k := range append(seeds, storagetest.InvalidKeys...) {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		parent := t.TempDir()
		root := filepath.Join(parent, "root")
		b, err := filestore.Create(root)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		_, err = b.Put(t.Context(), key, strings.NewReader("fuzz"), storage.PutOptions{Size: 4})
		var files []string
		filepath.WalkDir(parent, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !strings.HasPrefix(p, filepath.Join(root, filestore.ReservedDir)+"/") {
				files = append(files, p)
			}
			return nil
		})
		if err != nil {
			if !errors.Is(err, storage.ErrInvalidKey) {
				t.Fatalf("Put(%q) failed with %v, want success or ErrInvalidKey", key, err)
			}
			if len(files) != 0 {
				t.Fatalf("rejected Put(%q) wrote %q", key, files)
			}
			return
		}
		want := filepath.Join(root, filepath.FromSlash(key))
		if len(files) != 1 || files[0] != want {
			t.Fatalf("Put(%q) wrote %q, want exactly %s", key, files, want)
		}
		if data, err := os.ReadFile(want); err != nil || string(data) != "fuzz" {
			t.Fatalf("file %s = %q, %v", want, data, err)
		}
	})
}

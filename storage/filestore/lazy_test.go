//go:build unix

package filestore

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"fhirbucket/storage"
)

// List reads only the folders a page needs: those on the prefix's path,
// none whose keys all sort before StartAfter, and none after the page is
// full.
func TestListReadsOnlyNeededFolders(t *testing.T) {
	b, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := range 5 {
		for j := range 3 {
			key := fmt.Sprintf("r/T%d/id%d/v", i, j)
			if _, err := b.Put(t.Context(), key, strings.NewReader("x"), storage.PutOptions{Size: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var mu sync.Mutex
	var read []string
	readDirHook = func(dir string) { mu.Lock(); read = append(read, dir); mu.Unlock() }
	t.Cleanup(func() { readDirHook = nil })

	tests := []struct {
		name     string
		opts     storage.ListOptions
		wantKeys []string
		wantRead []string
	}{
		{
			name:     "deep-prefix",
			opts:     storage.ListOptions{Prefix: "r/T2/id1/"},
			wantKeys: []string{"r/T2/id1/v"},
			wantRead: []string{"r/T2/id1/"},
		},
		{
			name:     "partial-segment-prefix",
			opts:     storage.ListOptions{Prefix: "r/T4/i", MaxKeys: 1},
			wantKeys: []string{"r/T4/id0/v"},
			wantRead: []string{"r/T4/", "r/T4/id0/", "r/T4/id1/"},
		},
		{
			name:     "start-after-skips-earlier-folders",
			opts:     storage.ListOptions{StartAfter: "r/T3/id2/v", MaxKeys: 1},
			wantKeys: []string{"r/T4/id0/v"},
			wantRead: []string{".", "r/", "r/T3/", "r/T3/id2/", "r/T4/", "r/T4/id0/", "r/T4/id1/"},
		},
		{
			name:     "first-page-stops-early",
			opts:     storage.ListOptions{MaxKeys: 2},
			wantKeys: []string{"r/T0/id0/v", "r/T0/id1/v"},
			wantRead: []string{".", "r/", "r/T0/", "r/T0/id0/", "r/T0/id1/", "r/T0/id2/"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			read = nil
			mu.Unlock()
			page, err := b.List(t.Context(), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, o := range page.Objects {
				keys = append(keys, o.Key)
			}
			if !slices.Equal(keys, tc.wantKeys) {
				t.Errorf("keys %q, want %q", keys, tc.wantKeys)
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.Equal(read, tc.wantRead) {
				t.Errorf("folders read %q, want %q", read, tc.wantRead)
			}
		})
	}
}

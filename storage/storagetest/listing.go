package storagetest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"fhirbucket/storage"
)

func testListOrder(t *testing.T, b storage.Bucket) {
	for _, k := range orderKeys {
		put(t, b, k, k, storage.PutOptions{})
	}
	want := slices.Clone(orderKeys)
	slices.Sort(want) // Go compares strings byte-wise, as S3 does.
	for _, max := range []int{0, 1, 2, 5} {
		objs, _, _ := listAll(t, b, storage.ListOptions{MaxKeys: max})
		wantKeys(t, fmt.Sprintf("List MaxKeys=%d", max), keysOf(objs), want)
	}
	objs, _, _ := listAll(t, b, storage.ListOptions{Prefix: "a"})
	var wantA []string
	for _, k := range want {
		if strings.HasPrefix(k, "a") {
			wantA = append(wantA, k)
		}
	}
	wantKeys(t, "List Prefix=a", keysOf(objs), wantA)
}

func testListPrefix(t *testing.T, b storage.Bucket) {
	keys := []string{"p/1", "p/2", "p/q/3", "pp", "pq/4", "q", "o/p/5"}
	for _, k := range keys {
		put(t, b, k, k, storage.PutOptions{})
	}
	for _, tc := range []struct {
		prefix string
		want   []string
	}{
		{"", []string{"o/p/5", "p/1", "p/2", "p/q/3", "pp", "pq/4", "q"}},
		{"p", []string{"p/1", "p/2", "p/q/3", "pp", "pq/4"}},
		{"p/", []string{"p/1", "p/2", "p/q/3"}},
		{"p/q", []string{"p/q/3"}},
		{"p/q/3", []string{"p/q/3"}},
		{"pq/", []string{"pq/4"}},
		{"r", nil},
		{"p/z", nil},
		{"nothing/here/", nil},
	} {
		objs, _, _ := listAll(t, b, storage.ListOptions{Prefix: tc.prefix})
		wantKeys(t, fmt.Sprintf("List Prefix=%q", tc.prefix), keysOf(objs), tc.want)
	}
	page, err := b.List(t.Context(), storage.ListOptions{Prefix: "none/"})
	if err != nil || len(page.Objects) != 0 || len(page.Prefixes) != 0 || page.Next != "" {
		t.Errorf("List of an empty prefix = %+v, %v; want an empty page", page, err)
	}
}

func testListStartAfter(t *testing.T, b storage.Bucket) {
	keys := []string{"k/1", "k/2", "k/3/x", "k/4", "l"}
	for _, k := range keys {
		put(t, b, k, k, storage.PutOptions{})
	}
	for _, tc := range []struct {
		prefix, after string
		want          []string
	}{
		{"", "", keys},
		{"", "k/2", []string{"k/3/x", "k/4", "l"}},
		{"", "k/2x", []string{"k/3/x", "k/4", "l"}},
		{"", "k/3", []string{"k/3/x", "k/4", "l"}},
		{"", "k/3/x", []string{"k/4", "l"}},
		{"", "k/3/", []string{"k/3/x", "k/4", "l"}},
		{"", "j", keys},
		{"", "l", nil},
		{"", "zzz", nil},
		{"k/", "k/1", []string{"k/2", "k/3/x", "k/4"}},
		{"k/", "a", []string{"k/1", "k/2", "k/3/x", "k/4"}},
		{"k/", "k/4", nil},
		{"", storage.AfterPrefix("k/"), []string{"l"}},
		{"", storage.AfterPrefix("k/3/"), []string{"k/4", "l"}},
	} {
		objs, _, _ := listAll(t, b, storage.ListOptions{Prefix: tc.prefix, StartAfter: tc.after})
		wantKeys(t, fmt.Sprintf("List Prefix=%q StartAfter=%q", tc.prefix, tc.after), keysOf(objs), tc.want)
	}
}

// delimKeys in byte order; the listings below are derived by hand.
var delimKeys = []string{"a/1", "a/2", "b/x/1", "b/x/2", "b/y", "c", "d/e/f", "e", "f/g"}

func testListDelimiter(t *testing.T, b storage.Bucket) {
	for _, k := range delimKeys {
		put(t, b, k, k, storage.PutOptions{})
	}
	for _, tc := range []struct {
		prefix, after string
		objects       []string
		prefixes      []string
	}{
		{"", "", []string{"c", "e"}, []string{"a/", "b/", "d/", "f/"}},
		{"b/", "", []string{"b/y"}, []string{"b/x/"}},
		{"b", "", nil, []string{"b/"}},
		{"b/x/", "", []string{"b/x/1", "b/x/2"}, nil},
		{"d/", "", nil, []string{"d/e/"}},
		{"", "b", []string{"c", "e"}, []string{"b/", "d/", "f/"}},
		{"", storage.AfterPrefix("b/"), []string{"c", "e"}, []string{"d/", "f/"}},
		{"", "c", []string{"e"}, []string{"d/", "f/"}},
		// A StartAfter inside a common prefix still reports the prefix
		// when keys after it remain below it.
		{"", "b/x/2", []string{"c", "e"}, []string{"b/", "d/", "f/"}},
		{"", "b/y", []string{"c", "e"}, []string{"d/", "f/"}},
		{"z/", "", nil, nil},
	} {
		objs, prefixes, _ := listAll(t, b, storage.ListOptions{Prefix: tc.prefix, StartAfter: tc.after, Delimiter: "/"})
		what := fmt.Sprintf("List Prefix=%q StartAfter=%q Delimiter=/", tc.prefix, tc.after)
		wantKeys(t, what+" objects", keysOf(objs), tc.objects)
		wantKeys(t, what+" prefixes", prefixes, tc.prefixes)
	}
}

func testListDelimiterPaging(t *testing.T, b storage.Bucket) {
	for _, k := range delimKeys {
		put(t, b, k, k, storage.PutOptions{})
	}
	// The entries of the root listing in order, prefixes and objects merged.
	want := []string{"a/", "b/", "c", "d/", "e", "f/"}
	for _, max := range []int{1, 2, 3, 4, 6, 7} {
		opts := storage.ListOptions{Delimiter: "/", MaxKeys: max}
		var got []string
		pages := 0
		for {
			page, err := b.List(t.Context(), opts)
			if err != nil {
				t.Fatal(err)
			}
			pages++
			if n := len(page.Objects) + len(page.Prefixes); n > max {
				t.Fatalf("MaxKeys=%d: page has %d entries", max, n)
			}
			entries := append(keysOf(page.Objects), page.Prefixes...)
			slices.Sort(entries)
			got = append(got, entries...)
			if page.Next == "" {
				break
			}
			if last := entries[len(entries)-1]; strings.HasSuffix(last, "/") {
				if page.Next != storage.AfterPrefix(last) {
					t.Errorf("MaxKeys=%d: page ending in prefix %q has Next %q, want %q", max, last, page.Next, storage.AfterPrefix(last))
				}
			}
			if pages > len(want)+1 {
				t.Fatalf("MaxKeys=%d: listing does not end", max)
			}
			opts.StartAfter = page.Next
		}
		wantKeys(t, fmt.Sprintf("paged delimiter listing MaxKeys=%d", max), got, want)
		if minPages := (len(want) + max - 1) / max; pages < minPages || pages > minPages+1 {
			t.Errorf("MaxKeys=%d: %d pages, want %d (or one more, empty)", max, pages, minPages)
		}
	}
}

func testListInvalidDelimiter(t *testing.T, b storage.Bucket) {
	put(t, b, "a/b", "x", storage.PutOptions{})
	for _, d := range []string{",", "//", "a", "\\"} {
		_, err := b.List(t.Context(), storage.ListOptions{Delimiter: d})
		wantErr(t, fmt.Sprintf("List Delimiter=%q", d), err, storage.ErrInvalidArgument)
	}
}

// putParallel writes keys with a bounded number of concurrent puts, so a
// remote store fills quickly without tripping its rate limits.
func putParallel(t testing.TB, b storage.Bucket, keys []string, workers int) {
	t.Helper()
	ch := make(chan string)
	var (
		mu       sync.Mutex
		firstErr error
		wg       sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			for k := range ch {
				if _, err := b.Put(context.Background(), k, strings.NewReader(k), storage.PutOptions{Size: int64(len(k))}); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("Put(%q): %w", k, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, k := range keys {
		mu.Lock()
		failed := firstErr != nil
		mu.Unlock()
		if failed {
			break
		}
		ch <- k
	}
	close(ch)
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
}

func testListPagination(t *testing.T, b storage.Bucket) {
	const n = 1100
	keys := make([]string, n)
	for i := range keys {
		// Spread over folders so that a driver walking directories must
		// carry its position across them.
		keys[i] = fmt.Sprintf("pg/%02d/%04d", i%11, i)
	}
	putParallel(t, b, keys, 16)
	want := slices.Clone(keys)
	slices.Sort(want)

	page, err := b.List(t.Context(), storage.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Objects) == 0 || len(page.Objects) > storage.MaxListKeys || page.Next == "" {
		t.Fatalf("first default page: %d objects, Next %q; want 1..1000 and a Next", len(page.Objects), page.Next)
	}
	for _, tc := range []struct {
		max      int
		minPages int
	}{{0, 2}, {5000, 2}, {-1, 2}, {7, n / 7}, {333, 4}} {
		objs, _, pages := listAll(t, b, storage.ListOptions{MaxKeys: tc.max})
		wantKeys(t, fmt.Sprintf("every key once, in order, MaxKeys=%d", tc.max), keysOf(objs), want)
		if pages < tc.minPages {
			t.Errorf("MaxKeys=%d: %d pages, want at least %d", tc.max, pages, tc.minPages)
		}
	}
	var walked []string
	for a, err := range storage.Walk(t.Context(), b, storage.ListOptions{Prefix: "pg/0"}) {
		if err != nil {
			t.Fatal(err)
		}
		walked = append(walked, a.Key)
	}
	var want0 []string
	for _, k := range want {
		if strings.HasPrefix(k, "pg/0") {
			want0 = append(want0, k)
		}
	}
	wantKeys(t, "Walk Prefix=pg/0", walked, want0)
}

// Package storagetest holds what every storage driver and every package
// built on storage share for testing: the conformance suite
// (RunConformanceTests) that each driver's test file runs against a fresh
// bucket, the driver benchmarks (RunBenchmarks), and Faulty, a
// fault-injecting storage.Bucket wrapper for crash and retry tests.
//
// The suite states the storage.Bucket contract as executable checks; a
// driver that passes it can be swapped for any other without the layers
// above noticing.
package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"fhirbucket/storage"
)

// RunConformanceTests runs the storage.Bucket contract against a driver.
// Each call of newBucket must return a fresh, empty namespace (a new
// folder, a new in-memory bucket, or a unique storage.Prefixed prefix of a
// shared S3 bucket); the suite calls it once per subtest and never assumes
// anything is cleaned up for it.
func RunConformanceTests(t *testing.T, newBucket func(t *testing.T) storage.Bucket) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, b storage.Bucket)
	}{
		{"round-trip", testRoundTrip},
		{"content-type-empty", testContentTypeEmpty},
		{"overwrite", testOverwrite},
		{"missing-key", testMissingKey},
		{"delete", testDelete},
		{"if-none-match", testIfNoneMatch},
		{"if-match", testIfMatch},
		{"invalid-put-options", testInvalidPutOptions},
		{"invalid-keys", testInvalidKeys},
		{"key-shapes", testKeyShapes},
		{"list-order", testListOrder},
		{"list-prefix", testListPrefix},
		{"list-start-after", testListStartAfter},
		{"list-delimiter", testListDelimiter},
		{"list-delimiter-paging", testListDelimiterPaging},
		{"list-invalid-delimiter", testListInvalidDelimiter},
		{"list-pagination-1100-keys", testListPagination},
		{"race-create-only", testRaceCreateOnly},
		{"race-if-match", testRaceIfMatch},
		{"atomic-overwrite", testAtomicOverwrite},
		{"context-cancelled", testContextCancelled},
		{"context-cancelled-mid-body", testContextCancelledMidBody},
		{"large-object-5MiB", testLargeObject},
		{"unknown-size-body", testUnknownSize},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newBucket(t))
		})
	}
}

const fhirJSON = "application/fhir+json"

// put writes body at key and fails the test on error.
func put(t testing.TB, b storage.Bucket, key, body string, opts storage.PutOptions) storage.Attrs {
	t.Helper()
	if opts.Size == 0 && body != "" {
		opts.Size = int64(len(body))
	}
	a, err := b.Put(context.Background(), key, strings.NewReader(body), opts)
	if err != nil {
		t.Fatalf("Put(%q): %v", key, err)
	}
	if a.ETag == "" {
		t.Fatalf("Put(%q) returned an empty ETag", key)
	}
	return a
}

// get reads key and fails the test on error.
func get(t testing.TB, b storage.Bucket, key string) (string, storage.Attrs) {
	t.Helper()
	data, a, err := storage.ReadAll(t.Context(), b, key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return string(data), a
}

// listAll follows Next until the listing ends and returns every key and
// common prefix in the order received. It checks the page-size bound on
// every page and guards against a Next that does not advance.
func listAll(t testing.TB, b storage.Bucket, opts storage.ListOptions) (objects []storage.Attrs, prefixes []string, pages int) {
	t.Helper()
	limit := storage.PageSize(opts.MaxKeys)
	for {
		page, err := b.List(t.Context(), opts)
		if err != nil {
			t.Fatalf("List(%+v): %v", opts, err)
		}
		pages++
		if n := len(page.Objects) + len(page.Prefixes); n > limit {
			t.Fatalf("List(%+v) returned %d entries, more than the page size %d", opts, n, limit)
		}
		objects = append(objects, page.Objects...)
		prefixes = append(prefixes, page.Prefixes...)
		if page.Next == "" {
			return objects, prefixes, pages
		}
		if page.Next <= opts.StartAfter {
			t.Fatalf("List(%+v): Next %q does not advance", opts, page.Next)
		}
		if pages > 100000 {
			t.Fatalf("List(%+v): too many pages", opts)
		}
		opts.StartAfter = page.Next
	}
}

func keysOf(objs []storage.Attrs) []string {
	keys := make([]string, len(objs))
	for i, o := range objs {
		keys[i] = o.Key
	}
	return keys
}

func wantErr(t testing.TB, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got error %v, want %v", what, err, want)
	}
	var se *storage.Error
	if !errors.As(err, &se) {
		t.Errorf("%s: error %v is not a *storage.Error", what, err)
	}
}

func wantKeys(t testing.TB, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s:\n got  %q\n want %q", what, got, want)
	}
}

func testRoundTrip(t *testing.T, b storage.Bucket) {
	const key, body = "resources/Patient/p1/current.json", `{"resourceType":"Patient","id":"p1"}`
	before := time.Now()
	pa := put(t, b, key, body, storage.PutOptions{ContentType: fhirJSON, Size: int64(len(body))})
	if pa.Key != key || pa.Size != int64(len(body)) {
		t.Errorf("Put attrs = %+v, want key %q size %d", pa, key, len(body))
	}
	got, ga := get(t, b, key)
	if got != body {
		t.Errorf("Get body = %q, want %q", got, body)
	}
	sa, err := b.Stat(t.Context(), key)
	if err != nil {
		t.Fatalf("Stat: %v", err)
	}
	objs, _, _ := listAll(t, b, storage.ListOptions{})
	if len(objs) != 1 {
		t.Fatalf("List returned %d objects, want 1", len(objs))
	}
	for _, c := range []struct {
		name string
		a    storage.Attrs
	}{{"Get", ga}, {"Stat", sa}, {"List", objs[0]}} {
		if c.a.Key != key {
			t.Errorf("%s key = %q, want %q", c.name, c.a.Key, key)
		}
		if c.a.Size != int64(len(body)) {
			t.Errorf("%s size = %d, want %d", c.name, c.a.Size, len(body))
		}
		if c.a.ETag != pa.ETag {
			t.Errorf("%s ETag = %q, want the Put ETag %q", c.name, c.a.ETag, pa.ETag)
		}
		// Remote stores round ModTime to seconds and their clocks drift:
		// allow a generous window, but reject zero or absurd times.
		if c.a.ModTime.Before(before.Add(-5*time.Minute)) || c.a.ModTime.After(time.Now().Add(5*time.Minute)) {
			t.Errorf("%s ModTime = %v, not close to now (%v)", c.name, c.a.ModTime, before)
		}
		if c.name != "List" && c.a.ContentType != fhirJSON {
			t.Errorf("%s ContentType = %q, want %q", c.name, c.a.ContentType, fhirJSON)
		}
	}
}

func testContentTypeEmpty(t *testing.T, b storage.Bucket) {
	put(t, b, "plain", "x", storage.PutOptions{})
	_, ga := get(t, b, "plain")
	if ga.ContentType != "" {
		t.Errorf("Get ContentType = %q, want empty (none was given)", ga.ContentType)
	}
	sa, err := b.Stat(t.Context(), "plain")
	if err != nil {
		t.Fatal(err)
	}
	if sa.ContentType != "" {
		t.Errorf("Stat ContentType = %q, want empty (none was given)", sa.ContentType)
	}
}

func testOverwrite(t *testing.T, b storage.Bucket) {
	const key = "a/b/c.json"
	first := put(t, b, key, "first version", storage.PutOptions{ContentType: "text/plain"})
	second := put(t, b, key, "second, longer version", storage.PutOptions{ContentType: fhirJSON})
	if first.ETag == second.ETag {
		t.Errorf("overwrite kept ETag %q", first.ETag)
	}
	got, ga := get(t, b, key)
	if got != "second, longer version" || ga.ETag != second.ETag || ga.ContentType != fhirJSON || ga.Size != int64(len(got)) {
		t.Errorf("after overwrite Get = %q %+v, want the second version with ETag %q", got, ga, second.ETag)
	}
	objs, _, _ := listAll(t, b, storage.ListOptions{})
	wantKeys(t, "List after overwrite", keysOf(objs), []string{key})
	if objs[0].ETag != second.ETag {
		t.Errorf("List ETag = %q, want %q", objs[0].ETag, second.ETag)
	}
}

func testMissingKey(t *testing.T, b storage.Bucket) {
	put(t, b, "present", "x", storage.PutOptions{})
	for _, key := range []string{"absent", "present/child", "presen", "a/b/c"} {
		rc, _, err := b.Get(t.Context(), key)
		if err == nil {
			rc.Close()
		}
		wantErr(t, "Get "+key, err, storage.ErrNotExist)
		_, err = b.Stat(t.Context(), key)
		wantErr(t, "Stat "+key, err, storage.ErrNotExist)
		if err := b.Delete(t.Context(), key); err != nil {
			t.Errorf("Delete of missing %q = %v, want nil", key, err)
		}
	}
	if got, _ := get(t, b, "present"); got != "x" {
		t.Errorf("deleting missing keys changed a neighbour: %q", got)
	}
}

func testDelete(t *testing.T, b storage.Bucket) {
	for _, k := range []string{"d/1", "d/2", "d/sub/3", "e"} {
		put(t, b, k, "v-"+k, storage.PutOptions{})
	}
	for _, k := range []string{"d/2", "d/sub/3"} {
		if err := b.Delete(t.Context(), k); err != nil {
			t.Fatalf("Delete(%q): %v", k, err)
		}
		_, err := b.Stat(t.Context(), k)
		wantErr(t, "Stat after delete", err, storage.ErrNotExist)
		// A second delete of the same key is not an error.
		if err := b.Delete(t.Context(), k); err != nil {
			t.Errorf("second Delete(%q) = %v, want nil", k, err)
		}
	}
	objs, _, _ := listAll(t, b, storage.ListOptions{})
	wantKeys(t, "List after delete", keysOf(objs), []string{"d/1", "e"})
	_, prefixes, _ := listAll(t, b, storage.ListOptions{Prefix: "d/", Delimiter: "/"})
	wantKeys(t, "common prefixes after deleting the only key below d/sub/", prefixes, nil)
	// The key can be created again, create-only.
	put(t, b, "d/sub/3", "again", storage.PutOptions{IfNoneMatch: "*"})
	if got, _ := get(t, b, "d/sub/3"); got != "again" {
		t.Errorf("recreated body = %q", got)
	}
}

func testIfNoneMatch(t *testing.T, b storage.Bucket) {
	a := put(t, b, "k", "one", storage.PutOptions{IfNoneMatch: "*"})
	_, err := b.Put(t.Context(), "k", strings.NewReader("two"), storage.PutOptions{IfNoneMatch: "*", Size: 3})
	wantErr(t, "create-only put of an existing key", err, storage.ErrPreconditionFailed)
	got, ga := get(t, b, "k")
	if got != "one" || ga.ETag != a.ETag {
		t.Errorf("failed create-only put changed the object: %q %q", got, ga.ETag)
	}
}

func testIfMatch(t *testing.T, b storage.Bucket) {
	v1 := put(t, b, "k", "one", storage.PutOptions{})
	v2 := put(t, b, "k", "two", storage.PutOptions{IfMatch: v1.ETag})
	if v2.ETag == v1.ETag {
		t.Fatalf("If-Match put kept ETag %q", v1.ETag)
	}
	_, err := b.Put(t.Context(), "k", strings.NewReader("three"), storage.PutOptions{IfMatch: v1.ETag, Size: 5})
	wantErr(t, "If-Match with a stale ETag", err, storage.ErrPreconditionFailed)
	_, err = b.Put(t.Context(), "k", strings.NewReader("three"), storage.PutOptions{IfMatch: `"not-an-etag"`, Size: 5})
	wantErr(t, "If-Match with a made-up ETag", err, storage.ErrPreconditionFailed)
	if got, ga := get(t, b, "k"); got != "two" || ga.ETag != v2.ETag {
		t.Errorf("failed If-Match puts changed the object: %q %q", got, ga.ETag)
	}
	_, err = b.Put(t.Context(), "missing", strings.NewReader("x"), storage.PutOptions{IfMatch: v2.ETag, Size: 1})
	wantErr(t, "If-Match on a missing key", err, storage.ErrNotExist)
	_, err = b.Stat(t.Context(), "missing")
	wantErr(t, "Stat after a failed If-Match put", err, storage.ErrNotExist)
}

func testInvalidPutOptions(t *testing.T, b storage.Bucket) {
	v := put(t, b, "k", "one", storage.PutOptions{})
	for _, tc := range []struct {
		name string
		opts storage.PutOptions
	}{
		{"if-none-match-etag", storage.PutOptions{IfNoneMatch: v.ETag}},
		{"if-none-match-word", storage.PutOptions{IfNoneMatch: "yes"}},
		{"both-set", storage.PutOptions{IfNoneMatch: "*", IfMatch: v.ETag}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, key := range []string{"k", "new"} {
				tc.opts.Size = 3
				_, err := b.Put(t.Context(), key, strings.NewReader("two"), tc.opts)
				wantErr(t, "Put "+key, err, storage.ErrInvalidArgument)
			}
		})
	}
	if got, _ := get(t, b, "k"); got != "one" {
		t.Errorf("rejected puts changed the object: %q", got)
	}
	if _, err := b.Stat(t.Context(), "new"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("rejected put created the key: Stat = %v", err)
	}
}

// InvalidKeys are keys every driver must reject with ErrInvalidKey. It is
// exported so that layers above storage can reuse it.
var InvalidKeys = []string{
	"", ".", "..", "a/..", "../a", "a/../b", "a/./b", "a//b", "/a", "a/", "/",
	"a\x00b", "a\\b", "a\nb", "a\x7fb", "\xff", "a\xc3", "a\U0010FFFF",
	strings.Repeat("k", storage.MaxKeyLen+1),
}

func testInvalidKeys(t *testing.T, b storage.Bucket) {
	for _, key := range InvalidKeys {
		t.Run(fmt.Sprintf("%.40q", key), func(t *testing.T) {
			_, err := b.Put(t.Context(), key, strings.NewReader("x"), storage.PutOptions{Size: 1})
			wantErr(t, "Put", err, storage.ErrInvalidKey)
			_, err = b.Put(t.Context(), key, strings.NewReader("x"), storage.PutOptions{Size: 1, IfNoneMatch: "*"})
			wantErr(t, "create-only Put", err, storage.ErrInvalidKey)
			rc, _, err := b.Get(t.Context(), key)
			if err == nil {
				rc.Close()
			}
			wantErr(t, "Get", err, storage.ErrInvalidKey)
			_, err = b.Stat(t.Context(), key)
			wantErr(t, "Stat", err, storage.ErrInvalidKey)
			wantErr(t, "Delete", b.Delete(t.Context(), key), storage.ErrInvalidKey)
		})
	}
	// A long valid key works. It leaves 100 bytes for a harness's
	// storage.Prefixed prefix, and keeps segments within the 255-byte
	// file-name limit of local filesystems.
	seg := strings.Repeat("k", 200)
	long := strings.Join([]string{seg, seg, seg, seg, strings.Repeat("l", storage.MaxKeyLen-100-4*201)}, "/")
	put(t, b, long, "x", storage.PutOptions{})
	objs, _, _ := listAll(t, b, storage.ListOptions{})
	wantKeys(t, "List after the invalid puts", keysOf(objs), []string{long})
}

func testKeyShapes(t *testing.T, b storage.Bucket) {
	keys := []string{
		"dots.in.name.json",
		"dashes-and_underscores",
		".hidden-looking",
		"a/b/c/d/e/f/g/h/i/j",
		"resources/Patient/p-1.2/history/0000000000001.json",
		"unicode/é/ü/日本",
		"spaces in a name",
		"sym!$&'()*+,;=:@~",
		"x...y",
		"tenant/.../z",
	}
	for _, k := range keys {
		put(t, b, k, "body of "+k, storage.PutOptions{ContentType: fhirJSON})
	}
	for _, k := range keys {
		if got, a := get(t, b, k); got != "body of "+k || a.Key != k {
			t.Errorf("Get(%q) = %q key %q", k, got, a.Key)
		}
	}
	objs, _, _ := listAll(t, b, storage.ListOptions{})
	want := slices.Clone(keys)
	slices.Sort(want)
	wantKeys(t, "List", keysOf(objs), want)
}

// orderKeys expose a listing built from a plain recursive directory walk:
// such a walk returns "a/b" before "a.b" and "a-b", while byte order puts
// '-' (0x2d) and '.' (0x2e) before '/' (0x2f), and '0' and '_' after it.
var orderKeys = []string{
	"a-b", "a.b", "a/b", "a/c-d", "a/c.d", "a/c/e", "a0", "a_b", "ab", "a~",
	"A", "Z", "b", "é", "z-", "z.", "z/0", "z0",
}

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

// race runs fn in n goroutines released at the same moment and returns
// their results in goroutine order.
func race[T any](n int, fn func(i int) T) []T {
	out := make([]T, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			out[i] = fn(i)
		})
	}
	close(start)
	wg.Wait()
	return out
}

type putResult struct {
	attrs storage.Attrs
	err   error
}

// checkOneWinner asserts that exactly one put won, the others lost with
// ErrPreconditionFailed or ErrConflict, and the stored object is the
// winner's.
func checkOneWinner(t *testing.T, b storage.Bucket, key string, results []putResult, body func(i int) string) {
	t.Helper()
	winner := -1
	for i, r := range results {
		switch {
		case r.err == nil:
			if winner >= 0 {
				t.Fatalf("writers %d and %d both won", winner, i)
			}
			winner = i
		case errors.Is(r.err, storage.ErrPreconditionFailed), errors.Is(r.err, storage.ErrConflict):
		default:
			t.Errorf("writer %d: unexpected error %v", i, r.err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer won")
	}
	got, a := get(t, b, key)
	if got != body(winner) || a.ETag != results[winner].attrs.ETag {
		t.Errorf("stored %q (ETag %q), want the winner's %q (ETag %q)", got, a.ETag, body(winner), results[winner].attrs.ETag)
	}
}

const racers = 16

func testRaceCreateOnly(t *testing.T, b storage.Bucket) {
	const key = "race/create"
	body := func(i int) string { return fmt.Sprintf("writer %02d", i) }
	results := race(racers, func(i int) putResult {
		a, err := b.Put(context.Background(), key, strings.NewReader(body(i)), storage.PutOptions{IfNoneMatch: "*", Size: int64(len(body(i)))})
		return putResult{a, err}
	})
	checkOneWinner(t, b, key, results, body)
}

func testRaceIfMatch(t *testing.T, b storage.Bucket) {
	const key = "race/replace"
	base := put(t, b, key, "base", storage.PutOptions{})
	body := func(i int) string { return fmt.Sprintf("replacement %02d", i) }
	results := race(racers, func(i int) putResult {
		a, err := b.Put(context.Background(), key, strings.NewReader(body(i)), storage.PutOptions{IfMatch: base.ETag, Size: int64(len(body(i)))})
		return putResult{a, err}
	})
	checkOneWinner(t, b, key, results, body)
}

func testContextCancelled(t *testing.T, b storage.Bucket) {
	put(t, b, "exists", "x", storage.PutOptions{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	canceled := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: got %v, want context.Canceled", what, err)
		}
	}
	_, err := b.Put(ctx, "new", strings.NewReader("y"), storage.PutOptions{Size: 1})
	canceled("Put", err)
	_, err = b.Put(ctx, "exists", strings.NewReader("y"), storage.PutOptions{Size: 1})
	canceled("Put overwrite", err)
	rc, _, err := b.Get(ctx, "exists")
	if err == nil {
		rc.Close()
	}
	canceled("Get", err)
	_, err = b.List(ctx, storage.ListOptions{})
	canceled("List", err)
	_, err = b.Stat(ctx, "exists")
	canceled("Stat", err)

	if _, err := b.Stat(t.Context(), "new"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("cancelled Put created the key: Stat = %v", err)
	}
	if got, _ := get(t, b, "exists"); got != "x" {
		t.Errorf("cancelled Put overwrote the key: %q", got)
	}
}

// cancellingReader yields n bytes, cancels, then keeps yielding up to
// limit bytes: a body whose upload is cut off by its caller. The limit
// keeps a driver that buffers the whole body before looking at ctx from
// reading forever; it must still fail.
type cancellingReader struct {
	n, limit int
	cancel   func()
}

func (r *cancellingReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		r.cancel()
	}
	if r.n <= -r.limit {
		return 0, io.EOF
	}
	if len(p) > 4096 {
		p = p[:4096]
	}
	for i := range p {
		p[i] = 'x'
	}
	r.n -= len(p)
	return len(p), nil
}

func testContextCancelledMidBody(t *testing.T, b storage.Bucket) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	_, err := b.Put(ctx, "cut", &cancellingReader{n: 64 << 10, limit: 4 << 20, cancel: cancel}, storage.PutOptions{Size: -1})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Put cut off by cancellation: got %v, want context.Canceled", err)
	}
	if _, err := b.Stat(t.Context(), "cut"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("cancelled Put created the key: Stat = %v", err)
	}
}

// randomReader returns a deterministic pseudo-random stream of n bytes,
// so large bodies never need to be held in memory twice.
func randomReader(seed uint64, n int64) io.Reader {
	return io.LimitReader(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}), n)
}

func testLargeObject(t *testing.T, b storage.Bucket) {
	const size = 5 << 20
	want := sha256.New()
	if _, err := io.Copy(want, randomReader(1, size)); err != nil {
		t.Fatal(err)
	}
	a, err := b.Put(t.Context(), "large/blob", randomReader(1, size), storage.PutOptions{Size: size, ContentType: "application/octet-stream"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != size {
		t.Errorf("Put size = %d, want %d", a.Size, size)
	}
	rc, ga, err := b.Get(t.Context(), "large/blob")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := sha256.New()
	n, err := io.Copy(got, rc)
	if err != nil {
		t.Fatal(err)
	}
	if n != size || ga.Size != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Errorf("Get read %d bytes (attrs size %d), content equal %v; want %d identical bytes", n, ga.Size, bytes.Equal(got.Sum(nil), want.Sum(nil)), size)
	}
}

// onlyReader hides every method but Read (no Seek, no Len, no WriteTo).
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

func testUnknownSize(t *testing.T, b storage.Bucket) {
	for _, size := range []int64{0, 1, 300 << 10} {
		key := fmt.Sprintf("unknown/%d", size)
		var buf bytes.Buffer
		io.Copy(&buf, randomReader(uint64(size), size))
		a, err := b.Put(t.Context(), key, onlyReader{bytes.NewReader(buf.Bytes())}, storage.PutOptions{Size: -1})
		if err != nil {
			t.Fatalf("Put of %d bytes with Size -1: %v", size, err)
		}
		if a.Size != size {
			t.Errorf("Put attrs size = %d, want %d", a.Size, size)
		}
		got, ga := get(t, b, key)
		if got != buf.String() || ga.Size != size {
			t.Errorf("Get of %d-byte body returned %d bytes (attrs size %d), equal %v", size, len(got), ga.Size, got == buf.String())
		}
	}
}

// testAtomicOverwrite reads a key while it is overwritten with bodies of
// different lengths and bytes: every read must see one whole version,
// with attributes that describe it.
func testAtomicOverwrite(t *testing.T, b storage.Bucket) {
	const key = "atomic/k"
	bodies := []string{strings.Repeat("a", 64<<10), strings.Repeat("b", 96<<10), strings.Repeat("c", 1)}
	put(t, b, key, bodies[0], storage.PutOptions{})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var mu sync.Mutex
	var problems []string
	reads := 0
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				data, a, err := storage.ReadAll(ctx, b, key)
				if ctx.Err() != nil {
					return
				}
				mu.Lock()
				reads++
				switch {
				case err != nil:
					problems = append(problems, err.Error())
				case !slices.Contains(bodies, string(data)):
					problems = append(problems, fmt.Sprintf("torn read of %d bytes starting %q", len(data), data[:min(len(data), 8)]))
				case a.Size != int64(len(data)):
					problems = append(problems, fmt.Sprintf("attrs size %d for a %d-byte body", a.Size, len(data)))
				}
				mu.Unlock()
			}
		})
	}
	readsSoFar := func() int { mu.Lock(); defer mu.Unlock(); return reads }
	// At least 30 writes, and more until the readers have overlapped
	// them (bounded, for a slow remote store).
	for i := 0; i < 30 || (readsSoFar() < 20 && i < 1000); i++ {
		put(t, b, key, bodies[i%len(bodies)], storage.PutOptions{})
	}
	cancel()
	wg.Wait()
	if len(problems) > 0 {
		t.Errorf("%d of %d reads were wrong, first: %s", len(problems), reads, problems[0])
	}
	if reads == 0 {
		t.Error("no read completed")
	}
}

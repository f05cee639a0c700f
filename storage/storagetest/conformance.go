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
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
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

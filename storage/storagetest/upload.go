package storagetest

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"testing"

	"fhirbucket/storage"
)

// RunUploadTests runs the contract of storage.NewUpload against a driver:
// its own Uploader when it has one, the temporary-file fallback when not.
// newBucket is as for RunConformanceTests. size is the length of the
// large case; give one above the driver's part size (s3store.PartSize) so
// that a multipart upload of several parts is exercised.
func RunUploadTests(t *testing.T, newBucket func(t *testing.T) storage.Bucket, size int64) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, b storage.Bucket)
	}{
		{"upload-small", testUploadSmall},
		{"upload-large", func(t *testing.T, b storage.Bucket) { testUploadLarge(t, b, size) }},
		{"upload-invisible-until-commit", testUploadInvisible},
		{"upload-abort", testUploadAbort},
		{"upload-replaces", testUploadReplaces},
		{"upload-conditional-refused", testUploadConditional},
		{"upload-after-commit", testUploadAfterCommit},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newBucket(t)) })
	}
}

func upload(t *testing.T, b storage.Bucket, key string, body io.Reader, ct string) storage.Attrs {
	t.Helper()
	u, err := storage.NewUpload(t.Context(), b, key, storage.PutOptions{ContentType: ct})
	if err != nil {
		t.Fatalf("NewUpload %s: %v", key, err)
	}
	// Small writes, as a line-by-line writer makes them.
	buf := make([]byte, 64<<10)
	for {
		n, rerr := body.Read(buf)
		if n > 0 {
			if _, err := u.Write(buf[:n]); err != nil {
				u.Abort(t.Context())
				t.Fatalf("Write %s: %v", key, err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			t.Fatal(rerr)
		}
	}
	a, err := u.Commit(t.Context())
	if err != nil {
		t.Fatalf("Commit %s: %v", key, err)
	}
	return a
}

func testUploadSmall(t *testing.T, b storage.Bucket) {
	for _, body := range []string{"", "{\"a\":1}\n"} {
		key := "up/small" + string(rune('0'+len(body)%10))
		a := upload(t, b, key, bytes.NewReader([]byte(body)), "application/fhir+ndjson")
		if a.Key != key || a.Size != int64(len(body)) || a.ETag == "" {
			t.Errorf("Commit attrs %+v, want key %s size %d and an ETag", a, key, len(body))
		}
		got, ga := get(t, b, key)
		if got != body || ga.ContentType != "application/fhir+ndjson" {
			t.Errorf("Get = %q (%q), want %q (application/fhir+ndjson)", got, ga.ContentType, body)
		}
	}
}

func testUploadLarge(t *testing.T, b storage.Bucket, size int64) {
	want := sha256.New()
	io.Copy(want, randomReader(7, size))
	a := upload(t, b, "up/large", randomReader(7, size), "")
	if a.Size != size {
		t.Errorf("Commit size %d, want %d", a.Size, size)
	}
	rc, ga, err := b.Get(t.Context(), "up/large")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got := sha256.New()
	n, _ := io.Copy(got, rc)
	if n != size || ga.Size != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) || ga.ContentType != "" {
		t.Errorf("Get read %d bytes (attrs %+v), equal %v; want %d identical bytes, no content type", n, ga, bytes.Equal(got.Sum(nil), want.Sum(nil)), size)
	}
}

func testUploadInvisible(t *testing.T, b storage.Bucket) {
	u, err := storage.NewUpload(t.Context(), b, "up/pending", storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write([]byte("line\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stat(t.Context(), "up/pending"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Stat before Commit: %v, want ErrNotExist", err)
	}
	if _, err := u.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, _ := get(t, b, "up/pending"); got != "line\n" {
		t.Errorf("after Commit: %q", got)
	}
}

func testUploadAbort(t *testing.T, b storage.Bucket) {
	u, err := storage.NewUpload(t.Context(), b, "up/aborted", storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	u.Write([]byte("x"))
	if err := u.Abort(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := u.Abort(t.Context()); err != nil {
		t.Errorf("second Abort: %v", err)
	}
	if _, err := b.Stat(t.Context(), "up/aborted"); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("Stat after Abort: %v, want ErrNotExist", err)
	}
	if _, err := u.Commit(t.Context()); !errors.Is(err, storage.ErrInvalidArgument) {
		t.Errorf("Commit after Abort: %v, want ErrInvalidArgument", err)
	}
}

func testUploadReplaces(t *testing.T, b storage.Bucket) {
	put(t, b, "up/k", "old", storage.PutOptions{})
	upload(t, b, "up/k", bytes.NewReader([]byte("new")), "")
	if got, _ := get(t, b, "up/k"); got != "new" {
		t.Errorf("Get = %q, want new", got)
	}
}

func testUploadConditional(t *testing.T, b storage.Bucket) {
	for _, o := range []storage.PutOptions{{IfNoneMatch: "*"}, {IfMatch: `"x"`}} {
		if _, err := storage.NewUpload(t.Context(), b, "up/c", o); !errors.Is(err, storage.ErrInvalidArgument) {
			t.Errorf("NewUpload with %+v: %v, want ErrInvalidArgument", o, err)
		}
	}
	if _, err := storage.NewUpload(t.Context(), b, "../x", storage.PutOptions{}); !errors.Is(err, storage.ErrInvalidKey) {
		t.Errorf("NewUpload of an invalid key: %v, want ErrInvalidKey", err)
	}
}

func testUploadAfterCommit(t *testing.T, b storage.Bucket) {
	u, err := storage.NewUpload(t.Context(), b, "up/done", storage.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Commit(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write([]byte("x")); !errors.Is(err, storage.ErrInvalidArgument) {
		t.Errorf("Write after Commit: %v, want ErrInvalidArgument", err)
	}
	if _, err := u.Commit(t.Context()); !errors.Is(err, storage.ErrInvalidArgument) {
		t.Errorf("second Commit: %v, want ErrInvalidArgument", err)
	}
	if err := u.Abort(t.Context()); err != nil {
		t.Errorf("Abort after Commit: %v", err)
	}
}

//go:build unix

package filestore_test

import (
	"testing"

	"fhirbucket/storage"
	"fhirbucket/storage/filestore"
	"fhirbucket/storage/storagetest"
)

func newBucket(t testing.TB) *filestore.Bucket {
	t.Helper()
	b, err := filestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	storagetest.RunConformanceTests(t, func(t *testing.T) storage.Bucket { return newBucket(t) })
}

// The suite again, through a Prefixed view: the layers above use one.
func TestConformancePrefixed(t *testing.T) {
	storagetest.RunConformanceTests(t, func(t *testing.T) storage.Bucket {
		p, err := storage.Prefixed(newBucket(t), "tenant/t1")
		if err != nil {
			t.Fatal(err)
		}
		return p
	})
}

func BenchmarkFilestore(b *testing.B) {
	storagetest.RunBenchmarks(b, func(tb testing.TB) storage.Bucket { return newBucket(tb) })
}

func TestUpload(t *testing.T) {
	storagetest.RunUploadTests(t, func(t *testing.T) storage.Bucket { return newBucket(t) }, 1<<20)
}

package memstore_test

import (
	"testing"

	"fhirbucket/storage"
	"fhirbucket/storage/memstore"
	"fhirbucket/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.RunConformanceTests(t, func(t *testing.T) storage.Bucket { return memstore.New() })
}

func BenchmarkMemstore(b *testing.B) {
	storagetest.RunBenchmarks(b, func(testing.TB) storage.Bucket { return memstore.New() })
}

func TestUpload(t *testing.T) {
	storagetest.RunUploadTests(t, func(t *testing.T) storage.Bucket { return memstore.New() }, 1<<20)
}

package bundle

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"fhirbucket/fhir"
	"fhirbucket/internal/testenv"
)

// testBase is the server base the tests plan against.
const testBase = "http://localhost:8080/fhir"

var sharedValidator = sync.OnceValues(func() (*fhir.Validator, error) {
	return fhir.NewValidator(fhir.ValidatorOptions{})
})

func validator(t testing.TB) *fhir.Validator {
	t.Helper()
	v, err := sharedValidator()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func testOptions(t testing.TB) Options {
	return Options{Base: testBase, Validator: validator(t)}
}

func syntheaFiles(t testing.TB) []string { t.Helper(); return testenv.SyntheaFiles(t) }

func readGzip(t testing.TB, path string) []byte { t.Helper(); return testenv.ReadGzip(t, path) }

func readExample(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "testdata", "r4", "examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// bundleOf returns a Bundle of type typ with the given raw entries.
func bundleOf(typ string, entries ...string) []byte {
	return []byte(`{"resourceType":"Bundle","type":"` + typ + `","entry":[` + strings.Join(entries, ",") + `]}`)
}

// decode decodes JSON keeping numbers as json.Number.
func decode(t testing.TB, data []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode: %v\n%s", err, data)
	}
	return v
}

// entryError returns err as an *EntryError, failing the test if it is not one.
func entryError(t testing.TB, err error) *EntryError {
	t.Helper()
	var ee *EntryError
	if !errors.As(err, &ee) {
		t.Fatalf("error %v (%T) is not an *EntryError", err, err)
	}
	return ee
}

// isServerID reports whether id has the form of a server-assigned id.
func isServerID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

package fhir

import (
	"testing"
	"time"
)

// TestEveryResourceTypeCompiles compiles the schema of every R4 resource
// type (each is otherwise compiled on first use) and logs the cost.
func TestEveryResourceTypeCompiles(t *testing.T) {
	start := time.Now()
	newTestValidator(t, ValidatorOptions{})
	t.Logf("schema load: %v (0 if an earlier test loaded it)", time.Since(start))
	start = time.Now()
	for _, typ := range ResourceTypes() {
		s, err := schemaFor(typ)
		if err != nil || s == nil {
			t.Errorf("%s: %v", typ, err)
		}
	}
	t.Logf("compiled %d resource types in %v", len(ResourceTypes()), time.Since(start))
}

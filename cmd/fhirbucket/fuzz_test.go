package main

import (
	"testing"

	"fhirbucket/fhirstore"
)

// FuzzParseTenantBuckets: any FHIRBUCKET_S3_TENANT_BUCKETS value either
// fails or yields valid tenants, each on its own non-empty bucket name.
func FuzzParseTenantBuckets(f *testing.F) {
	for _, s := range []string{"a=bucket-a,b=bucket-b", "a=x,b=x", "a=x,a=y", " a = x , ", "../a=x", "=", "a", "resources=x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseTenantBuckets(s)
		if err != nil {
			return
		}
		if len(m) == 0 {
			t.Fatalf("%q: no error and no pairs", s)
		}
		seen := map[string]string{}
		for tenant, bucket := range m {
			if err := fhirstore.ValidTenant(tenant); err != nil {
				t.Errorf("%q: invalid tenant %q accepted: %v", s, tenant, err)
			}
			if bucket == "" {
				t.Errorf("%q: tenant %q has an empty bucket", s, tenant)
			}
			if other, dup := seen[bucket]; dup {
				t.Errorf("%q: tenants %q and %q share bucket %q", s, other, tenant, bucket)
			}
			seen[bucket] = tenant
		}
	})
}

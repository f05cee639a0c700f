package fhir

import (
	"errors"
	"testing"
)

// TestIntegerRange: FHIR integer, positiveInt and unsignedInt are 32-bit
// values written without fraction or exponent; the official schema's
// patterns alone do not check JSON numbers.
func TestIntegerRange(t *testing.T) {
	v, err := NewValidator(ValidatorOptions{})
	if err != nil {
		t.Fatal(err)
	}
	obs := func(value string) string {
		return `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueInteger":` + value + `}`
	}
	cases := []struct {
		body string
		ok   bool
	}{
		{obs("0"), true},
		{obs("-2147483648"), true},
		{obs("2147483647"), true},
		{obs("2147483648"), false},
		{obs("-2147483649"), false},
		{obs("1.5"), false},
		{obs("1.0"), false},
		{obs("1e3"), false},
		{obs("1e999999"), false},
		{obs("99999999999999999999999999999999999999"), false},
		{`{"resourceType":"Patient","multipleBirthInteger":3}`, true},
		{`{"resourceType":"Patient","multipleBirthInteger":3.5}`, false},
		// positiveInt and unsignedInt
		{`{"resourceType":"Patient","photo":[{"size":0}]}`, true},
		{`{"resourceType":"Patient","photo":[{"size":-1}]}`, false},
		{`{"resourceType":"Patient","photo":[{"size":4294967296}]}`, false},
		{`{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueSampledData":{"origin":{"value":1},"period":1,"dimensions":1,"data":"1"}}`, true},
		{`{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueSampledData":{"origin":{"value":1},"period":1,"dimensions":0,"data":"1"}}`, false},
		// decimals keep their exponent form
		{`{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":1e3}}`, true},
	}
	for _, c := range cases {
		_, err := v.Validate([]byte(c.body))
		if c.ok && err != nil {
			t.Errorf("%s: %v", c.body, err)
		}
		if !c.ok && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: accepted (%v)", c.body, err)
		}
	}
}

package fhir

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func newTestValidator(t testing.TB, opts ValidatorOptions) *Validator {
	t.Helper()
	v, err := NewValidator(opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func exampleFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "testdata", "r4", "examples", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples in testdata/r4/examples: %v", err)
	}
	return files
}

// TestValidateOfficialExamples: every example published with the R4
// specification is accepted, and Validate reports its type and id.
func TestValidateOfficialExamples(t *testing.T) {
	start := time.Now()
	v := newTestValidator(t, ValidatorOptions{})
	t.Logf("NewValidator (schema load + compile, if first) took %v", time.Since(start))
	files := exampleFiles(t)
	start = time.Now()
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		info, err := v.Validate(data)
		if err != nil {
			t.Errorf("%s: %v", filepath.Base(f), err)
			continue
		}
		typ, id, err := Peek(data)
		if err != nil || info.Type != typ || info.ID != id {
			t.Errorf("%s: Validate info %+v, Peek %q %q %v", filepath.Base(f), info, typ, id, err)
		}
	}
	t.Logf("validated %d examples in %v", len(files), time.Since(start))
}

func TestValidateRejects(t *testing.T) {
	v := newTestValidator(t, ValidatorOptions{MaxBytes: 4096})
	deep := strings.Repeat(`{"a":`, 150) + "1" + strings.Repeat("}", 150)
	deepArr := `{"resourceType":"Patient","x":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + "}"
	tests := []struct {
		name     string
		in       string
		code     string // first issue's code
		path     string // first issue's path
		contains string // in the first issue's message
	}{
		{"wrong type boolean", `{"resourceType":"Patient","active":"yes"}`,
			"structure", "Patient.active", "got string, want boolean"},
		{"wrong type date", `{"resourceType":"Patient","birthDate":19800101}`,
			"structure", "Patient.birthDate", "got number, want string (FHIR date)"},
		{"unknown element top level", `{"resourceType":"Patient","foo":1}`,
			"structure", "Patient.foo", `unknown element "foo"`},
		{"unknown element nested", `{"resourceType":"Patient","name":[{"family":"x"},{"given":["a"],"bar":true}]}`,
			"structure", "Patient.name[1].bar", `unknown element "bar"`},
		{"unknown element odd name", `{"resourceType":"Patient","a b":1}`,
			"structure", "Patient.`a b`", `unknown element "a b"`},
		{"bad date", `{"resourceType":"Patient","birthDate":"1980-13-45"}`,
			"value", "Patient.birthDate", `"1980-13-45" is not a valid FHIR date`},
		{"bad nested primitive", `{"resourceType":"Patient","name":[{"given":["a",""]}]}`,
			"value", "Patient.name[0].given[1]", `"" is not a valid FHIR string`},
		{"bad code", `{"resourceType":"Patient","gender":"robot"}`,
			"value", "Patient.gender", "value must be one of"},
		{"bad decimal", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":"1.50"}}`,
			"structure", "Observation.valueQuantity.value", "want number (FHIR decimal)"},
		{"id path traversal", `{"resourceType":"Patient","id":"../x"}`,
			"value", "Patient.id", "not a valid FHIR id"},
		{"id too long", `{"resourceType":"Patient","id":"` + strings.Repeat("a", 65) + `"}`,
			"value", "Patient.id", "not a valid FHIR id"},
		{"id empty", `{"resourceType":"Patient","id":""}`,
			"value", "Patient.id", "not a valid FHIR id"},
		{"id not a string", `{"resourceType":"Patient","id":12}`,
			"value", "Patient.id", "must be a string, not a number"},
		{"object where array belongs", `{"resourceType":"Patient","name":{"family":"x"}}`,
			"structure", "Patient.name", "got object, want array"},
		{"array where object belongs", `{"resourceType":"Patient","maritalStatus":[{"text":"x"}]}`,
			"structure", "Patient.maritalStatus", "got array, want object"},
		{"required element missing", `{"resourceType":"Observation","status":"final"}`,
			"required", "Observation.code", `required element "code" is missing`},
		{"contained resource checked", `{"resourceType":"Patient","contained":[{"resourceType":"Organization","id":"o","nmae":"x"}]}`,
			"structure", "Patient.contained[0].nmae", `unknown element "nmae"`},
		{"contained unknown type", `{"resourceType":"Patient","contained":[{"resourceType":"Nope"}]}`,
			"value", "Patient.contained[0].resourceType", "value must be one of"},
		{"trailing garbage", `{"resourceType":"Patient"} {}`,
			"structure", "Patient", "data after the top-level value"},
		{"trailing comma", `{"resourceType":"Patient",}`,
			"structure", "Patient", "malformed JSON"},
		{"truncated", `{"resourceType":"Patient","name":[{"family":"x"`,
			"structure", "Patient.name[0]", "unexpected end of JSON input"},
		{"duplicate key top level", `{"resourceType":"Patient","active":true,"active":false}`,
			"structure", "Patient.active", `duplicate member "active"`},
		{"duplicate key nested", `{"resourceType":"Patient","name":[{"family":"a","family":"b"}]}`,
			"structure", "Patient.name[0].family", `duplicate member "family"`},
		{"duplicate key via escape", `{"resourceType":"Patient","active":true,"\u0061ctive":true}`,
			"structure", "Patient.active", `duplicate member "active"`},
		{"unknown resourceType", `{"resourceType":"Patent"}`,
			"value", "Resource.resourceType", `unknown resource type "Patent"`},
		{"missing resourceType", `{"id":"x"}`,
			"required", "Resource.resourceType", "resourceType is missing"},
		{"resourceType not a string", `{"resourceType":["Patient"]}`,
			"value", "Resource.resourceType", "must be a string, not an array"},
		{"array document", `[]`, "structure", "", "must be a JSON object, not an array"},
		{"string document", `"x"`, "structure", "", "must be a JSON object, not a string"},
		{"null document", `null`, "structure", "", "must be a JSON object, not null"},
		{"empty document", ``, "structure", "Resource", "unexpected end of JSON input"},
		{"invalid UTF-8", "{\"resourceType\":\"Patient\",\"gender\":\"\xff\"}", "structure", "", "not valid UTF-8 at offset 36"},
		{"too deep objects", deep, "structure", "Resource" + strings.Repeat(".a", 100), "nested deeper than 100 levels"},
		{"too deep arrays", deepArr, "structure", "Patient.x" + strings.Repeat("[0]", 99), "nested deeper than 100 levels"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := v.Validate([]byte(tt.in))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Validate = %+v, %v; want ErrInvalid", info, err)
			}
			var verr *ValidationError
			if !errors.As(err, &verr) || len(verr.Issues) == 0 {
				t.Fatalf("error %v is not a *ValidationError with issues", err)
			}
			is := verr.Issues[0]
			if is.Code != tt.code || is.Path != tt.path || !strings.Contains(is.Message, tt.contains) {
				t.Errorf("first issue = {%q %q %q}, want {%q %q ...%q...}\nall: %v", is.Code, is.Path, is.Message, tt.code, tt.path, tt.contains, err)
			}
			if tt.path != "" && !strings.Contains(err.Error(), tt.path+": ") {
				t.Errorf("Error() %q does not name the path %q", err.Error(), tt.path)
			}
		})
	}
}

func TestValidateTooLarge(t *testing.T) {
	v := newTestValidator(t, ValidatorOptions{MaxBytes: 64})
	ok := `{"resourceType":"Patient","active":true}`
	if _, err := v.Validate([]byte(ok)); err != nil {
		t.Fatalf("small resource: %v", err)
	}
	big := `{"resourceType":"Patient","name":[{"text":"` + strings.Repeat("x", 64) + `"}]}`
	_, err := v.Validate([]byte(big))
	if !errors.Is(err, ErrTooLarge) || errors.Is(err, ErrInvalid) {
		t.Errorf("Validate(%d bytes) = %v, want ErrTooLarge only", len(big), err)
	}
}

func TestValidateDecimalsAndAccepts(t *testing.T) {
	v := newTestValidator(t, ValidatorOptions{})
	tests := []struct {
		name, in, typ, id string
	}{
		{"decimal keeps precision", `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"valueQuantity":{"value":1.50}}`, "Observation", "o1"},
		{"decimal exponent", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":-1.5e-300}}`, "Observation", ""},
		{"huge decimal", `{"resourceType":"Observation","status":"final","code":{"text":"x"},"valueQuantity":{"value":123456789012345678901234567890.000000000000000000001}}`, "Observation", ""},
		{"primitive extension", `{"resourceType":"Patient","birthDate":"1980","_birthDate":{"extension":[{"url":"http://x","valueString":"y"}]}}`, "Patient", ""},
		{"canonical extension", `{"resourceType":"Patient","meta":{"profile":["http://x/p"],"_profile":[{"id":"e1"}]}}`, "Patient", ""},
		{"white space", " \n\t{ \"resourceType\" : \"Patient\" } \r\n", "Patient", ""},
		{"escaped names", `{"resourceType":"Pati\u0065nt","\u0069d":"x"}`, "Patient", "x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info, err := v.Validate([]byte(tt.in))
			if err != nil || info.Type != tt.typ || info.ID != tt.id {
				t.Errorf("Validate = %+v, %v; want %s/%s", info, err, tt.typ, tt.id)
			}
		})
	}
}

// TestValidateConcurrent runs validators from many goroutines (under
// -race this checks the shared schema state) and checks every answer.
func TestValidateConcurrent(t *testing.T) {
	files := exampleFiles(t)[:40]
	docs := make([][]byte, len(files))
	for i, f := range files {
		var err error
		if docs[i], err = os.ReadFile(f); err != nil {
			t.Fatal(err)
		}
	}
	bad := []byte(`{"resourceType":"Patient","active":"yes"}`)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := NewValidator(ValidatorOptions{})
			if err != nil {
				t.Error(err)
				return
			}
			for i := range docs {
				d := docs[(i+g*5)%len(docs)]
				if _, err := v.Validate(d); err != nil {
					t.Error(err)
				}
				if _, err := v.Validate(bad); !errors.Is(err, ErrInvalid) {
					t.Errorf("bad resource accepted: %v", err)
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkValidate(b *testing.B) {
	v := newTestValidator(b, ValidatorOptions{})
	for _, name := range []string{
		"patient-example.json",
		"observation-example.json",
		"observation-example-bloodpressure.json",
		"encounter-example.json",
		"medicationrequestexample1.json",
		"bundle-response-medsallergies.json",
	} {
		data, err := os.ReadFile(filepath.Join("..", "testdata", "r4", "examples", name))
		if err != nil {
			b.Fatal(err)
		}
		b.Run(strings.TrimSuffix(name, ".json"), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Validate(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestValidationErrorMessage(t *testing.T) {
	var issues []Issue
	for i := range 8 {
		issues = append(issues, Issue{Code: "value", Path: "Patient.name[" + itoaTest(i) + "]", Message: "bad"})
	}
	tests := []struct {
		issues []Issue
		want   string
	}{
		{issues[:1], "fhir: invalid resource: Patient.name[0]: bad"},
		{[]Issue{{Code: "structure", Message: "not valid UTF-8 at offset 3"}}, "fhir: invalid resource: not valid UTF-8 at offset 3"},
		{issues, "fhir: invalid resource: Patient.name[0]: bad; Patient.name[1]: bad; Patient.name[2]: bad; Patient.name[3]: bad; Patient.name[4]: bad; and 3 more"},
	}
	for _, tt := range tests {
		err := error(&ValidationError{Issues: tt.issues})
		if err.Error() != tt.want {
			t.Errorf("Error() = %q, want %q", err.Error(), tt.want)
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%v does not wrap ErrInvalid", err)
		}
	}
}

package bundle

import (
	"path/filepath"
	"strings"
	"testing"
)

// BenchmarkPlanSynthea plans each Synthea record: with schema validation
// (what the server does) and without it (parsing, ids, rewriting and
// ordering alone). ns/entry is the time per Bundle entry.
func BenchmarkPlanSynthea(b *testing.B) {
	for _, validate := range []bool{true, false} {
		for _, f := range syntheaFiles(b) {
			data := readGzip(b, f)
			opts := testOptions(b)
			name := "validate"
			if !validate {
				opts.Validator = nil
				name = "novalidate"
			}
			person, _, _ := strings.Cut(filepath.Base(f), "_")
			b.Run(name+"/"+person, func(b *testing.B) {
				p, err := NewPlan(data, opts) // also compiles the schemas the record needs
				if err != nil {
					b.Fatal(err)
				}
				entries := len(p.Entries)
				b.SetBytes(int64(len(data)))
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if _, err := NewPlan(data, opts); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*entries), "ns/entry")
				b.ReportMetric(float64(entries), "entries")
			})
		}
	}
}

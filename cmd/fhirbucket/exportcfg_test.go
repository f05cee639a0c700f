package main

import (
	"io"
	"testing"
	"time"

	"fhirbucket/bulk"
)

// TestExportConfigDefaults: the defaults of the export settings are the
// package defaults, and settings reach the export.Config.
func TestExportConfigDefaults(t *testing.T) {
	fs, v := newFlagSet("serve", "", io.Discard, serveSettings, storeSettings)
	if err := v.parse(fs, nil, nil); err != nil {
		t.Fatal(err)
	}
	cfg, err := exportConfig(v)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Limits.MaxLines != bulk.DefaultMaxLines || cfg.Limits.MaxBytes != bulk.DefaultMaxBytes ||
		cfg.TTL != 30*time.Second || cfg.MaxRunning != 2 || cfg.MaxPerTenant != 4 || cfg.MinPoll != 0 {
		t.Errorf("defaults: %+v", cfg)
	}
	fs, v = newFlagSet("serve", "", io.Discard, serveSettings, storeSettings)
	if err := v.parse(fs, []string{"--export-part-lines", "500"}, []string{"FHIRBUCKET_EXPORT_MIN_POLL=100ms", "FHIRBUCKET_EXPORT_WORKERS=3"}); err != nil {
		t.Fatal(err)
	}
	if cfg, err = exportConfig(v); err != nil || cfg.Limits.MaxLines != 500 || cfg.MinPoll != 100*time.Millisecond || cfg.MaxRunning != 3 {
		t.Errorf("settings: %+v, %v", cfg, err)
	}
}

package main

import (
	"fmt"
	"time"

	"fhirbucket/bulk/export"
)

// exportConfig reads the bulk export settings of serve into an
// export.Config (without the store, owner, logger and hooks).
func exportConfig(v *values) (export.Config, error) {
	var cfg export.Config
	var err error
	if cfg.TTL, err = v.duration("export-lease-ttl"); err != nil {
		return cfg, err
	}
	if cfg.TTL < 3*time.Second {
		return cfg, fmt.Errorf("%s must be at least 3s, got %s", v.label("export-lease-ttl"), cfg.TTL)
	}
	if cfg.Poll, err = v.duration("export-scan-interval"); err != nil {
		return cfg, err
	}
	if cfg.RetryAfter, err = v.duration("export-retry-after"); err != nil {
		return cfg, err
	}
	if v.given("export-min-poll") {
		if cfg.MinPoll, err = v.duration("export-min-poll"); err != nil {
			return cfg, err
		}
		if cfg.MinPoll > cfg.RetryAfter {
			return cfg, fmt.Errorf("%s (%s) must not exceed %s (%s): clients polling as told would be refused",
				v.label("export-min-poll"), cfg.MinPoll, v.label("export-retry-after"), cfg.RetryAfter)
		}
	}
	ints := []struct {
		name string
		dst  *int
	}{
		{"export-workers", &cfg.MaxRunning},
		{"export-max-per-tenant", &cfg.MaxPerTenant},
		{"export-parallelism", &cfg.Parallel},
		{"export-part-lines", &cfg.Limits.MaxLines},
		{"export-manifest-page", &cfg.PageFiles},
	}
	for _, s := range ints {
		n, err := v.positiveInt(s.name)
		if err != nil {
			return cfg, err
		}
		*s.dst = int(n)
	}
	if cfg.Limits.MaxBytes, err = v.positiveInt("export-part-bytes"); err != nil {
		return cfg, err
	}
	if cfg.Limits.MaxBytes < 1024 {
		return cfg, fmt.Errorf("%s must be at least 1024, got %d", v.label("export-part-bytes"), cfg.Limits.MaxBytes)
	}
	return cfg, nil
}

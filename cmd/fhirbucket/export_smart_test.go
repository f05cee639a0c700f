package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExportSmartOverTLS: serve with auth smart over HTTPS; `fhirbucket
// load` and then `fhirbucket export` authenticate with SMART Backend
// Services (--client-id, --private-key, --ca-cert; token endpoint
// discovered), the export runs end to end with every loaded resource
// downloaded once, its manifest says requiresAccessToken: true, and a
// file of it downloaded without a token answers 401 (with one: 200).
// Without credentials the export command fails.
func TestExportSmartOverTLS(t *testing.T) {
	s := newSmartSetup(t, "acme", "system/*.*")
	p := startInProcess(t, nil, append(s.env(), "FHIRBUCKET_BACKEND=memory", "FHIRBUCKET_EXPORT_RETRY_AFTER=200ms",
		"FHIRBUCKET_EXPORT_MIN_POLL=1ms", "FHIRBUCKET_EXPORT_PART_LINES=10"))
	base := "https://" + p.addr
	hc := s.ca.client()

	const n = 25
	data := filepath.Join(s.dir, "patients.ndjson")
	var nd strings.Builder
	for i := range n {
		fmt.Fprintf(&nd, `{"resourceType":"Patient","id":"p%d","name":[{"family":"F%d"}]}`+"\n", i, i)
	}
	if err := os.WriteFile(data, []byte(nd.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	auth := []string{"--url", base, "--tenant", "acme", "--client-id", "bulk-client", "--private-key", s.clientKey, "--ca-cert", s.caFile, "--progress", "never"}
	var out, errOut bytes.Buffer
	if code := run(t.Context(), append(append([]string{"load"}, auth...), data), nil, &out, &errOut); code != exitOK {
		t.Fatalf("load (exit %d): %s %s", code, out.String(), errOut.String())
	}

	dir := filepath.Join(s.dir, "export")
	out.Reset()
	errOut.Reset()
	if code := run(t.Context(), append(append([]string{"export"}, auth...), "--out", dir), nil, &out, &errOut); code != exitOK {
		t.Fatalf("export over HTTPS with backend services (exit %d): %s %s", code, out.String(), errOut.String())
	}
	man, ids, _ := readDownloadedExport(t, dir)
	if len(ids["Patient"]) != n || len(man.Output) != 3 {
		t.Errorf("%d Patients in %d files, want %d in 3", len(ids["Patient"]), len(man.Output), n)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		RequiresAccessToken *bool `json:"requiresAccessToken"`
	}
	if err := json.Unmarshal(raw, &m); err != nil || m.RequiresAccessToken == nil || !*m.RequiresAccessToken {
		t.Errorf("requiresAccessToken is not true: %v %s", err, raw)
	}

	file := man.Output[0].URL
	if !strings.HasPrefix(file, base+"/") {
		t.Fatalf("file URL %s is not below %s", file, base)
	}
	if st, body := getWith(t, hc, file, "acme", ""); st != 401 {
		t.Errorf("file download without a token: %d %.200s, want 401", st, body)
	}
	st, tr := rawToken(t, hc, base, s.clientKey, "system/*.rs")
	if st != 200 {
		t.Fatalf("token: %d %v", st, tr)
	}
	if st, body := getWith(t, hc, file, "acme", tr["access_token"].(string)); st != 200 || bytes.Count(body, []byte("\n")) != man.Output[0].Count {
		t.Errorf("file download with a token: %d, %d lines, want 200 and %d", st, bytes.Count(body, []byte("\n")), man.Output[0].Count)
	}

	out.Reset()
	errOut.Reset()
	noAuth := []string{"export", "--url", base, "--tenant", "acme", "--ca-cert", s.caFile, "--progress", "never", "--retries", "0", "--out", filepath.Join(s.dir, "anon")}
	if code := run(t.Context(), noAuth, nil, &out, &errOut); code != exitProblems || !strings.Contains(errOut.String(), "401") {
		t.Errorf("export without credentials: exit %d %s, want 1 and a 401", code, errOut.String())
	}
	if strings.Contains(p.logs.String(), tr["access_token"].(string)) {
		t.Error("the access token appears in the log")
	}
}

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"fhirbucket/bulkclient"
	"fhirbucket/internal/clientkit"
)

const exportSummary = `Export data from a FHIR server with Bulk Data $export and download every file
into --out DIR. Kicks off the export (system level, --patient-level, or --group ID),
polls the status URL honouring Retry-After, then downloads the files in parallel
with gzip and checks each one's line count against the manifest. Run again with
the same --out to resume an interrupted run: it polls the same job, and files
already complete are not downloaded again. Progress goes to stderr (a bar when it
is a terminal), a summary to stdout. Exit code 0 when every file is there, 1 when
the export or a download failed, 2 on bad usage or when interrupted.`

// exportSettings are flags only: export is a client and reads no
// environment.
var exportSettings = slices.Concat([]setting{
	{flag: "url", def: "http://localhost:8080", usage: "FHIR base URL of the server (with path tenant routing: including the tenant)"},
	{flag: "out", usage: "folder for the files, the manifest and the job (required; created if missing)"},
	{flag: "tenant", usage: "tenant, sent as the X-Tenant-ID header"},
	{flag: "token", usage: "bearer token (other users of the machine can see it in the process list: prefer --token-file)"},
	{flag: "token-file", usage: "file holding the bearer token"},
}, backendServicesSettings("system/*.rs", "an export needs read and search on every type it exports"), []setting{
	{flag: "type", usage: "_type: resource types, comma-separated"},
	{flag: "since", usage: "_since: only resources changed after this FHIR instant"},
	{flag: "until", usage: "_until: only resources changed up to this FHIR instant"},
	{flag: "elements", usage: "_elements: elements to keep, comma-separated (Type.element or element)"},
	{flag: "patient-level", isBool: true, def: "false", usage: "export the Patient compartments (/Patient/$export)"},
	{flag: "group", usage: "export the compartments of the members of this Group id (/Group/{id}/$export)"},
	{flag: "parallel", def: strconv.Itoa(bulkclient.DefaultParallel), usage: "files downloaded at once"},
	{flag: "retries", def: strconv.Itoa(bulkclient.DefaultRetries), usage: "times a request is sent again after a 429, a 503 or no answer (and a download after a failure); 0: never"},
	{flag: "timeout", def: "10m", usage: "time allowed for each request, a whole download included"},
	{flag: "progress", def: "auto", usage: "progress on stderr: always (a bar redrawn in place), never (plain lines), or auto (the bar when stderr is a terminal)"},
})

// exportCmd runs `fhirbucket export`.
func exportCmd(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs, v := newFlagSet("export", exportSummary, stderr, exportSettings)
	fs.Usage = func() { clientUsage(stderr, "export --out DIR [flags]", exportSummary, exportSettings) }
	if err := v.parse(fs, args, nil); err != nil {
		return exitError, err
	}
	cfg, mode, err := exportClientConfig(v)
	if err != nil {
		return exitError, err
	}
	stats := &bulkclient.Stats{}
	var bar *clientkit.Bar
	if mode == "always" || (mode == "auto" && isTerminal(stderr)) {
		start := time.Now()
		bar = clientkit.StartBar(stderr, func() string { return exportBarLine(stats, time.Since(start)) })
		cfg.OnEvent = func(msg string) {
			if strings.Contains(msg, "failed") || !strings.HasSuffix(msg, "lines") {
				bar.Println(msg)
			}
		}
	} else {
		last := ""
		cfg.OnEvent = func(msg string) { fmt.Fprintln(stderr, msg) }
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			t := time.NewTicker(2 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					if p, _ := stats.Progress.Load().(string); p != "" && p != last && !stats.Downloading.Load() {
						last = p
						fmt.Fprintln(stderr, "export running: "+p)
					}
				}
			}
		}()
	}
	res, err := bulkclient.Run(ctx, cfg, stats)
	if bar != nil {
		bar.Stop()
	}
	if res != nil {
		fmt.Fprintf(stdout, "job: %s\nfiles: %d (%d downloaded, %d already complete), lines: %d, into %s\n",
			res.StatusURL, res.Files, res.Downloaded, res.Skipped, res.Lines, cfg.Out)
	}
	switch {
	case ctx.Err() != nil:
		return exitError, fmt.Errorf("interrupted (run again with the same --out to resume): %w", err)
	case err != nil:
		fmt.Fprintf(stderr, "fhirbucket export: %v\n", err)
		return exitProblems, nil
	}
	return exitOK, nil
}

// exportBarLine is the progress line: the server's X-Progress while the
// export runs, then files and bytes downloaded.
func exportBarLine(s *bulkclient.Stats, elapsed time.Duration) string {
	if !s.Downloading.Load() {
		p, _ := s.Progress.Load().(string)
		if p == "" {
			p = "starting"
		}
		return fmt.Sprintf("exporting: %s  %s", p, elapsed.Round(time.Second))
	}
	done, total := s.FilesDone.Load(), s.Files.Load()
	return fmt.Sprintf("%s files %d/%d  %.1f MB  %d lines  %s", clientkit.Gauge(done, total, 20), done, total,
		float64(s.Bytes.Load())/1e6, s.Lines.Load(), elapsed.Round(time.Second))
}

// exportClientConfig turns the flags into the client's configuration and
// the progress mode; errors name the flag.
func exportClientConfig(v *values) (bulkclient.Config, string, error) {
	var cfg bulkclient.Config
	var err error
	if cfg.URL, cfg.Token, err = clientTarget(v); err != nil {
		return cfg, "", err
	}
	cfg.Tenant = v.str("tenant")
	if cfg.Out = v.str("out"); cfg.Out == "" {
		return cfg, "", fmt.Errorf("--out is required: the folder for the files")
	}
	list := func(name string) []string {
		var out []string
		for _, s := range strings.Split(v.str(name), ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	cfg.Types, cfg.Elements = list("type"), list("elements")
	cfg.Since, cfg.Until = v.str("since"), v.str("until")
	pl, err := v.boolean("patient-level")
	if err != nil {
		return cfg, "", err
	}
	cfg.Group = v.str("group")
	switch {
	case *pl && cfg.Group != "":
		return cfg, "", fmt.Errorf("--patient-level and --group: give one, not both")
	case *pl:
		cfg.Level = "patient"
	case cfg.Group != "":
		cfg.Level = "group"
	}
	if n, err := v.positiveInt("parallel"); err != nil {
		return cfg, "", err
	} else {
		cfg.Parallel = int(n)
	}
	n, err := strconv.Atoi(v.str("retries"))
	if err != nil || n < 0 {
		return cfg, "", fmt.Errorf("--retries: %q is not a non-negative integer", v.str("retries"))
	}
	cfg.Retries = n
	if n == 0 {
		cfg.Retries = -1
	}
	timeout, err := v.duration("timeout")
	if err != nil {
		return cfg, "", err
	}
	hc, tokens, err := clientAuth(v, cfg.URL, cfg.Tenant)
	if err != nil {
		return cfg, "", err
	}
	if hc == nil {
		hc = &http.Client{}
	}
	hc.Timeout = timeout
	cfg.HTTP, cfg.Tokens = hc, tokens
	mode, err := v.oneOf("progress", "auto", "always", "never")
	return cfg, mode, err
}

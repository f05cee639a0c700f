package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"fhirbucket/bench"
	"fhirbucket/internal/s3server"
	"fhirbucket/storage/filestore"
	"fhirbucket/storage/memstore"
	"fhirbucket/storage/s3store"
)

const benchSummary = `Measure throughput, latency and object-store requests per operation against the
raw object store, in one run, and write the report as Markdown and JSON
(see docs/performance.md).

Backends: minio (default) starts a private MinIO on 127.0.0.1 from $PATH or
.tools/bin (make tools); s3 uses --endpoint and --bucket (or AWS with the
standard credential chain and --region); memory and file measure quickly
without a server. On s3 everything is written below bench-<id>/ in the
bucket and removed at the end unless --keep.`

// benchCmd runs `fhirbucket bench`.
func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: fhirbucket bench [flags]\n\n%s\n\nflags:\n", benchSummary)
		fs.PrintDefaults()
	}
	var (
		backend   = fs.String("backend", "minio", "object store: minio, s3, memory or file")
		endpoint  = fs.String("endpoint", "", "S3-compatible endpoint URL (implies --backend s3); empty with s3: AWS")
		bucket    = fs.String("bucket", "", "S3 bucket to write into (must exist; required with s3)")
		region    = fs.String("region", "", "S3 signing region (default AWS_REGION, or us-east-1 with --endpoint)")
		allowHTTP = fs.Bool("allow-http", false, "permit a plain http:// endpoint")
		dataDir   = fs.String("data-dir", "", "folder of the file backend (default: a temporary folder, removed afterwards)")
		conc      = fs.String("concurrency", "1,8,32", "concurrency levels, comma-separated")
		cell      = fs.Duration("cell", bench.DefaultCellDuration, "measured time of each throughput cell")
		objBytes  = fs.Int("object-bytes", bench.DefaultObjectBytes, "size of the raw baseline objects")
		sizes     = fs.String("history-sizes", "10,10000,100000", "prior events of the history pages measured, comma-separated")
		page      = fs.Int("history-page", bench.DefaultHistoryPage, "history page size (_count)")
		onBackend = fs.Int("history-on-backend-max", bench.DefaultHistoryOnBackendMax,
			"largest history built on the backend itself; larger ones are built and counted on memory")
		exportN  = fs.Int("export-resources", bench.DefaultExportResources, "resources stored and then exported by the bulk export cell (the issue's size is 100000); 0: no export cell")
		examples = fs.String("examples", bench.DefaultExamplesDir, "folder of FHIR JSON examples used as request bodies")
		out      = fs.String("out", "bench-report", "report path without extension: writes OUT.md and OUT.json")
		keep     = fs.Bool("keep", false, "keep the objects the run wrote (s3)")
		cpuProf  = fs.String("cpuprofile", "", "write a CPU profile of the whole run (server and load generator) to this file")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *endpoint != "" && !flagGiven(fs, "backend") {
		*backend = "s3"
	}
	levels, err := intList(*conc)
	if err != nil {
		return fmt.Errorf("--concurrency: %w", err)
	}
	hist, err := intList(*sizes)
	if err != nil {
		return fmt.Errorf("--history-sizes: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	cfg := bench.Config{
		Concurrency: levels, CellDuration: *cell, ObjectBytes: *objBytes, HistorySizes: hist, HistoryPage: *page,
		HistoryOnBackendMax: *onBackend, ExamplesDir: *examples, Logger: log,
	}
	cfg.ExportResources = *exportN
	if *exportN <= 0 {
		cfg.ExportResources = -1 // 0 means "default" in bench.Config
	}
	if *onBackend == 0 {
		cfg.HistoryOnBackendMax = -1 // 0 means "default" in bench.Config
	}
	if *backend != "s3" {
		for _, name := range []string{"endpoint", "bucket", "region", "allow-http", "keep"} {
			if flagGiven(fs, name) {
				return fmt.Errorf("--%s applies to --backend s3 only (backend is %s)", name, *backend)
			}
		}
	}
	if *backend != "file" && *dataDir != "" {
		return fmt.Errorf("--data-dir applies to --backend file only (backend is %s)", *backend)
	}

	switch *backend {
	case "memory":
		cfg.Bucket, cfg.Backend = memstore.New(), bench.Backend{Kind: "memory"}
	case "file":
		dir := *dataDir
		if dir == "" {
			if dir, err = os.MkdirTemp("", "fhirbucket-bench-"); err != nil {
				return err
			}
			defer os.RemoveAll(dir)
		}
		fb, err := filestore.Open(dir)
		if err != nil {
			return fmt.Errorf("--data-dir %s: %w", dir, err)
		}
		cfg.Bucket, cfg.Backend = fb, bench.Backend{Kind: "file", Endpoint: dir}
	case "minio":
		srv, stop, err := s3server.StartMinIO(ctx, os.Getenv("MINIO_ROOT_USER"), os.Getenv("MINIO_ROOT_PASSWORD"))
		if err != nil {
			return fmt.Errorf("starting MinIO (install it with `make tools`, or use --backend memory): %w", err)
		}
		defer stop()
		version, _ := s3server.ToolVersion("minio")
		const name = "fhirbucket-bench"
		if err := srv.CreateBucket(ctx, name); err != nil {
			return fmt.Errorf("creating bucket %s on MinIO: %w", name, err)
		}
		client, err := s3store.New(ctx, srv.Config())
		if err != nil {
			return err
		}
		// The server and its data folder go away at the end: no cleanup.
		cfg.Bucket = client.Bucket(name)
		cfg.WireRequests = func() int64 { return client.Requests().Total() }
		cfg.Backend = bench.Backend{Kind: "minio", Version: version, Endpoint: srv.Endpoint, Bucket: name}
	case "s3":
		if *bucket == "" {
			return errors.New("--bucket is required with --backend s3 (an existing bucket; the run writes below bench-<id>/)")
		}
		client, err := s3store.New(ctx, s3store.Config{Region: *region, EndpointURL: *endpoint, AllowHTTP: *allowHTTP})
		if err != nil {
			return err
		}
		if err := client.CheckBuckets(ctx, *bucket); err != nil {
			return err
		}
		cfg.Bucket, cfg.Cleanup = client.Bucket(*bucket), !*keep
		cfg.WireRequests = func() int64 { return client.Requests().Total() }
		cfg.Backend = bench.Backend{Kind: "s3", Version: serverHeader(ctx, *endpoint), Endpoint: *endpoint, Bucket: *bucket}
		if *endpoint == "" {
			cfg.Backend.Endpoint = "AWS S3"
		}
	default:
		return fmt.Errorf("--backend %q: want minio, s3, memory or file", *backend)
	}

	if *cpuProf != "" {
		f, err := os.Create(*cpuProf)
		if err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("--cpuprofile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	md := rep.Markdown()
	js, err := rep.JSON()
	if err != nil {
		return err
	}
	if err := os.WriteFile(*out+".md", []byte(md), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(*out+".json", append(js, '\n'), 0o644); err != nil {
		return err
	}
	fmt.Fprint(stdout, md)
	fmt.Fprintf(stdout, "\n(written to %s.md and %s.json)\n", *out, *out)
	return nil
}

// serverHeader is the Server response header of an S3 endpoint ("" for
// AWS or when it cannot be learned): the only version hint S3 gives.
func serverHeader(ctx context.Context, endpoint string) string {
	if endpoint == "" {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, endpoint, nil)
	if err != nil {
		return ""
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	resp.Body.Close()
	return resp.Header.Get("Server")
}

func flagGiven(fs *flag.FlagSet, name string) bool {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// intList parses "1,8,32".
func intList(s string) ([]int, error) {
	var out []int
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n, err := strconv.Atoi(strings.ReplaceAll(part, "_", ""))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", part)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty list")
	}
	return out, nil
}

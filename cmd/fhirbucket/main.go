// Command fhirbucket runs the FHIR R4 server over object storage and its
// maintenance tasks:
//
//	fhirbucket serve     serve the FHIR REST API
//	fhirbucket fsck      verify (and with --repair, repair) stored data
//	fhirbucket reindex   build the identifier index for data written before it
//	fhirbucket version   print the version
//	fhirbucket bench     measure throughput and S3 requests (docs/performance.md)
//	fhirbucket load      send Bundle and NDJSON files to a FHIR server
//	fhirbucket client    register a SMART Backend Services client (key pair, JWKS)
//	fhirbucket export    bulk export from a FHIR server into a folder
//
// Configuration comes from flags and FHIRBUCKET_* environment variables
// (flags win); `fhirbucket <command> --help` lists every setting and
// docs/configuration.md documents them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK       = 0
	exitProblems = 1 // fsck found problems it did not repair; load had failures
	exitError    = 2 // bad usage, bad configuration, or a failure
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches to a subcommand and returns the exit code. ctx ends on
// SIGINT or SIGTERM.
func run(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitError
	}
	var err error
	code := exitOK
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], environ, stderr)
	case "fsck":
		code, err = fsck(ctx, args[1:], environ, stdout, stderr)
	case "reindex":
		code, err = reindexCmd(ctx, args[1:], environ, stdout, stderr)
	case "version":
		err = printVersion(args[1:], stdout)
	case "bench":
		err = benchCmd(ctx, args[1:], stdout, stderr)
	case "load":
		code, err = loadCmd(ctx, args[1:], stdout, stderr)
	case "client":
		err = clientCmd(args[1:], stdout, stderr)
	case "export":
		code, err = exportCmd(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help", "-help":
		usage(stdout)
		return exitOK
	default:
		fmt.Fprintf(stderr, "fhirbucket: unknown command %q\n", args[0])
		usage(stderr)
		return exitError
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case err != nil:
		fmt.Fprintf(stderr, "fhirbucket %s: %v\n", args[0], err)
		return exitError
	}
	return code
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: fhirbucket <command> [flags]

commands:
  serve     serve the FHIR R4 REST API
  fsck      verify stored data of one tenant (--tenant) or all; --repair fixes what it can
  reindex   build the identifier index for data written before it existed (resumable)
  version   print the version
  bench     measure throughput, latency and S3 requests per operation
  load      load Bundle and NDJSON files into a FHIR server (POST to its base)
  client    client register: make a SMART Backend Services key pair and registry entry
  export    bulk-export a FHIR server's data into a folder ($export, then the files)

Run "fhirbucket <command> --help" for the settings of a command.
`)
}

// newLogger builds the process logger from the log settings: JSON unless
// stderr is a terminal (or as log-format says).
func newLogger(v *values, stderr io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(v.str("log-level"))); err != nil {
		return nil, fmt.Errorf("%s: %q is not one of debug, info, warn, error", v.label("log-level"), v.str("log-level"))
	}
	format, err := v.oneOf("log-format", "auto", "json", "text")
	if err != nil {
		return nil, err
	}
	if format == "auto" {
		format = "json"
		if isTerminal(stderr) {
			format = "text"
		}
	}
	opts := &slog.HandlerOptions{Level: level}
	if format == "text" {
		return slog.New(slog.NewTextHandler(stderr, opts)), nil
	}
	return slog.New(slog.NewJSONHandler(stderr, opts)), nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

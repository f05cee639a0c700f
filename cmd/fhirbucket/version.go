package main

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"fhirbucket/fhir"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3";
// otherwise it is derived from the build information.
var version = ""

// softwareVersion is the version reported by the command and the
// CapabilityStatement.
func softwareVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "dev"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "dev-" + rev
}

func printVersion(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stdout)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	_, err := fmt.Fprintf(stdout, "fhirbucket %s (FHIR %s, %s %s/%s)\n", softwareVersion(), fhir.Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return err
}

package s3test

import (
	"context"
	"debug/buildinfo"
	"os/exec"
	"strings"
)

// StartMinIO starts a private MinIO server outside `go test`, for the
// benchmark runner (`fhirbucket bench`), exactly as the tests start one: the
// binary from $PATH or <repo>/.tools/bin, a fresh temporary data folder,
// 127.0.0.1 only, root credentials from MINIO_ROOT_USER/PASSWORD (default
// minioadmin). stop ends the server and removes its data folder; call it
// once, also after an error of the caller.
func StartMinIO() (srv *Server, stop func(), err error) {
	srv, err = startMinIO(envOr("MINIO_ROOT_USER", "minioadmin"), envOr("MINIO_ROOT_PASSWORD", "minioadmin"))
	if err != nil {
		stopAll()
		return nil, nil, err
	}
	return srv, stopAll, nil
}

// CreateBucket creates an empty bucket named name on a server the harness
// started (not on AWS).
func (s *Server) CreateBucket(ctx context.Context, name string) error {
	return s.createBucket(ctx, name)
}

// ToolVersion names the version of the server binary name ("minio",
// "versitygw") the harness would start: its Go module version when it was
// built with `go install` (as scripts/install-tools.sh does), else the
// first line of `name --version`.
func ToolVersion(name string) (string, error) {
	bin, err := findBinary(name)
	if err != nil {
		return "", err
	}
	if bi, err := buildinfo.ReadFile(bin); err == nil && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Path + "@" + bi.Main.Version, nil
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "", err
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return first, nil
}

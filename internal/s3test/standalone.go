package s3test

import (
	"context"

	"fhirbucket/internal/s3server"
)

// StartMinIO starts a private MinIO server outside `go test`, exactly as
// the tests start one (see s3server.StartMinIO; root credentials from
// MINIO_ROOT_USER/PASSWORD, default minioadmin). stop ends the server and
// removes its data folder; call it once, also after an error of the
// caller.
//
// Code outside tests must call s3server.StartMinIO instead: this package
// links the testing package into whatever imports it.
func StartMinIO() (srv *Server, stop func(), err error) {
	s, stop, err := s3server.StartMinIO(context.Background(), envOr("MINIO_ROOT_USER", "minioadmin"), envOr("MINIO_ROOT_PASSWORD", "minioadmin"))
	if err != nil {
		return nil, nil, err
	}
	return wrap(s), stop, nil
}

// ToolVersion is s3server.ToolVersion, kept for existing callers; code
// outside tests must call s3server.ToolVersion.
func ToolVersion(name string) (string, error) { return s3server.ToolVersion(name) }

//go:build unix && !linux

package filestore

import "syscall"

// Other Unix systems: extended attributes are not used; content types
// fall back to the file extension (see the package comment).

func fsetxattr(fd uintptr, name string, value []byte) error { return syscall.ENOTSUP }

func fgetxattr(fd uintptr, name string) ([]byte, error) { return nil, errNoXattrs }

func isNoXattrs(err error) bool { return err == syscall.ENOTSUP }

package filestore

import (
	"errors"
	"syscall"
	"unsafe"
)

// Linux-only: the syscall package has path-based xattr calls but not the
// fd-based ones, and only fd-based calls read the attributes of exactly
// the file a reader has open (a path may have been renamed over since).

func fsetxattr(fd uintptr, name string, value []byte) error {
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return err
	}
	var v unsafe.Pointer
	if len(value) > 0 {
		v = unsafe.Pointer(&value[0])
	}
	_, _, e := syscall.Syscall6(syscall.SYS_FSETXATTR, fd, uintptr(unsafe.Pointer(p)), uintptr(v), uintptr(len(value)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// fgetxattr returns the attribute's value; a missing attribute returns
// errNoAttr and an unsupporting filesystem errNoXattrs.
func fgetxattr(fd uintptr, name string) ([]byte, error) {
	p, err := syscall.BytePtrFromString(name)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 256)
	for {
		n, _, e := syscall.Syscall6(syscall.SYS_FGETXATTR, fd, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)), 0, 0)
		switch {
		case e == 0:
			return buf[:n], nil
		case e == syscall.ERANGE && len(buf) < 64<<10:
			buf = make([]byte, 4*len(buf))
		case e == syscall.ENODATA:
			return nil, errNoAttr
		case e == syscall.ENOTSUP:
			return nil, errNoXattrs
		default:
			return nil, e
		}
	}
}

func isNoXattrs(err error) bool { return errors.Is(err, syscall.ENOTSUP) }

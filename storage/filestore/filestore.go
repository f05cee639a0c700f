//go:build unix

// Package filestore is the local-folder storage.Bucket, the embedded
// default backend. It runs on Unix systems (it relies on flock(2)).
//
// # Layout
//
// A key is the relative path of a regular file below the root folder,
// exactly: the key "resources/Patient/p1/current.json" is the file
// root/resources/Patient/p1/current.json, holding the object's bytes and
// nothing else. This is a public contract: the folder can be read, backed
// up and copied with ordinary tools.
//
// The folder root/.fhirbucket is reserved for the driver: temporary files
// (tmp/) and lock files (locks/). List never shows it, and every
// operation rejects keys whose first segment is ".fhirbucket" (compared
// case-insensitively, for case-insensitive filesystems) with
// storage.ErrInvalidKey. Symbolic links are not objects: List skips them,
// and any access that would resolve outside root fails (os.Root enforces
// the confinement).
//
// A key that would need a folder where an object file exists, or a file
// where a folder exists (both "a" and "a/b"), cannot be stored: S3 allows
// it, a folder cannot. Such a Put fails with storage.ErrInvalidKey.
//
// # Writes
//
// Every Put streams the body to a temporary file under .fhirbucket/tmp
// (the same filesystem as every object, so rename is atomic), fsyncs it,
// and then, holding the key's lock, checks the preconditions, renames the
// file over the key and fsyncs the folder. Readers therefore see the whole
// old or the whole new object. Locks are flock(2) locks on one of 256
// lock files chosen by a hash of the key, taken behind an in-process
// mutex, so conditional puts and deletes are atomic across goroutines and
// across processes sharing the folder. Delete removes the file and then
// the folders it leaves empty, up to root (best effort).
//
// # ETags and content types
//
// The ETag is derived from the file itself: its modification time in
// nanoseconds, inode number and size. Under the key's lock every write
// sets the new file's modification time strictly after the old file's, so
// each write yields a new ETag even when two writes land within the
// filesystem's clock tick and the inode number is reused, and an ETag
// never needs a separate metadata store that could disagree with the
// file. A file edited or replaced by hand gets a new ETag too.
//
// The content type is stored in the extended attribute
// "user.fhirbucket.content-type" of the object's file, set on the
// temporary file before the rename so that it changes atomically with the
// body. On filesystems without user extended attributes it is not
// persisted, and Get and Stat return the type registered for the key's
// extension (mime.TypeByExtension), or "".
package filestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"mime"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"fhirbucket/storage"
)

// ReservedDir is the folder below root that holds the driver's own files.
const ReservedDir = ".fhirbucket"

const (
	tmpDir       = ReservedDir + "/tmp"
	lockDir      = ReservedDir + "/locks"
	lockStripes  = 256
	xattrCType   = "user.fhirbucket.content-type"
	staleTempAge = time.Hour
)

// readDirHook, when set by a test, sees every folder List reads.
var readDirHook func(dir string)

var (
	errNoAttr   = errors.New("extended attribute not set")
	errNoXattrs = errors.New("extended attributes not supported")
)

// Bucket is a storage.Bucket over a local folder. Close releases it.
type Bucket struct {
	dir   string // absolute path of root, for messages and existence checks
	root  *os.Root
	locks [lockStripes]sync.Mutex
	log   *slog.Logger
}

var (
	_ storage.Bucket = (*Bucket)(nil)
	_ io.Closer      = (*Bucket)(nil)
)

// Open opens the existing folder dir as a bucket. A missing dir, or one
// that is not a folder, fails with an error wrapping
// storage.ErrBucketNotFound that names it. Open creates the reserved
// folder inside dir and removes temporary files left there more than an
// hour ago by crashed writers.
func Open(dir string) (*Bucket, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("filestore: open %q: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("filestore: data folder %s does not exist: %w", abs, storage.ErrBucketNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("filestore: open %s: %w", abs, err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("filestore: data folder %s is not a folder: %w", abs, storage.ErrBucketNotFound)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("filestore: open %s: %w", abs, err)
	}
	b := &Bucket{dir: abs, root: root, log: slog.Default().With("bucket", abs)}
	for _, d := range []string{tmpDir, lockDir} {
		if err := root.MkdirAll(d, 0o755); err != nil {
			root.Close()
			return nil, fmt.Errorf("filestore: create %s: %w", filepath.Join(abs, d), err)
		}
	}
	b.removeStaleTemps()
	return b, nil
}

// Create is Open after creating dir (and its parents) if it is missing.
func Create(dir string) (*Bucket, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("filestore: create %s: %w", dir, err)
	}
	return Open(dir)
}

// Close releases the folder. The bucket must not be used afterwards.
func (b *Bucket) Close() error { return b.root.Close() }

// Dir is the absolute path of the bucket's folder.
func (b *Bucket) Dir() string { return b.dir }

func (b *Bucket) removeStaleTemps() {
	d, err := b.root.Open(tmpDir)
	if err != nil {
		return
	}
	defer d.Close()
	entries, err := d.ReadDir(-1)
	if err != nil {
		return
	}
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleTempAge {
			if err := b.root.Remove(tmpDir + "/" + e.Name()); err == nil {
				b.log.Info("removed stale temporary file", "file", e.Name())
			}
		}
	}
}

func fail(op, key string, err error) error {
	return &storage.Error{Op: op, Key: key, Err: err}
}

// checkKey applies storage.ValidKey and the reservation of ReservedDir.
func checkKey(key string) error {
	if err := storage.ValidKey(key); err != nil {
		return err
	}
	first, _, _ := strings.Cut(key, "/")
	if strings.EqualFold(first, ReservedDir) {
		return fmt.Errorf("%w: %q is reserved by the local-folder store", storage.ErrInvalidKey, first)
	}
	return nil
}

// isNotExist reports the errors that mean "no object at this path": a
// missing path, or a path going through a file (ENOTDIR).
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// mapErr turns an OS error into a storage error for op and key.
func mapErr(op, key string, err error) error {
	switch {
	case isNotExist(err):
		return fail(op, key, fmt.Errorf("%w: %w", storage.ErrNotExist, err))
	case errors.Is(err, syscall.ENAMETOOLONG):
		return fail(op, key, fmt.Errorf("%w: a path segment is longer than the filesystem allows: %w", storage.ErrInvalidKey, err))
	case errors.Is(err, fs.ErrPermission):
		return fail(op, key, fmt.Errorf("%w: %w", storage.ErrAccessDenied, err))
	}
	return fail(op, key, err)
}

// etag derives the opaque version tag of a file (see the package comment).
func etag(fi fs.FileInfo) string {
	var ino uint64
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino = uint64(st.Ino)
	}
	return fmt.Sprintf(`"%x-%x-%x"`, fi.ModTime().UnixNano(), ino, fi.Size())
}

func attrsOf(key string, fi fs.FileInfo, contentType string) storage.Attrs {
	return storage.Attrs{Key: key, Size: fi.Size(), ETag: etag(fi), ModTime: fi.ModTime().UTC(), ContentType: contentType}
}

// contentType reads the stored media type of an open object file.
func contentType(f *os.File, key string) string {
	v, err := fgetxattr(f.Fd(), xattrCType)
	switch {
	case err == nil:
		return string(v)
	case errors.Is(err, errNoXattrs):
		return mime.TypeByExtension(path.Ext(key))
	}
	return ""
}

// openObject opens the regular file of key, or fails with ErrNotExist.
func (b *Bucket) openObject(op, key string) (*os.File, fs.FileInfo, error) {
	f, err := b.root.Open(key)
	if err != nil {
		return nil, nil, mapErr(op, key, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, mapErr(op, key, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fail(op, key, fmt.Errorf("%w: %s is a folder", storage.ErrNotExist, key))
	}
	return f, fi, nil
}

// Get opens the object's file; the caller reads and closes it. The file
// stays readable, with the content it had, even if a Put replaces it
// meanwhile.
func (b *Bucket) Get(ctx context.Context, key string) (io.ReadCloser, storage.Attrs, error) {
	if err := checkKey(key); err != nil {
		return nil, storage.Attrs{}, fail("get", key, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, storage.Attrs{}, fail("get", key, err)
	}
	f, fi, err := b.openObject("get", key)
	if err != nil {
		return nil, storage.Attrs{}, err
	}
	return f, attrsOf(key, fi, contentType(f, key)), nil
}

// Stat returns the object's attributes.
func (b *Bucket) Stat(ctx context.Context, key string) (storage.Attrs, error) {
	if err := checkKey(key); err != nil {
		return storage.Attrs{}, fail("stat", key, err)
	}
	if err := ctx.Err(); err != nil {
		return storage.Attrs{}, fail("stat", key, err)
	}
	f, fi, err := b.openObject("stat", key)
	if err != nil {
		return storage.Attrs{}, err
	}
	defer f.Close()
	return attrsOf(key, fi, contentType(f, key)), nil
}

// Delete removes the object's file, then the folders left empty.
func (b *Bucket) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return fail("delete", key, err)
	}
	if err := ctx.Err(); err != nil {
		return fail("delete", key, err)
	}
	unlock, err := b.lock(key)
	if err != nil {
		return fail("delete", key, err)
	}
	defer unlock()
	fi, err := b.root.Lstat(key)
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return mapErr("delete", key, err)
	}
	if fi.IsDir() {
		return nil // a folder of other keys, not an object
	}
	if err := b.root.Remove(key); err != nil && !isNotExist(err) {
		return mapErr("delete", key, err)
	}
	parent := path.Dir(key)
	if err := b.syncDir(parent); err != nil && !isNotExist(err) {
		return fail("delete", key, err)
	}
	// Best effort: a folder that is not empty (or gained an entry) stays.
	for d := parent; d != "."; d = path.Dir(d) {
		if b.root.Remove(d) != nil {
			break
		}
	}
	return nil
}

// sortedEntries reads one folder and sorts it in key order: a folder
// named n sorts as n+"/", because its keys all start with that.
func (b *Bucket) sortedEntries(dir string) ([]fs.DirEntry, error) {
	if dir == "" {
		dir = "."
	}
	if readDirHook != nil {
		readDirHook(dir)
	}
	d, err := b.root.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	entries, err := d.ReadDir(-1)
	if err != nil {
		return nil, err
	}
	name := func(e fs.DirEntry) string {
		if e.IsDir() {
			return e.Name() + "/"
		}
		return e.Name()
	}
	slices.SortFunc(entries, func(x, y fs.DirEntry) int { return strings.Compare(name(x), name(y)) })
	return entries, nil
}

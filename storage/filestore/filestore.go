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
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
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

// lock takes the in-process and cross-process lock of key's stripe and
// returns its release. The mutex comes first so that at most one
// goroutine per stripe blocks in flock (which holds an OS thread).
func (b *Bucket) lock(key string) (func(), error) {
	h := fnv.New32a()
	h.Write([]byte(key))
	stripe := h.Sum32() % lockStripes
	mu := &b.locks[stripe]
	mu.Lock()
	f, err := b.root.OpenFile(fmt.Sprintf("%s/%02x", lockDir, stripe), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		mu.Unlock()
		return nil, fmt.Errorf("open lock file: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		mu.Unlock()
		return nil, fmt.Errorf("lock: %w", err)
	}
	return func() {
		// Closing the file releases the flock.
		f.Close()
		mu.Unlock()
	}, nil
}

// Put writes the object atomically; see the package comment.
func (b *Bucket) Put(ctx context.Context, key string, body io.Reader, opts storage.PutOptions) (storage.Attrs, error) {
	if err := checkKey(key); err != nil {
		return storage.Attrs{}, fail("put", key, err)
	}
	if err := storage.CheckPutOptions(opts); err != nil {
		return storage.Attrs{}, fail("put", key, err)
	}
	if err := ctx.Err(); err != nil {
		return storage.Attrs{}, fail("put", key, err)
	}
	tmp, f, err := b.writeTemp(ctx, body, opts)
	if err != nil {
		return storage.Attrs{}, fail("put", key, err)
	}
	defer func() {
		f.Close()
		if tmp != "" {
			b.root.Remove(tmp)
		}
	}()

	unlock, err := b.lock(key)
	if err != nil {
		return storage.Attrs{}, fail("put", key, err)
	}
	defer unlock()
	// Checked again under the lock: a cancelled put must write nothing.
	if err := ctx.Err(); err != nil {
		return storage.Attrs{}, fail("put", key, err)
	}
	cur, err := b.root.Stat(key)
	exists := err == nil
	switch {
	case err != nil && !isNotExist(err):
		return storage.Attrs{}, mapErr("put", key, err)
	case exists && cur.IsDir():
		return storage.Attrs{}, fail("put", key, fmt.Errorf("%w: %s is a folder holding other keys", storage.ErrInvalidKey, key))
	case opts.IfNoneMatch == "*" && exists:
		return storage.Attrs{}, fail("put", key, storage.ErrPreconditionFailed)
	case opts.IfMatch != "" && !exists:
		return storage.Attrs{}, fail("put", key, storage.ErrNotExist)
	case opts.IfMatch != "" && etag(cur) != opts.IfMatch:
		return storage.Attrs{}, fail("put", key, storage.ErrPreconditionFailed)
	}
	var after time.Time
	if exists {
		after = cur.ModTime()
	}
	if err := b.setModTime(tmp, f, after); err != nil {
		return storage.Attrs{}, fail("put", key, err)
	}
	if err := b.rename(tmp, key); err != nil {
		return storage.Attrs{}, fail("put", key, err)
	}
	tmp = "" // renamed: nothing to clean up
	fi, err := f.Stat()
	if err != nil {
		return storage.Attrs{}, mapErr("put", key, err)
	}
	return attrsOf(key, fi, opts.ContentType), nil
}

// writeTemp streams body into a new temporary file, sets its content
// type and fsyncs it. It returns the file's name below root and the open
// file, which the caller closes and removes unless renamed.
func (b *Bucket) writeTemp(ctx context.Context, body io.Reader, opts storage.PutOptions) (string, *os.File, error) {
	var rnd [12]byte
	rand.Read(rnd[:])
	tmp := tmpDir + "/" + hex.EncodeToString(rnd[:])
	f, err := b.root.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", nil, fmt.Errorf("create temporary file: %w", err)
	}
	cleanup := func(err error) (string, *os.File, error) {
		f.Close()
		b.root.Remove(tmp)
		return "", nil, err
	}
	n, err := io.Copy(f, storage.ContextReader(ctx, body))
	if err != nil {
		return cleanup(err)
	}
	if opts.Size > 0 && n != opts.Size {
		return cleanup(fmt.Errorf("%w: body is %d bytes, PutOptions.Size is %d", storage.ErrInvalidArgument, n, opts.Size))
	}
	if opts.ContentType != "" {
		if err := fsetxattr(f.Fd(), xattrCType, []byte(opts.ContentType)); err != nil && !isNoXattrs(err) {
			return cleanup(fmt.Errorf("store content type: %w", err))
		}
	}
	if err := f.Sync(); err != nil {
		return cleanup(fmt.Errorf("fsync: %w", err))
	}
	return tmp, f, nil
}

// setModTime gives the temporary file a modification time strictly after
// the replaced file's (see the package comment on ETags). A filesystem
// with coarse timestamps may round the time down, so the result is
// checked and pushed further until it is later.
func (b *Bucket) setModTime(tmp string, f *os.File, after time.Time) error {
	t := time.Now()
	for step := time.Nanosecond; ; step *= 1000 {
		if !t.After(after) {
			t = after.Add(step)
		}
		if err := b.root.Chtimes(tmp, t, t); err != nil {
			return fmt.Errorf("set modification time: %w", err)
		}
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		if fi.ModTime().After(after) {
			return nil
		}
		if step >= time.Second {
			return fmt.Errorf("filesystem keeps modification time %v at or before %v", fi.ModTime(), after)
		}
		t = after
	}
}

// rename moves tmp to key, creating the parent folders, and fsyncs the
// folders whose entries changed. A concurrent Delete of a sibling key
// (which holds a different lock) may remove a just-created empty parent,
// so folder creation and rename are retried.
func (b *Bucket) rename(tmp, key string) error {
	parent := path.Dir(key)
	var err error
	for range 100 {
		// The deepest folder that already exists is the last one whose
		// entries change; every folder below it is new.
		existing := parent
		for existing != "." {
			if _, err := b.root.Stat(existing); err == nil {
				break
			}
			existing = path.Dir(existing)
		}
		if parent != "." {
			err = b.root.MkdirAll(parent, 0o755)
			if errors.Is(err, fs.ErrNotExist) {
				continue // a folder on the way was removed meanwhile
			}
			if err != nil {
				if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, fs.ErrExist) {
					if b.fileOnPath(parent) {
						return fmt.Errorf("%w: a parent of %s is an object, not a folder", storage.ErrInvalidKey, key)
					}
					continue // a folder vanished between two steps of MkdirAll
				}
				if errors.Is(err, syscall.ENAMETOOLONG) {
					return fmt.Errorf("%w: a path segment of %s is longer than the filesystem allows", storage.ErrInvalidKey, key)
				}
				return fmt.Errorf("create folder: %w", err)
			}
		}
		err = b.root.Rename(tmp, key)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if errors.Is(err, syscall.ENAMETOOLONG) {
			return fmt.Errorf("%w: a path segment of %s is longer than the filesystem allows", storage.ErrInvalidKey, key)
		}
		if err != nil {
			return fmt.Errorf("rename: %w", err)
		}
		for d := parent; ; d = path.Dir(d) {
			if err := b.syncDir(d); err != nil {
				return err
			}
			if d == existing || d == "." {
				break
			}
		}
		return nil
	}
	return fmt.Errorf("rename: %w", err)
}

// fileOnPath reports whether dir or one of its parents is not a folder.
func (b *Bucket) fileOnPath(dir string) bool {
	for d := dir; d != "."; d = path.Dir(d) {
		if fi, err := b.root.Stat(d); err == nil && !fi.IsDir() {
			return true
		}
	}
	return false
}

func (b *Bucket) syncDir(dir string) error {
	d, err := b.root.Open(dir)
	if err != nil {
		return fmt.Errorf("fsync folder: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync folder: %w", err)
	}
	return nil
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

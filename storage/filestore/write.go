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
	"os"
	"path"
	"syscall"
	"time"

	"fhirbucket/storage"
)

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

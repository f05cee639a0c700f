//go:build unix

package filestore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"fhirbucket/storage"
)

// List walks the folder tree in key order, reading only the folders that
// can hold keys of the page: it starts at the deepest folder named by the
// prefix, skips folders whose keys all sort at or before StartAfter, and
// stops as soon as the page is full and one more entry proves that the
// listing continues.
func (b *Bucket) List(ctx context.Context, opts storage.ListOptions) (storage.ListPage, error) {
	if err := storage.CheckListOptions(opts); err != nil {
		return storage.ListPage{}, fail("list", opts.Prefix, err)
	}
	if err := ctx.Err(); err != nil {
		return storage.ListPage{}, fail("list", opts.Prefix, err)
	}
	// A vanished data folder is an error, never an empty bucket.
	if _, err := os.Stat(b.dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return storage.ListPage{}, fail("list", opts.Prefix, fmt.Errorf("%w: data folder %s", storage.ErrBucketNotFound, b.dir))
		}
		return storage.ListPage{}, mapErr("list", opts.Prefix, err)
	}
	l := &lister{
		b: b, ctx: ctx, prefix: opts.Prefix, after: opts.StartAfter,
		delim: opts.Delimiter != "", limit: storage.PageSize(opts.MaxKeys),
	}
	start := opts.Prefix[:strings.LastIndex(opts.Prefix, "/")+1]
	if first, _, _ := strings.Cut(start, "/"); strings.EqualFold(first, ReservedDir) {
		return storage.ListPage{}, nil // the driver's own files are never keys
	}
	if err := l.walk(start); err != nil {
		return storage.ListPage{}, mapErr("list", opts.Prefix, err)
	}
	return l.page, nil
}

type lister struct {
	b             *Bucket
	ctx           context.Context
	prefix, after string
	delim         bool
	limit, n      int
	page          storage.ListPage
	done          bool
}

// emit adds one entry, or ends the listing when the page is already full:
// the entry proves there is more, so Next is set.
func (l *lister) emit(obj *storage.Attrs, commonPrefix string) {
	if l.n == l.limit {
		l.done = true
		last := ""
		if k := len(l.page.Objects); k > 0 {
			last = l.page.Objects[k-1].Key
		}
		if k := len(l.page.Prefixes); k > 0 {
			last = max(last, storage.AfterPrefix(l.page.Prefixes[k-1]))
		}
		l.page.Next = last
		return
	}
	l.n++
	if obj != nil {
		l.page.Objects = append(l.page.Objects, *obj)
	} else {
		l.page.Prefixes = append(l.page.Prefixes, commonPrefix)
	}
}

// skipDir reports whether folder d (ending in "/") holds no key the
// listing wants: it does not meet the prefix, or every key below it is at
// or before StartAfter.
func (l *lister) skipDir(d string) bool {
	if !strings.HasPrefix(d, l.prefix) && !strings.HasPrefix(l.prefix, d) {
		return true
	}
	return l.after >= d && !strings.HasPrefix(l.after, d)
}

// walk lists folder dir ("" for root, else ending in "/").
func (l *lister) walk(dir string) error {
	if err := l.ctx.Err(); err != nil {
		return err
	}
	entries, err := l.b.sortedEntries(dir)
	if isNotExist(err) && dir != "" {
		return nil // the prefix names no folder: no keys
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if l.done {
			return nil
		}
		key := dir + e.Name()
		if dir == "" && strings.EqualFold(e.Name(), ReservedDir) {
			continue
		}
		switch {
		case e.IsDir():
			d := key + "/"
			if l.skipDir(d) {
				continue
			}
			if l.delim && len(d) > len(l.prefix) && strings.HasPrefix(d, l.prefix) {
				// d is one segment past the prefix: a common prefix, if
				// it holds any key after StartAfter.
				found, err := l.hasKey(d)
				if err != nil {
					return err
				}
				if found {
					l.emit(nil, d)
				}
				continue
			}
			if err := l.walk(d); err != nil {
				return err
			}
		case e.Type().IsRegular():
			if !strings.HasPrefix(key, l.prefix) || key <= l.after {
				continue
			}
			fi, err := e.Info()
			if isNotExist(err) {
				continue // deleted since the folder was read
			}
			if err != nil {
				return err
			}
			a := attrsOf(key, fi, "")
			l.emit(&a, "")
		}
		// Anything else (symbolic links, sockets) is not an object.
	}
	return nil
}

// hasKey reports whether folder d holds a regular file with a key after
// StartAfter, reading no more than it must to find the first one.
func (l *lister) hasKey(d string) (bool, error) {
	entries, err := l.b.sortedEntries(d)
	if isNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		key := d + e.Name()
		switch {
		case e.IsDir():
			if l.skipDir(key + "/") {
				continue
			}
			if ok, err := l.hasKey(key + "/"); ok || err != nil {
				return ok, err
			}
		case e.Type().IsRegular():
			if key > l.after {
				return true, nil
			}
		}
	}
	return false, nil
}

package loader

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Kind says how a file is read.
type Kind int

const (
	// KindBundle is one batch or transaction Bundle (*.json, *.json.gz),
	// sent as it is.
	KindBundle Kind = iota + 1
	// KindNDJSON is one resource per line (*.ndjson, *.ndjson.gz), sent
	// in batch Bundles of Config.BatchSize entries.
	KindNDJSON
)

func (k Kind) String() string {
	switch k {
	case KindBundle:
		return "bundle"
	case KindNDJSON:
		return "ndjson"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Input is one file to load.
type Input struct {
	Path string
	Kind Kind
	Gzip bool
}

// KindOf tells from a file name how it is loaded; ok is false for a
// name that is none of *.json, *.ndjson, *.json.gz, *.ndjson.gz
// (case-insensitive).
func KindOf(name string) (kind Kind, gz bool, ok bool) {
	n := strings.ToLower(name)
	if strings.HasSuffix(n, ".gz") {
		n, gz = strings.TrimSuffix(n, ".gz"), true
	}
	switch {
	case strings.HasSuffix(n, ".ndjson"):
		return KindNDJSON, gz, true
	case strings.HasSuffix(n, ".json"):
		return KindBundle, gz, true
	}
	return 0, false, false
}

// Collect turns the paths a user named into the files to load, in the
// order given; a directory contributes the loadable files below it in
// lexical order, skipping names that start with "." and files of other
// extensions. A file named explicitly must be loadable, and a path named
// twice (or reached twice) is loaded once. Errors name the path; nothing
// is read beyond directory listings.
func Collect(paths []string) ([]Input, error) {
	if len(paths) == 0 {
		return nil, errors.New("no file or directory to load")
	}
	var out []Input
	seen := map[string]bool{}
	add := func(p string) {
		key := p
		if abs, err := filepath.Abs(p); err == nil {
			key = abs
		}
		if seen[key] {
			return
		}
		seen[key] = true
		kind, gz, _ := KindOf(p)
		out = append(out, Input{Path: p, Kind: kind, Gzip: gz})
	}
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		if !fi.IsDir() {
			if _, _, ok := KindOf(p); !ok {
				return nil, fmt.Errorf("%s: not a *.json Bundle or *.ndjson file (optionally .gz)", p)
			}
			add(p)
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if path != p && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if d.IsDir() {
				return nil
			}
			if _, _, ok := KindOf(d.Name()); ok && (d.Type().IsRegular() || d.Type()&fs.ModeSymlink != 0) {
				add(path)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// open opens an input, decompressing it when it is gzipped; the caller
// closes the result.
func (in Input) open() (io.ReadCloser, error) {
	f, err := os.Open(in.Path)
	if err != nil {
		return nil, err
	}
	if !in.Gzip {
		return f, nil
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return &gzipFile{Reader: zr, f: f}, nil
}

type gzipFile struct {
	*gzip.Reader
	f *os.File
}

func (g *gzipFile) Close() error {
	err := g.Reader.Close()
	if cerr := g.f.Close(); err == nil {
		err = cerr
	}
	return err
}

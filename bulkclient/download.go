package bulkclient

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"fhirbucket/internal/clientkit"
)

func snippet(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

// fileName is the local name of a manifest file: the server's name
// parameter, else the URL's last path segment; never a path.
func fileName(u string) (string, error) {
	pu, err := url.Parse(u)
	if err != nil {
		return "", err
	}
	name := pu.Query().Get("name")
	if name == "" {
		name = filepath.Base(pu.Path)
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) || name == "job.json" || name == "manifest.json" {
		return "", fmt.Errorf("no usable file name in %q", u)
	}
	return name, nil
}

// countLines counts the lines of a complete local file; -1 when absent.
func countLines(path string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return -1
	}
	defer f.Close()
	return lines(f)
}

func lines(r io.Reader) int64 {
	var n int64
	br := bufio.NewReaderSize(r, 1<<16)
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 && chunk[len(chunk)-1] == '\n' {
			n++
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return n
		}
	}
}

func (c *client) downloadAll(ctx context.Context, m *Manifest, status string) (*Result, error) {
	files := append(append(append([]File{}, m.Output...), m.Deleted...), m.Error...)
	res := &Result{StatusURL: status, Files: len(files)}
	c.stats.Files.Store(int64(len(files)))
	c.stats.Downloading.Store(true)
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	sem := make(chan struct{}, c.cfg.Parallel)
	for _, f := range files {
		name, err := fileName(f.URL)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		path := filepath.Join(c.cfg.Out, name)
		if countLines(path) == int64(f.Count) {
			c.stats.Skipped.Add(1)
			c.stats.FilesDone.Add(1)
			mu.Lock()
			res.Skipped++
			res.Lines += int64(f.Count)
			mu.Unlock()
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return res, ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			n, err := c.download(ctx, f, path)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				c.cfg.OnEvent(fmt.Sprintf("%s: failed: %v", name, err))
				return
			}
			res.Downloaded++
			res.Lines += n
			c.stats.FilesDone.Add(1)
			c.cfg.OnEvent(fmt.Sprintf("%s: %d lines", name, n))
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("%d of %d files failed: %w", len(errs), len(files), errors.Join(errs...))
	}
	return res, nil
}

// countingWriter counts the bytes and lines written through it.
type countingWriter struct {
	w     io.Writer
	stats *Stats
	lines int64
}

func (cw *countingWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.stats.Bytes.Add(int64(n))
	for _, b := range p[:n] {
		if b == '\n' {
			cw.lines++
		}
	}
	return n, err
}

// download fetches one file into path (through path.part), asking for
// gzip, and checks its line count. A failed attempt is retried from the
// start.
func (c *client) download(ctx context.Context, f File, path string) (int64, error) {
	var last error
	for n := 0; n <= c.cfg.Retries; n++ {
		if n > 0 {
			if err := sleep(ctx, clientkit.Backoff(c.cfg.RetryBase, c.cfg.RetryMax, n-1)); err != nil {
				return 0, err
			}
		}
		lines, retry, err := c.fetch(ctx, f, path)
		if err == nil {
			return lines, nil
		}
		if !retry || ctx.Err() != nil {
			return 0, err
		}
		last = err
	}
	return 0, last
}

func (c *client) fetch(ctx context.Context, f File, path string) (lines int64, retry bool, err error) {
	resp, _, err := c.do(ctx, f.URL, map[string]string{"Accept": "application/fhir+ndjson", "Accept-Encoding": "gzip"}, false)
	if err != nil {
		return 0, true, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return 0, resp.StatusCode >= 500, fmt.Errorf("%s: %s", resp.Status, snippet(body))
	}
	var body io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return 0, true, fmt.Errorf("gzip: %w", err)
		}
		body = zr
	}
	tmp := path + ".part"
	out, err := os.Create(tmp)
	if err != nil {
		return 0, false, err
	}
	cw := &countingWriter{w: out, stats: c.stats}
	_, err = io.Copy(cw, body)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	c.stats.Lines.Add(cw.lines)
	if err != nil {
		os.Remove(tmp)
		return 0, true, err
	}
	if cw.lines != int64(f.Count) {
		os.Remove(tmp)
		return 0, true, fmt.Errorf("%d lines, the manifest says %d", cw.lines, f.Count)
	}
	return cw.lines, false, os.Rename(tmp, path)
}

package s3test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// startTimeout bounds how long a freshly started server may take to answer.
const startTimeout = 60 * time.Second

// findBinary looks for name in $PATH, then in <repo root>/.tools/bin, where
// `make tools` installs the pinned versions.
func findBinary(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	root, err := repoRoot()
	if err == nil {
		p := filepath.Join(root, ".tools", "bin", name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in $PATH or .tools/bin; run `make tools` (scripts/install-tools.sh) to install it", name)
}

// repoRoot walks up from the working directory (a package folder under go
// test) to the folder holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// process is a started server process and its log.
type process struct {
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
	err  error // exit status, valid after done is closed
}

// syncBuffer is a log sink written by the child's output copier and read
// by error messages.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 1<<20 { // keep memory bounded; the start-up lines matter most
		return len(p), nil
	}
	return b.buf.Write(p)
}

// tail returns the last n bytes of the log.
func (b *syncBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > n {
		s = "…" + s[len(s)-n:]
	}
	return s
}

func startProcess(bin string, args, env []string) (*process, error) {
	p := &process{log: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = p.log
	p.cmd.Stderr = p.log
	setDeathSignal(p.cmd)
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// stop terminates the process, politely first.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitHTTP polls url until it answers with a status accepted by ok, the
// process exits, or startTimeout passes.
func (p *process) waitHTTP(url string, ok func(status int) bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	last := ""
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if ok(resp.StatusCode) {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-p.done:
			return fmt.Errorf("server exited before it was ready (%v); its output:\n%s", p.err, p.log.tail(4000))
		case <-ctx.Done():
			return fmt.Errorf("server not ready after %s at %s (last answer: %s); its output:\n%s", startTimeout, url, last, p.log.tail(4000))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startWithRetry starts a server on a fresh port, trying again when the
// port was taken between choosing and binding it.
func startWithRetry(kind string, start func() (*Server, *process, error)) (*Server, error) {
	var err error
	for range 3 {
		var srv *Server
		var p *process
		srv, p, err = start()
		if err == nil {
			onStop(p.stop)
			return srv, nil
		}
		if p != nil {
			p.stop()
		}
	}
	return nil, fmt.Errorf("starting %s: %w", kind, err)
}

func startMinIO(user, pass string) (*Server, error) {
	bin, err := findBinary("minio")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "fhirbucket-minio-")
	if err != nil {
		return nil, err
	}
	onStop(func() { os.RemoveAll(dir) })
	return startWithRetry("minio", func() (*Server, *process, error) {
		port, err := freePort()
		if err != nil {
			return nil, nil, err
		}
		console, err := freePort()
		if err != nil {
			return nil, nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		p, err := startProcess(bin,
			[]string{"server", "--quiet", "--address", addr, "--console-address", "127.0.0.1:" + strconv.Itoa(console), dir},
			[]string{"MINIO_ROOT_USER=" + user, "MINIO_ROOT_PASSWORD=" + pass, "MINIO_BROWSER=off", "MINIO_UPDATE=off"})
		if err != nil {
			return nil, nil, err
		}
		endpoint := "http://" + addr
		if err := p.waitHTTP(endpoint+"/minio/health/ready", func(s int) bool { return s == http.StatusOK }); err != nil {
			return nil, p, err
		}
		srv, err := newServer("minio", endpoint, user, pass)
		if srv != nil {
			srv.private = true
		}
		return srv, p, err
	})
}

// versitygw root credentials; the server lives only for the test binary.
const (
	versityAccess = "fhirbucket-test"
	versitySecret = "fhirbucket-test-secret"
)

func startVersityGW() (*Server, error) {
	bin, err := findBinary("versitygw")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "fhirbucket-versitygw-")
	if err != nil {
		return nil, err
	}
	onStop(func() { os.RemoveAll(dir) })
	return startWithRetry("versitygw", func() (*Server, *process, error) {
		port, err := freePort()
		if err != nil {
			return nil, nil, err
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		// --keep-alive: versitygw closes connections after each request by
		// default, which would make it look far slower than it is.
		// The posix backend keeps object metadata in extended attributes
		// of the files under dir (supported by ext4, xfs, btrfs, tmpfs).
		p, err := startProcess(bin,
			[]string{"--access", versityAccess, "--secret", versitySecret, "--port", addr, "--quiet", "--keep-alive", "posix", dir},
			nil)
		if err != nil {
			return nil, nil, err
		}
		endpoint := "http://" + addr
		// Any HTTP answer (an anonymous request is refused) means the
		// listener is up.
		if err := p.waitHTTP(endpoint+"/", func(int) bool { return true }); err != nil {
			return nil, p, err
		}
		srv, err := newServer("versitygw", endpoint, versityAccess, versitySecret)
		if srv != nil {
			srv.private = true
		}
		return srv, p, err
	})
}

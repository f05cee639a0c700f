package s3server

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

// DefaultMinIOUser and DefaultMinIOPassword are MinIO's own default root
// credentials, used by StartMinIO when given none.
const (
	DefaultMinIOUser     = "minioadmin"
	DefaultMinIOPassword = "minioadmin"
)

// versitygw root credentials; the server lives only as long as the process
// that started it.
const (
	versityAccess = "fhirbucket-test"
	versitySecret = "fhirbucket-test-secret"
)

// FindBinary looks for name in $PATH, then in <repo root>/.tools/bin, where
// `make tools` installs the pinned versions.
func FindBinary(name string) (string, error) {
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
// test, anywhere in the checkout for `fhirbucket bench`) to the folder
// holding go.mod.
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

// startProcess runs bin without a context: the server must outlive the
// request that started it (a shared test server, a benchmark run) and is
// ended by stop alone.
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
// process exits, ctx ends or startTimeout passes.
func (p *process) waitHTTP(ctx context.Context, url string, ok func(status int) bool) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	last := ""
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
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
			return fmt.Errorf("server not ready at %s (%w; last answer: %s); its output:\n%s", url, ctx.Err(), last, p.log.tail(4000))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// start runs a server with its data in a fresh temporary folder on a fresh
// port, trying again when the port was taken between choosing and binding
// it. launch starts the process on addr and waits until it is ready.
func start(ctx context.Context, kind string, launch func(ctx context.Context, bin, dir, addr string) (*Server, *process, error)) (*Server, func(), error) {
	bin, err := FindBinary(kind)
	if err != nil {
		return nil, nil, err
	}
	dir, err := os.MkdirTemp("", "fhirbucket-"+kind+"-")
	if err != nil {
		return nil, nil, err
	}
	for range 3 {
		var port int
		if port, err = freePort(); err != nil {
			break
		}
		var (
			srv *Server
			p   *process
		)
		srv, p, err = launch(ctx, bin, dir, "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			srv.private, srv.dataDir = true, dir
			var once sync.Once
			return srv, func() {
				once.Do(func() {
					p.stop()
					os.RemoveAll(dir)
				})
			}, nil
		}
		if p != nil {
			p.stop()
		}
		if ctx.Err() != nil {
			break
		}
	}
	os.RemoveAll(dir)
	return nil, nil, fmt.Errorf("starting %s: %w", kind, err)
}

// StartMinIO starts a private MinIO server: the binary from $PATH or
// <repo>/.tools/bin, a fresh temporary data folder, 127.0.0.1 only, root
// credentials user and password ("" means DefaultMinIOUser /
// DefaultMinIOPassword). It returns once the server is ready, or fails
// after a minute or when ctx ends. stop ends the server and removes its
// data folder; it may be called more than once.
func StartMinIO(ctx context.Context, user, password string) (srv *Server, stop func(), err error) {
	if user == "" {
		user = DefaultMinIOUser
	}
	if password == "" {
		password = DefaultMinIOPassword
	}
	return start(ctx, "minio", func(ctx context.Context, bin, dir, addr string) (*Server, *process, error) {
		console, err := freePort()
		if err != nil {
			return nil, nil, err
		}
		p, err := startProcess(bin,
			[]string{"server", "--quiet", "--address", addr, "--console-address", "127.0.0.1:" + strconv.Itoa(console), dir},
			[]string{"MINIO_ROOT_USER=" + user, "MINIO_ROOT_PASSWORD=" + password, "MINIO_BROWSER=off", "MINIO_UPDATE=off"})
		if err != nil {
			return nil, nil, err
		}
		endpoint := "http://" + addr
		if err := p.waitHTTP(ctx, endpoint+"/minio/health/ready", func(s int) bool { return s == http.StatusOK }); err != nil {
			return nil, p, err
		}
		return New("minio", endpoint, user, password), p, nil
	})
}

// StartVersityGW starts a private versitygw server with its posix backend
// in a fresh temporary folder, on 127.0.0.1 only, like StartMinIO.
func StartVersityGW(ctx context.Context) (srv *Server, stop func(), err error) {
	return start(ctx, "versitygw", func(ctx context.Context, bin, dir, addr string) (*Server, *process, error) {
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
		if err := p.waitHTTP(ctx, endpoint+"/", func(int) bool { return true }); err != nil {
			return nil, p, err
		}
		return New("versitygw", endpoint, versityAccess, versitySecret), p, nil
	})
}

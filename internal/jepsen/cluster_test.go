package jepsen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"fhirbucket/fhirstore"
	"fhirbucket/internal/layout"
	"fhirbucket/internal/s3server"
)

// The cluster is started here rather than through internal/s3test because
// the test kills and restarts MinIO on the same port and data folder,
// which the shared, lazily started server of s3test does not allow. The
// conventions are s3test's: RUN_MINIO_S3_TESTS=1, the binary from $PATH or
// <repo>/.tools/bin, root credentials, 127.0.0.1 only.

const (
	minioUser   = "minioadmin"
	minioPass   = "minioadmin"
	region      = "us-east-1"
	bucketName  = "jepsen"
	readyWithin = 60 * time.Second

	// txLeaseTTL and txRecoveryInterval are the replicas' transaction
	// lease and recovery interval (the shortest lease serve accepts).
	txLeaseTTL         = 3 * time.Second
	txRecoveryInterval = 500 * time.Millisecond
)

// tailBuffer keeps the last part of a process's output for failure
// messages, bounded in memory.
type tailBuffer struct {
	mu  sync.Mutex
	buf []byte
}

const tailMax = 64 << 10

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 2*tailMax {
		b.buf = append([]byte(nil), b.buf[len(b.buf)-tailMax:]...)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf
	if len(s) > 8000 {
		s = s[len(s)-8000:]
	}
	return string(s)
}

// proc is a child process that can be killed and started again with the
// same command line.
type proc struct {
	name string
	bin  string
	args []string
	env  []string
	log  *tailBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = p.env
	cmd.Stdout, cmd.Stderr = p.log, p.log
	// The kernel kills the child if the test binary dies without its
	// cleanups (a panic, go test's -timeout).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// exited reports whether the current process has ended.
func (p *proc) exited() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitHTTP polls url until it answers 200, or fails when the process exits
// or readyWithin passes.
func (p *proc) waitHTTP(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, readyWithin)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	last := ""
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if p.exited() {
			return fmt.Errorf("%s exited before it was ready; its output:\n%s", p.name, p.log)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s (last answer: %s); its output:\n%s", p.name, url, last, p.log)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freePort returns a TCP port on 127.0.0.1 that is free now. Servers are
// restarted on their port, so it is drawn below the kernel's ephemeral
// range: an outgoing connection can never hold it while its server is
// down.
func freePort(t *testing.T) int {
	t.Helper()
	low := 32768
	if data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(data)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 12000 {
				low = v
			}
		}
	}
	for range 200 {
		port := 10000 + mrand.IntN(low-10000)
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			l.Close()
			return port
		}
	}
	t.Fatal("no free port below the ephemeral range")
	return 0
}

// baseEnv is the test's environment without the settings of fhirbucket
// and AWS, which the cluster sets itself.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "FHIRBUCKET_") || strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "MINIO_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// minio is the MinIO server of the test, restartable on its port and
// data folder.
type minio struct {
	*proc
	endpoint string
}

func startMinIO(t *testing.T) *minio {
	t.Helper()
	if os.Getenv("RUN_MINIO_S3_TESTS") != "1" {
		t.Skip("MinIO tests are disabled: set RUN_MINIO_S3_TESTS=1 to run them (`make test` does, installing the server into .tools/bin)")
	}
	bin, err := s3server.FindBinary("minio")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var lastErr error
	for range 3 { // the port may be taken between choosing and binding it
		addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
		m := &minio{endpoint: "http://" + addr, proc: &proc{
			name: "minio", bin: bin, log: &tailBuffer{},
			args: []string{"server", "--quiet", "--address", addr, "--console-address", "127.0.0.1:" + strconv.Itoa(freePort(t)), dir},
			env:  append(baseEnv(), "MINIO_ROOT_USER="+minioUser, "MINIO_ROOT_PASSWORD="+minioPass, "MINIO_BROWSER=off", "MINIO_UPDATE=off"),
		}}
		if err := m.start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.kill)
		if lastErr = m.waitReady(t.Context()); lastErr == nil {
			return m
		}
		m.kill()
	}
	t.Fatal(lastErr)
	return nil
}

func (m *minio) waitReady(ctx context.Context) error {
	return m.waitHTTP(ctx, m.endpoint+"/minio/health/ready")
}

// restart kills MinIO with SIGKILL and starts it again on the same port
// and data folder.
func (m *minio) restart(ctx context.Context, down time.Duration) error {
	m.kill()
	time.Sleep(down)
	if err := m.start(); err != nil {
		return err
	}
	return m.waitReady(ctx)
}

// s3Client is an S3 client of MinIO with the root credentials.
func (m *minio) s3Client() *s3.Client {
	return s3.New(s3.Options{
		Region:                     region,
		BaseEndpoint:               aws.String(m.endpoint),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(minioUser, minioPass, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
}

func (m *minio) createBucket(ctx context.Context, name string) error {
	c := m.s3Client()
	// MinIO may answer ready before it accepts requests
	// (XMinioServerNotInitialized): try for a while.
	ctx, cancel := context.WithTimeout(ctx, readyWithin)
	defer cancel()
	for {
		_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// readStore reads, directly from MinIO, every version object of ids
// (hidden ones too) and every transaction journal of the default tenant.
func (m *minio) readStore(ctx context.Context, ids []string) (*storeSnapshot, error) {
	c := m.s3Client()
	base := fhirstore.DefaultTenant + "/"
	st := &storeSnapshot{versions: map[string]map[int]storedVersion{}, journals: map[string]journal{}}
	type object struct {
		key, id string
		v       int // 0: a journal
	}
	var objects []object
	for _, id := range ids {
		st.versions[id] = map[int]storedVersion{}
	}
	prefixes := []string{base + layout.TransactionsPrefix}
	for _, id := range ids {
		prefixes = append(prefixes, base+layout.VersionsPrefix(resourceType, id))
	}
	for i, prefix := range prefixes {
		p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucketName), Prefix: aws.String(prefix)})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("listing %s: %w", prefix, err)
			}
			for _, o := range page.Contents {
				key := aws.ToString(o.Key)
				if i == 0 {
					objects = append(objects, object{key: key})
					continue
				}
				v, ok := layout.ParseVersion(strings.TrimPrefix(key, prefix))
				if !ok {
					return nil, fmt.Errorf("%s is no version object", key)
				}
				objects = append(objects, object{key: key, id: ids[i-1], v: v})
			}
		}
	}
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, o := range objects {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := func() error {
				out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucketName), Key: aws.String(o.key)})
				if err != nil {
					return err
				}
				defer out.Body.Close()
				data, err := io.ReadAll(out.Body)
				if err != nil {
					return err
				}
				mu.Lock()
				defer mu.Unlock()
				if o.v == 0 {
					var doc struct {
						State struct {
							TxID    string `json:"tx_id"`
							Status  string `json:"status"`
							Entries []struct {
								ID      string `json:"id"`
								Version int    `json:"version"`
							} `json:"entries"`
						} `json:"state"`
					}
					if err := json.Unmarshal(data, &doc); err != nil {
						return err
					}
					j := journal{status: doc.State.Status}
					for _, e := range doc.State.Entries {
						j.entries = append(j.entries, journalEntry{e.ID, e.Version})
					}
					st.journals[doc.State.TxID] = j
					return nil
				}
				var env struct {
					Tx        string    `json:"transaction_id"`
					DeletedAt *string   `json:"deleted_at"`
					Content   *resource `json:"content"`
				}
				if err := json.Unmarshal(data, &env); err != nil {
					return err
				}
				sv := storedVersion{tx: env.Tx, deleted: env.DeletedAt != nil}
				if env.Content != nil {
					sv.marker = env.Content.marker()
				}
				st.versions[o.id][o.v] = sv
				return nil
			}()
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("reading %s: %w", o.key, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return st, firstErr
}

// storeEnv is the environment that points fhirbucket at the bucket
// through endpoint (MinIO or a fault proxy in front of it).
func storeEnv(endpoint string) []string {
	return append(baseEnv(),
		"FHIRBUCKET_BACKEND=s3",
		"FHIRBUCKET_S3_BUCKET="+bucketName,
		"FHIRBUCKET_S3_ENDPOINT_URL="+endpoint,
		"FHIRBUCKET_S3_ALLOW_HTTP=true",
		"FHIRBUCKET_LOG_FORMAT=json",
		"FHIRBUCKET_LOG_LEVEL=warn",
		"AWS_ACCESS_KEY_ID="+minioUser,
		"AWS_SECRET_ACCESS_KEY="+minioPass,
		"AWS_REGION="+region,
	)
}

// buildFhirbucket compiles the command once for the test.
func buildFhirbucket(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fhirbucket")
	// go test puts its own GOROOT/bin first in $PATH.
	cmd := exec.Command("go", "build", "-o", bin, "fhirbucket/cmd/fhirbucket")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/fhirbucket: %v\n%s", err, out)
	}
	return bin
}

// replica is one `fhirbucket serve` on a fixed 127.0.0.1 port, restartable.
type replica struct {
	*proc
	base string // http://127.0.0.1:port
}

func newReplica(t *testing.T, bin string, n int, s3Endpoint string) *replica {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	r := &replica{base: "http://" + addr, proc: &proc{
		name: fmt.Sprintf("replica %d", n), bin: bin, log: &tailBuffer{},
		args: []string{"serve"},
		// Short transaction leases, so that the journal of a transaction
		// whose replica was killed is aborted within the run.
		env: append(storeEnv(s3Endpoint), "FHIRBUCKET_ADDR="+addr,
			"FHIRBUCKET_TX_LEASE_TTL="+txLeaseTTL.String(), "FHIRBUCKET_TX_RECOVERY_INTERVAL="+txRecoveryInterval.String()),
	}}
	t.Cleanup(r.kill)
	return r
}

// launch starts the replica and waits for /readyz; a start that fails
// (the storage check at start-up met an injected fault, the port is not
// free yet) is retried a few times.
func (r *replica) launch(ctx context.Context) error {
	var err error
	for attempt := range 5 {
		if attempt > 0 {
			time.Sleep(500 * time.Millisecond)
		}
		if err = r.start(); err != nil {
			return err
		}
		if err = r.waitHTTP(ctx, r.base+"/readyz"); err == nil {
			return nil
		}
		r.kill()
	}
	return err
}

// fsck runs `fhirbucket fsck` with args against MinIO directly.
func fsck(ctx context.Context, bin, endpoint string, args ...string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"fsck"}, args...)...)
	cmd.Env = storeEnv(endpoint)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), out.String(), nil
	}
	if err != nil {
		return 0, out.String(), err
	}
	return 0, out.String(), nil
}

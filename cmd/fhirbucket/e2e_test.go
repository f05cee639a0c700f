package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"fhirbucket/internal/s3test"
	"fhirbucket/internal/testenv"
)

func TestMain(m *testing.M) { s3test.Main(m) }

// buildBinary compiles the command into a folder of the test (the build
// cache makes every build after the first a link step).
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "fhirbucket")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// childEnv is the parent's environment without settings of its own, plus
// extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, envPrefix) || strings.HasPrefix(kv, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// proc is a running fhirbucket serve.
type proc struct {
	cmd  *exec.Cmd
	logs *testenv.LockedBuffer
	base string
	done chan error
}

// startServe starts the binary and waits for /readyz.
func startServe(t *testing.T, bin, dir string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{logs: &testenv.LockedBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(bin, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	p.cmd.Dir = dir
	p.cmd.Env = childEnv(env...)
	p.cmd.Stderr = p.logs
	p.cmd.Stdout = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-p.done:
			t.Fatalf("serve exited early (%v): %s", err, p.logs.String())
		default:
		}
		if addr := listenAddr(p.logs.String()); addr != "" && p.base == "" {
			p.base = "http://" + addr
		}
		if p.base != "" {
			if resp, err := http.Get(p.base + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					return p
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("serve not ready: %s", p.logs.String())
	return nil
}

// stop sends SIGTERM and checks a clean exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("serve exited with %v after SIGTERM: %s", err, tail(p.logs.String(), 2000))
		}
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not exit after SIGTERM")
	}
	if !strings.Contains(p.logs.String(), `"msg":"stopped"`) {
		t.Errorf("no clean stop in the log: %s", tail(p.logs.String(), 2000))
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// client sends requests to a running server.
type client struct {
	base   string
	tenant string // X-Tenant-ID when set
	hc     *http.Client
}

func (c *client) do(method, path string, body []byte, h ...string) (int, http.Header, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
	}
	if c.tenant != "" {
		req.Header.Set("X-Tenant-ID", c.tenant)
	}
	for i := 0; i+1 < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data, err
}

// example is one official example resource.
type example struct {
	name string
	typ  string
	body []byte
}

func loadExamples(t *testing.T) []example {
	t.Helper()
	var out []example
	for i, e := range testenv.Examples(t) {
		if testing.Short() && i%10 != 0 {
			continue
		}
		var head struct{ ResourceType string }
		if err := json.Unmarshal(e.Body, &head); err != nil || head.ResourceType == "" {
			t.Fatalf("%s: no resourceType (%v)", e.Name, err)
		}
		out = append(out, example{name: e.Name, typ: head.ResourceType, body: e.Body})
	}
	return out
}

// normalise decodes a resource without float64 (numbers stay literal),
// dropping what the server sets: meta.versionId, meta.lastUpdated and,
// when dropID, the id.
func normalise(data []byte, dropID bool) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	if dropID {
		delete(m, "id")
	}
	if meta, ok := m["meta"].(map[string]any); ok {
		delete(meta, "versionId")
		delete(meta, "lastUpdated")
		if len(meta) == 0 {
			delete(m, "meta")
		}
	}
	return m, nil
}

// withID returns body with its top-level id set (numbers kept literal).
func withID(body []byte, id string) ([]byte, error) {
	m, err := normalise(body, true)
	if err != nil {
		return nil, err
	}
	m["id"] = id
	return json.Marshal(m)
}

// driveExample runs the life cycle of one example and returns an error
// describing the first deviation.
func driveExample(c *client, ex example, id string) error {
	want, err := normalise(ex.body, true)
	if err != nil {
		return err
	}
	same := func(what string, got []byte, wantID string) error {
		m, err := normalise(got, false)
		if err != nil {
			return fmt.Errorf("%s: %v", what, err)
		}
		if m["id"] != wantID {
			return fmt.Errorf("%s: id %v, want %s", what, m["id"], wantID)
		}
		delete(m, "id")
		if !reflect.DeepEqual(m, want) {
			g, _ := json.Marshal(m)
			w, _ := json.Marshal(want)
			return fmt.Errorf("%s: content differs:\n got %s\nwant %s", what, tail(string(g), 400), tail(string(w), 400))
		}
		return nil
	}
	expect := func(what string, status int, gotStatus int, body []byte, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %v", what, err)
		}
		if gotStatus != status {
			return fmt.Errorf("%s: status %d, want %d: %s", what, gotStatus, status, tail(string(body), 300))
		}
		return nil
	}

	// POST: a new id; read back.
	st, h, body, err := c.do("POST", "/"+ex.typ, ex.body)
	if err := expect("POST", 201, st, body, err); err != nil {
		return err
	}
	loc := h.Get("Location")
	rest, ok := strings.CutPrefix(loc, c.base+"/"+ex.typ+"/")
	if !ok || !strings.HasSuffix(rest, "/_history/1") {
		return fmt.Errorf("POST: Location %q", loc)
	}
	postID := strings.TrimSuffix(rest, "/_history/1")
	st, _, body, err = c.do("GET", "/"+ex.typ+"/"+postID, nil)
	if err := expect("read after POST", 200, st, body, err); err != nil {
		return err
	}
	if err := same("read after POST", body, postID); err != nil {
		return err
	}

	// PUT (update-as-create), PUT again (version 2), vread both.
	putBody, err := withID(ex.body, id)
	if err != nil {
		return err
	}
	path := "/" + ex.typ + "/" + id
	st, h, body, err = c.do("PUT", path, putBody)
	if err := expect("PUT create", 201, st, body, err); err != nil {
		return err
	}
	if h.Get("ETag") != `W/"1"` {
		return fmt.Errorf("PUT create: ETag %q", h.Get("ETag"))
	}
	st, h, body, err = c.do("PUT", path, putBody, "If-Match", `W/"1"`)
	if err := expect("PUT update", 200, st, body, err); err != nil {
		return err
	}
	if h.Get("ETag") != `W/"2"` {
		return fmt.Errorf("PUT update: ETag %q", h.Get("ETag"))
	}
	for _, v := range []string{"1", "2"} {
		st, h, body, err = c.do("GET", path+"/_history/"+v, nil)
		if err := expect("vread "+v, 200, st, body, err); err != nil {
			return err
		}
		if h.Get("ETag") != `W/"`+v+`"` {
			return fmt.Errorf("vread %s: ETag %q", v, h.Get("ETag"))
		}
		if err := same("vread "+v, body, id); err != nil {
			return err
		}
	}

	// DELETE, read 410, restore, read.
	st, _, body, err = c.do("DELETE", path, nil)
	if err := expect("DELETE", 204, st, body, err); err != nil {
		return err
	}
	st, h, body, err = c.do("GET", path, nil)
	if err := expect("read deleted", 410, st, body, err); err != nil {
		return err
	}
	if h.Get("ETag") != `W/"3"` {
		return fmt.Errorf("read deleted: ETag %q", h.Get("ETag"))
	}
	st, _, body, err = c.do("PUT", path, putBody, "If-Match", `W/"3"`)
	if err := expect("restore", 200, st, body, err); err != nil {
		return err
	}
	st, _, body, err = c.do("GET", path, nil)
	if err := expect("read restored", 200, st, body, err); err != nil {
		return err
	}
	if err := same("read restored", body, id); err != nil {
		return err
	}

	// Instance history, newest first, also paged by 3.
	for _, q := range []string{"", "?_count=3"} {
		var got []string
		next := c.base + path + "/_history" + q
		for next != "" {
			st, _, body, err = c.do("GET", strings.TrimPrefix(next, c.base), nil)
			if err := expect("history", 200, st, body, err); err != nil {
				return err
			}
			var b struct {
				Type  string
				Link  []struct{ Relation, URL string }
				Entry []struct {
					Resource json.RawMessage
					Request  struct{ Method string }
					Response struct{ Etag string }
				}
			}
			if err := json.Unmarshal(body, &b); err != nil || b.Type != "history" {
				return fmt.Errorf("history: %v %s", err, tail(string(body), 300))
			}
			for _, e := range b.Entry {
				got = append(got, e.Request.Method+" "+e.Response.Etag)
				if e.Request.Method != "DELETE" {
					if err := same("history entry", e.Resource, id); err != nil {
						return err
					}
				}
			}
			next = ""
			for _, l := range b.Link {
				if l.Relation == "next" {
					next = l.URL
				}
			}
		}
		want := []string{`PUT W/"4"`, `DELETE W/"3"`, `PUT W/"2"`, `PUT W/"1"`}
		if !slices.Equal(got, want) {
			return fmt.Errorf("history%s: %q, want %q", q, got, want)
		}
	}
	return nil
}

// driveAll runs every example through the server with a few workers.
func driveAll(t *testing.T, c *client, exs []example) {
	t.Helper()
	start := time.Now()
	var wg sync.WaitGroup
	work := make(chan int)
	var mu sync.Mutex
	var failures []string
	for range 6 {
		wg.Go(func() {
			for i := range work {
				if err := driveExample(c, exs[i], fmt.Sprintf("e2e-%d", i)); err != nil {
					mu.Lock()
					failures = append(failures, exs[i].name+": "+err.Error())
					mu.Unlock()
				}
			}
		})
	}
	for i := range exs {
		work <- i
	}
	close(work)
	wg.Wait()
	slices.Sort(failures)
	for i, f := range failures {
		if i == 20 {
			t.Errorf("… and %d more", len(failures)-i)
			break
		}
		t.Error(f)
	}
	t.Logf("%d examples driven in %v, %d failed", len(exs), time.Since(start).Round(time.Millisecond), len(failures))
}

// checkTypeHistory checks the type-level history of one example type and
// the system history's first page.
func checkTypeHistory(t *testing.T, c *client, typ string, min int) {
	t.Helper()
	st, _, body, err := c.do("GET", "/"+typ+"/_history?_count=1000", nil)
	if err != nil || st != 200 {
		t.Fatalf("type history: %d %v %s", st, err, tail(string(body), 300))
	}
	var b struct{ Entry []json.RawMessage }
	if err := json.Unmarshal(body, &b); err != nil || len(b.Entry) < min {
		t.Errorf("type history of %s: %d entries, want at least %d (%v)", typ, len(b.Entry), min, err)
	}
}

// TestE2EFile runs the binary on the default file backend, in an empty
// working folder, with no settings but the address.
func TestE2EFile(t *testing.T) {
	dir := t.TempDir()
	bin := buildBinary(t)
	p := startServe(t, bin, dir, nil)
	if fi, err := os.Stat(filepath.Join(dir, "fhirbucket-data")); err != nil || !fi.IsDir() {
		t.Fatalf("default data folder not created: %v", err)
	}
	c := &client{base: p.base, hc: &http.Client{Timeout: time.Minute}}
	exs := loadExamples(t)
	driveAll(t, c, exs)
	checkTypeHistory(t, c, "Patient", 6)
	p.stop(t)

	// fsck over the same folder finds nothing to repair.
	out, err := exec.Command(bin, "fsck", "--data-dir", filepath.Join(dir, "fhirbucket-data")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "ok") {
		t.Errorf("fsck after the run: %v: %s", err, tail(string(out), 2000))
	}
}

// TestE2EMinIOPrefix runs the binary against MinIO, one bucket, tenants by
// prefix and by header.
func TestE2EMinIOPrefix(t *testing.T) {
	srv := s3test.MinIO(t)
	_, bucket := srv.NewBucket(t)
	env := append(srv.Env(bucket), "FHIRBUCKET_BACKEND=s3", "FHIRBUCKET_S3_PREFIX=e2e")
	p := startServe(t, buildBinary(t), t.TempDir(), env)
	c := &client{base: p.base, tenant: "acme", hc: &http.Client{Timeout: time.Minute}}
	exs := loadExamples(t)
	driveAll(t, c, exs)
	checkTypeHistory(t, c, "Patient", 6)
	other := &client{base: p.base, tenant: "other", hc: c.hc}
	if st, _, body, _ := other.do("GET", "/Patient/e2e-0", nil); st != 404 {
		t.Errorf("tenant isolation: another tenant reads %d: %s", st, body)
	}
	p.stop(t)
}

// TestE2EMinIOBucket runs the binary against MinIO with one bucket per
// tenant and tenants in the URL; it also checks that a missing bucket
// stops start-up.
func TestE2EMinIOBucket(t *testing.T) {
	srv := s3test.MinIO(t)
	_, b1 := srv.NewBucket(t)
	_, b2 := srv.NewBucket(t)
	base := srv.Env("")
	base = slices.DeleteFunc(base, func(s string) bool { return strings.HasPrefix(s, "FHIRBUCKET_S3_BUCKET=") })
	env := append(base, "FHIRBUCKET_BACKEND=s3", "FHIRBUCKET_S3_TENANCY_MODE=bucket",
		"FHIRBUCKET_S3_TENANT_BUCKETS=acme="+b1+",beta="+b2, "FHIRBUCKET_TENANT_ROUTING=path")

	// A missing bucket: start-up fails, naming the setting.
	bin := buildBinary(t)
	bad := exec.Command(bin, "serve", "--addr", "127.0.0.1:0")
	bad.Env = childEnv(append(slices.Clone(base), "FHIRBUCKET_BACKEND=s3", "FHIRBUCKET_S3_TENANCY_MODE=bucket",
		"FHIRBUCKET_S3_TENANT_BUCKETS=acme="+b1+",beta=no-such-bucket-fhirbucket")...)
	badStart := time.Now()
	out, err := bad.CombinedOutput()
	t.Logf("start-up with a missing bucket failed after %v", time.Since(badStart).Round(time.Millisecond))
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitError || !strings.Contains(string(out), "FHIRBUCKET_S3_TENANT_BUCKETS") || !strings.Contains(string(out), "no-such-bucket-fhirbucket") {
		t.Errorf("missing bucket: %v: %s", err, out)
	}

	p := startServe(t, bin, t.TempDir(), env)
	c := &client{base: p.base + "/acme", hc: &http.Client{Timeout: time.Minute}}
	// Every fifth example: TestE2EMinIOPrefix and TestE2EFile drive all of
	// them through the same code; this test is about bucket-per-tenant
	// routing, isolation and fsck across buckets.
	var exs []example
	for i, ex := range loadExamples(t) {
		if i%5 == 0 {
			exs = append(exs, ex)
		}
	}
	driveAll(t, c, exs)
	beta := &client{base: p.base + "/beta", hc: c.hc}
	if st, _, body, _ := beta.do("GET", "/Patient/e2e-0", nil); st != 404 {
		t.Errorf("tenant isolation: beta reads %d: %s", st, body)
	}
	if st, _, body, _ := (&client{base: p.base + "/gamma", hc: c.hc}).do("GET", "/Patient/x", nil); st != 400 {
		t.Errorf("unmapped tenant: %d %s", st, body)
	}
	driveAll(t, beta, exs[:min(len(exs), 20)])
	p.stop(t)

	// fsck over both buckets.
	fsckStart := time.Now()
	defer func() { t.Logf("fsck took %v", time.Since(fsckStart).Round(time.Millisecond)) }()
	fsck := exec.Command(bin, "fsck")
	fsck.Env = childEnv(env...)
	if out, err := fsck.CombinedOutput(); err != nil || !strings.Contains(string(out), "tenant acme") || !strings.Contains(string(out), "tenant beta") {
		t.Errorf("fsck: %v: %s", err, tail(string(out), 2000))
	}
}

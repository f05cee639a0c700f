//go:build unix

package filestore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"fhirbucket/storage"
	"fhirbucket/storage/filestore"
)

// The environment of a helper process started by TestCrossProcessRace.
const (
	envHelper = "FILESTORE_TEST_HELPER"
	envRoot   = "FILESTORE_TEST_ROOT"
	envKey    = "FILESTORE_TEST_KEY"
	envIfMat  = "FILESTORE_TEST_IF_MATCH"
	envGo     = "FILESTORE_TEST_GO_FILE"
	envID     = "FILESTORE_TEST_ID"
)

// helperGoroutines race inside each helper process as well, so the
// in-process mutex and the flock are exercised together.
const helperGoroutines = 4

// TestHelperProcess is not a test: it is the body of one racing process.
// It waits for the go file to appear, then makes helperGoroutines
// conditional puts and prints one line per put: "won <etag>" or "lost".
func TestHelperProcess(t *testing.T) {
	if os.Getenv(envHelper) != "1" {
		t.Skip("helper process for TestCrossProcessRace")
	}
	b, err := filestore.Open(os.Getenv(envRoot))
	if err != nil {
		fmt.Println("error", err)
		os.Exit(2)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(os.Getenv(envGo)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			fmt.Println("error: no go signal")
			os.Exit(2)
		}
		time.Sleep(time.Millisecond)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range helperGoroutines {
		wg.Go(func() {
			body := fmt.Sprintf("process %s goroutine %d", os.Getenv(envID), g)
			opts := storage.PutOptions{Size: int64(len(body))}
			if m := os.Getenv(envIfMat); m != "" {
				opts.IfMatch = m
			} else {
				opts.IfNoneMatch = "*"
			}
			a, err := b.Put(context.Background(), os.Getenv(envKey), strings.NewReader(body), opts)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				fmt.Printf("won %s %s\n", a.ETag, body)
			case errors.Is(err, storage.ErrPreconditionFailed):
				fmt.Println("lost")
			default:
				fmt.Println("error", err)
			}
		})
	}
	wg.Wait()
	os.Exit(0)
}

// Processes sharing one folder race conditional puts of one key: exactly
// one put wins, and the stored object is the winner's.
func TestCrossProcessRace(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	const procs = 6
	dir := t.TempDir()
	b, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	base := putString(t, b, "race/replace", "base")

	for _, tc := range []struct {
		name, key, ifMatch string
	}{
		{"create-only", "race/create", ""},
		{"if-match", "race/replace", base.ETag},
	} {
		t.Run(tc.name, func(t *testing.T) {
			goFile := filepath.Join(t.TempDir(), "go")
			outs := make([]*bytes.Buffer, procs)
			cmds := make([]*exec.Cmd, procs)
			for i := range procs {
				cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
				cmd.Env = append(os.Environ(), envHelper+"=1", envRoot+"="+dir, envKey+"="+tc.key,
					envIfMat+"="+tc.ifMatch, envGo+"="+goFile, fmt.Sprintf("%s=%d", envID, i))
				outs[i] = new(bytes.Buffer)
				cmd.Stdout, cmd.Stderr = outs[i], outs[i]
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				cmds[i] = cmd
			}
			// Released together once every process is running.
			if err := os.WriteFile(goFile, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			var winners []string
			lost := 0
			for i, cmd := range cmds {
				if err := cmd.Wait(); err != nil {
					t.Fatalf("process %d: %v\n%s", i, err, outs[i])
				}
				for line := range strings.Lines(outs[i].String()) {
					line = strings.TrimSpace(line)
					switch {
					case strings.HasPrefix(line, "won "):
						winners = append(winners, line)
					case line == "lost":
						lost++
					case strings.HasPrefix(line, "error"):
						t.Errorf("process %d: %s", i, line)
					}
				}
			}
			if len(winners) != 1 || lost != procs*helperGoroutines-1 {
				t.Fatalf("%d winners %q and %d losers; want 1 and %d", len(winners), winners, lost, procs*helperGoroutines-1)
			}
			fields := strings.SplitN(winners[0], " ", 3)
			data, a, err := storage.ReadAll(t.Context(), b, tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if string(data) != fields[2] || a.ETag != fields[1] {
				t.Errorf("stored %q (ETag %s), want the winner's %q (ETag %s)", data, a.ETag, fields[2], fields[1])
			}
		})
	}
}

//go:build !linux

package s3test

import "os/exec"

// setDeathSignal is a no-op where the kernel offers no parent-death signal;
// Main still stops the servers on a normal exit.
func setDeathSignal(*exec.Cmd) {}

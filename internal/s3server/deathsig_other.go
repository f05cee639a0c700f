//go:build !linux

package s3server

import "os/exec"

// setDeathSignal is a no-op where the kernel offers no parent-death signal;
// the stop function returned by StartMinIO / StartVersityGW still ends the
// server on a normal exit.
func setDeathSignal(*exec.Cmd) {}

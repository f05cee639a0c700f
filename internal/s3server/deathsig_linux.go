package s3server

import (
	"os/exec"
	"syscall"
)

// setDeathSignal makes the kernel kill the server if the process that
// started it dies without calling stop (a panic, go test's -timeout, a
// killed benchmark run), so no server outlives its user.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

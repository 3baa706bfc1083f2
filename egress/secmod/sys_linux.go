//go:build linux

package secmod

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// childAttr makes a child die with the process that started it.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// rearmParentDeath sets the parent-death signal again (a change of credentials clears it) and fails when the
// parent is no longer ppid (it died before the signal was set).
func rearmParentDeath(ppid int) error {
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_PDEATHSIG): %w", err)
	}
	if os.Getppid() != ppid {
		return fmt.Errorf("the parent process %d is gone", ppid)
	}
	return nil
}

// seqpacketPair returns a close-on-exec SOCK_SEQPACKET socketpair.
func seqpacketPair() ([2]int, error) {
	return syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
}

// setNotDumpable keeps processes of the same uid from ptrace-attaching to this one or reading its /proc/PID/mem:
// for a non-dumpable process both need CAP_SYS_PTRACE.
func setNotDumpable() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE): %w", err)
	}
	return nil
}

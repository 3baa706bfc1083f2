//go:build !linux

package secmod

import "syscall"

// childAttr: no parent-death signal here; a child exits when its socket closes.
func childAttr() *syscall.SysProcAttr { return nil }

func rearmParentDeath(int) error { return nil }

// seqpacketPair returns a close-on-exec SOCK_SEQPACKET socketpair.
func seqpacketPair() ([2]int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET, 0)
	if err == nil {
		syscall.CloseOnExec(fds[0])
		syscall.CloseOnExec(fds[1])
	}
	return fds, err
}

func setNotDumpable() error { return nil }

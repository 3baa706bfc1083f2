//go:build testhooks

package main

// Test-only hooks, linked with -tags testhooks (the integration tests of privilege separation build such a
// binary): on SIGUSR2 the network process sends a malformed request to the security module and tries to execute
// /bin/true, and logs what happened to each.

import (
	"os"
	"os/exec"
	"os/signal"
	"syscall"
)

func init() {
	installTestHooks = func(s *serverHooks) {
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGUSR2)
		go func() {
			for range c {
				err := s.secmod.SendRaw([]byte{0, 0, 0, 3, 1, '{', '"', 'x'})
				s.log.Warn("testhook: sent a malformed request to the security module", "err", err)
				err = exec.Command("/bin/true").Run()
				s.log.Warn("testhook: execve /bin/true", "err", err)
			}
		}()
	}
}

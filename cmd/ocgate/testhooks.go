//go:build testhooks

package main

// Test-only hooks, linked with -tags testhooks (the integration tests of privilege separation build such a
// binary): on SIGUSR2 the network process sends a malformed request to the security module, tries to execute
// /bin/true and to read the generated key in the state directory, and logs what happened to each.

import (
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
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
				_, err = os.ReadFile(filepath.Join(s.stateDir, keyFile))
				s.log.Warn("testhook: reading the key", "err", err)
			}
		}()
	}
}

//go:build !linux

package secmod

import "syscall"

// childAttr: no parent-death signal here; a child exits when its socket closes.
func childAttr() *syscall.SysProcAttr { return nil }

func rearmParentDeath(int) error { return nil }

//go:build linux

package privsep

// Two layers, both pure Go:
//
//   - seccomp (elastic/go-seccomp-bpf): execve, execveat, ptrace, process_vm_readv/writev fail with EPERM; the
//     filter sets no_new_privs and is synchronised to every thread. What a code-execution bug can no longer do:
//     start a program (a shell), read or write another process's memory.
//   - Landlock (landlock-lsm/go-landlock): only the listed files and directories can be opened (read-only, or
//     read-write where listed), plus /dev/null. Best effort: the rules shrink to what the kernel's
//     Landlock ABI supports; no Landlock at all is a warning.
//
// Neither touches sockets: the process must keep accepting clients and dialling the Internet for them.

import (
	"fmt"
	"os"
	"path/filepath"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
)

// deniedSyscalls fail with EPERM under isolate_workers.
var deniedSyscalls = []string{"execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev"}

// Isolate sandboxes the calling process (see the top of this file).
func Isolate(c IsolateConfig) (IsolateReport, error) {
	var r IsolateReport
	if abi, err := llsys.LandlockGetABIVersion(); err != nil || abi < 1 {
		r.Warnings = append(r.Warnings, fmt.Sprintf("isolate_workers: this kernel has no Landlock (%v): file access is not restricted", err))
	} else {
		rules := []landlock.Rule{
			landlock.RODirs(existing(c.ReadDirs)...),
			landlock.ROFiles(existing(c.ReadFiles)...),
			landlock.RWDirs(existing(c.WriteDirs)...),
			landlock.RWFiles("/dev/null"),
		}
		if devs := existing(c.Devices); len(devs) > 0 {
			rules = append(rules, landlock.RWFiles(devs...).WithIoctlDev())
		}
		if err := landlock.V7.BestEffort().RestrictPaths(rules...); err != nil {
			return r, fmt.Errorf("isolate_workers: Landlock: %w", err)
		}
		r.Landlock = abi
	}
	if !seccomp.Supported() {
		r.Warnings = append(r.Warnings, "isolate_workers: this kernel has no seccomp filters: execve and ptrace are not blocked")
		return r, nil
	}
	filter := seccomp.Filter{
		NoNewPrivs: true,
		Flag:       seccomp.FilterFlagTSync,
		Policy: seccomp.Policy{
			DefaultAction: seccomp.ActionAllow,
			Syscalls:      []seccomp.SyscallGroup{{Action: seccomp.ActionErrno, Names: deniedSyscalls}},
		},
	}
	if err := seccomp.LoadFilter(filter); err != nil {
		return r, fmt.Errorf("isolate_workers: seccomp: %w", err)
	}
	r.Seccomp = true
	return r, nil
}

// existing returns the absolute, existing paths among ps, without duplicates.
func existing(ps []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range ps {
		if p == "" {
			continue
		}
		p, err := filepath.Abs(p)
		if err != nil || seen[p] {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

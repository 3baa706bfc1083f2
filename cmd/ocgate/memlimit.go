package main

// The Go runtime's soft memory limit from the container's. GOGC stays at its default (docs/performance.md says
// why); what a small container needs is that the collector works harder as the process nears the cgroup's memory
// limit instead of the kernel killing it, and the runtime does not read the cgroup limit itself. So when GOMEMLIMIT
// is not set and the process's cgroup (v2 memory.max, or v1 memory.limit_in_bytes) has a limit, the soft limit is
// set to memLimitShare of it in the network process; the rest is left to the security module's processes (small:
// docs/performance.md) and to what is not Go heap.

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// memLimitShare is the fraction of the cgroup's limit given to one process's Go runtime, in percent.
const memLimitShare = 80

// setMemoryLimitFromCgroup sets the soft memory limit from the cgroup under root ("/sys/fs/cgroup") and returns it
// (0: none set — GOMEMLIMIT given, no cgroup limit, or none readable).
func setMemoryLimitFromCgroup(root string) int64 {
	if os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0
	}
	limit := cgroupMemoryLimit(root, self)
	if limit <= 0 {
		return 0
	}
	soft := limit / 100 * memLimitShare
	debug.SetMemoryLimit(soft)
	return soft
}

// cgroupMemoryLimit returns the memory limit of the cgroup that self (the contents of /proc/self/cgroup) names,
// under root; 0 when there is none. A cgroup namespace shows the process's own cgroup as "/", so root itself is
// tried after root/path.
func cgroupMemoryLimit(root string, self []byte) int64 {
	sc := bufio.NewScanner(bytes.NewReader(self))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) != 3 {
			continue
		}
		var dirs []string
		var file string
		switch {
		case f[0] == "0" && f[1] == "": // v2
			dirs, file = []string{filepath.Join(root, f[2]), root}, "memory.max"
		case strings.Contains(","+f[1]+",", ",memory,"): // v1
			dirs, file = []string{filepath.Join(root, "memory", f[2]), filepath.Join(root, "memory")}, "memory.limit_in_bytes"
		default:
			continue
		}
		for _, d := range dirs {
			b, err := os.ReadFile(filepath.Join(d, file))
			if err != nil {
				continue
			}
			v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			// "max" (v2) and v1's page-rounded MaxInt64 mean no limit.
			if err != nil || v <= 0 || v >= 1<<62 {
				break
			}
			return v
		}
	}
	return 0
}

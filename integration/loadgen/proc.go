package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// procSampler reads the memory and CPU time of the server's processes from /proc.
type procSampler struct {
	pids []int
	tree bool // include descendants
}

type procSample struct {
	rssKiB, pssKiB uint64
	cpuSeconds     float64
	procs          int
}

const clockTicks = 100 // USER_HZ, 100 on every Linux architecture Go supports

// processes returns the sampled PIDs: the given ones and, with tree, all their descendants.
func (p *procSampler) processes() []int {
	if !p.tree {
		return p.pids
	}
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if f := statFields(pid); len(f) > 1 {
			ppid, _ := strconv.Atoi(f[1])
			children[ppid] = append(children[ppid], pid)
		}
	}
	seen := map[int]bool{}
	var out []int
	queue := append([]int(nil), p.pids...)
	for len(queue) > 0 && len(out) < 100000 {
		pid := queue[0]
		queue = queue[1:]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		out = append(out, pid)
		queue = append(queue, children[pid]...)
	}
	return out
}

// statFields returns the fields of /proc/PID/stat after the command name: f[i] is field i+3 of proc(5), so f[1] is
// the ppid, f[11] utime and f[12] stime.
func statFields(pid int) []string {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil
	}
	i := bytes.LastIndexByte(b, ')') // the command name may contain spaces and parentheses
	if i < 0 {
		return nil
	}
	return strings.Fields(string(b[i+1:]))
}

func (p *procSampler) sample() (procSample, error) {
	var s procSample
	var firstErr error
	for _, pid := range p.processes() {
		rss, err := statusKiB(pid, "VmRSS:")
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		s.procs++
		s.rssKiB += rss
		s.pssKiB += pssKiB(pid)
		s.cpuSeconds += cpuSeconds(pid)
	}
	if s.procs == 0 {
		return s, firstErr
	}
	return s, nil
}

// cpu returns the processes' user+system CPU seconds (0 for a nil sampler).
func (p *procSampler) cpu() float64 {
	if p == nil {
		return 0
	}
	var t float64
	for _, pid := range p.processes() {
		t += cpuSeconds(pid)
	}
	return t
}

func cpuSeconds(pid int) float64 {
	f := statFields(pid)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	return float64(u+s) / clockTicks
}

func statusKiB(pid int, key string) (uint64, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), key); ok {
			fs := strings.Fields(v)
			if len(fs) > 0 {
				return strconv.ParseUint(fs[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("pid %d: no %s in /proc/%d/status", pid, key, pid)
}

// pssKiB reads Pss from /proc/PID/smaps_rollup (0 if unavailable): the fair share of memory shared between
// processes, which is what to sum over ocserv's forked workers.
func pssKiB(pid int) uint64 {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "smaps_rollup"))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			fs := strings.Fields(v)
			if len(fs) > 0 {
				n, _ := strconv.ParseUint(fs[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// selfCPU is this process's user+system CPU time in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

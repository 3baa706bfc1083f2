package secmod

// The monitor: started by the network process before anything listens, it keeps the privileges the server
// started with (so a new worker can open root-owned files), holds no secret and reads only two control messages:
//
//	{"op":"start"}            start a candidate worker (reload); at most four a second, three workers at once
//	{"op":"current","gen":N}  worker N replaces the current one (its hello was good)
//
// It answers each worker it starts with {"gen":N,"current":bool} and the network end of the worker's socket
// (SCM_RIGHTS). When the current worker exits it starts a new current one after a backoff (250 ms doubling to
// 8 s; back to 250 ms after a worker lived a minute). Workers that are not current are not restarted: the network
// process closed them, or never took them. When the network process goes away (its end of the control socket
// closes) the monitor kills its workers and exits.

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Hidden first arguments of the binary: they make it the monitor or a worker (cmd/ocgate dispatches them).
const (
	MonitorArg = "__security-module-monitor"
	WorkerArg  = "__security-module"
)

const (
	backoffMin    = 250 * time.Millisecond
	backoffMax    = 8 * time.Second
	backoffReset  = time.Minute
	candidateRate = 250 * time.Millisecond
	maxWorkers    = 3 // the current one, the one it replaces (until it finishes), a candidate
)

type ctlRequest struct {
	Op  string `json:"op"`
	Gen uint64 `json:"gen,omitempty"`
}

// ctlInit is the network process's first message to the monitor.
type ctlInit struct {
	Exe    string     `json:"exe"` // the binary to run as a worker
	Worker workerInit `json:"worker"`
}

type ctlEvent struct {
	Gen     uint64 `json:"gen"`
	Current bool   `json:"current"`
	Err     string `json:"err,omitempty"` // a start refused or failed
}

type monitor struct {
	ctl  *net.UnixConn
	log  *slog.Logger
	init ctlInit

	gen      uint64
	cur      uint64
	alive    map[uint64]*exec.Cmd
	started  map[uint64]time.Time
	exits    chan uint64
	lastCand time.Time
	backoff  time.Duration
}

// ServeMonitor is the monitor's main, on the control socket at descriptor fd. It returns when the network
// process has gone away.
func ServeMonitor(fd int, log *slog.Logger) error {
	conn, err := fileConn(fd)
	if err != nil {
		return err
	}
	defer conn.Close()
	m := &monitor{ctl: conn, log: log, alive: map[uint64]*exec.Cmd{}, started: map[uint64]time.Time{},
		exits: make(chan uint64, 64), backoff: backoffMin}
	buf := make([]byte, maxMessage+1)
	n, err := conn.Read(buf)
	if err != nil {
		return fmt.Errorf("reading the init message: %w", err)
	}
	if err := decode(buf[:n], &m.init); err != nil {
		return fmt.Errorf("reading the init message: %w", err)
	}
	reqs := make(chan ctlRequest)
	go func() {
		defer close(reqs)
		for {
			n, err := conn.Read(buf)
			if err != nil || n == 0 {
				return
			}
			var r ctlRequest
			if err := decode(buf[:n], &r); err != nil {
				log.Warn("security module monitor: refused a malformed control message", "err", err)
				continue
			}
			reqs <- r
		}
	}()
	defer m.killAll()
	if err := m.start(true); err != nil {
		return err
	}
	var restart <-chan time.Time
	for {
		select {
		case r, ok := <-reqs:
			if !ok {
				return nil // the network process is gone
			}
			switch r.Op {
			case "start":
				if time.Since(m.lastCand) < candidateRate || len(m.alive) >= maxWorkers {
					send(m.ctl, ctlEvent{Err: "too many reloads at once; try again"})
					continue
				}
				m.lastCand = time.Now()
				if err := m.start(false); err != nil {
					send(m.ctl, ctlEvent{Err: err.Error()})
				}
			case "current":
				if m.alive[r.Gen] == nil || r.Gen <= m.cur {
					log.Warn("security module monitor: cannot make this worker current", "gen", r.Gen)
					continue
				}
				m.cur = r.Gen
			default:
				log.Warn("security module monitor: unknown control message", "op", fmt.Sprintf("%.32q", r.Op))
			}
		case g := <-m.exits:
			lived := time.Since(m.started[g])
			delete(m.alive, g)
			delete(m.started, g)
			if g != m.cur {
				continue
			}
			if lived > backoffReset {
				m.backoff = backoffMin
			}
			log.Warn("security module worker exited; restarting", "gen", g, "after", m.backoff)
			restart = time.After(m.backoff)
			m.backoff = min(2*m.backoff, backoffMax)
		case <-restart:
			restart = nil
			if err := m.start(true); err != nil {
				log.Error("security module monitor: restarting the worker", "err", err)
				restart = time.After(m.backoff)
				m.backoff = min(2*m.backoff, backoffMax)
			}
		}
	}
}

// start starts worker gen+1 and hands the network process its socket; current makes it the current one.
func (m *monitor) start(current bool) error {
	ours, cmd, err := startChild(m.init.Exe, WorkerArg, "security-module", os.Stderr)
	if err != nil {
		return err
	}
	defer ours.Close()
	m.gen++
	g := m.gen
	m.alive[g], m.started[g] = cmd, time.Now()
	go func() { cmd.Wait(); m.exits <- g }()
	if err := send(ours, m.init.Worker); err != nil {
		cmd.Process.Kill()
		return fmt.Errorf("security module: sending its init message: %w", err)
	}
	if current {
		m.cur = g
	}
	f, err := ours.File()
	if err != nil {
		cmd.Process.Kill()
		return err
	}
	defer f.Close()
	b, _ := encode(ctlEvent{Gen: g, Current: current})
	if _, _, err := m.ctl.WriteMsgUnix(b, syscall.UnixRights(int(f.Fd())), nil); err != nil {
		cmd.Process.Kill()
		return fmt.Errorf("security module: handing over its socket: %w", err)
	}
	return nil
}

func (m *monitor) killAll() {
	for _, c := range m.alive {
		c.Process.Kill()
	}
}

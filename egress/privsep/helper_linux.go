//go:build linux

package privsep

// The privileged helper: with datapath = "tun" and run_as_user, ocgate starts a copy of itself that keeps root and
// does the two things that need it — creating configured TUN devices and running the scripts — and the process
// that faces the network drops to run_as_user. They talk over a socketpair (SOCK_SEQPACKET, one JSON message per
// request or reply); a device travels back as a file descriptor (SCM_RIGHTS). The helper checks every request
// against the configuration it got from its parent before the parent dropped privileges: devices only with the
// configured name prefix and server address and a client address inside the pool, scripts only the configured
// ones with ocserv's variables. When the server process goes away the socket closes and the helper exits.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"

	"ocgate/egress/tun"
)

type helperRequest struct {
	ID     uint64             `json:"id"`
	Op     string             `json:"op"` // "open" or "script"
	Device *tun.DeviceRequest `json:"device,omitempty"`
	Reason string             `json:"reason,omitempty"`
	Env    []string           `json:"env,omitempty"`
}

type helperReply struct {
	ID     uint64 `json:"id"`
	Name   string `json:"name,omitempty"`   // device name (open)
	Err    string `json:"err,omitempty"`    // the request failed
	Script bool   `json:"script,omitempty"` // Err is a script that failed (not a refused request)
	fd     int
}

const (
	helperMsgMax     = 64 << 10
	helperConcurrent = 32
)

// StartHelper starts the privileged helper as argv (this binary with the argument that makes it call
// ServeHelper on descriptor 3) and hands it cfg. The helper's standard error is stderr.
func StartHelper(argv []string, cfg HelperConfig, stderr io.Writer) (*HelperClient, *exec.Cmd, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_SEQPACKET|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("privileged helper: socketpair: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "helper"), os.NewFile(uintptr(fds[1]), "helper-child")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, stderr, stderr
	cmd.Env = []string{scriptPath}
	err = cmd.Start()
	theirs.Close()
	if err != nil {
		ours.Close()
		return nil, nil, fmt.Errorf("privileged helper: %w", err)
	}
	c, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		cmd.Process.Kill()
		return nil, nil, err
	}
	uc := c.(*net.UnixConn)
	b, _ := json.Marshal(cfg)
	if _, err := uc.Write(b); err != nil {
		uc.Close()
		cmd.Process.Kill()
		return nil, nil, fmt.Errorf("privileged helper: %w", err)
	}
	return newHelperClient(uc), cmd, nil
}

// ServeHelper is the helper's main loop on the socket at descriptor fd. It returns when the server process
// closes its end.
func ServeHelper(fd int, log *slog.Logger) error {
	f := os.NewFile(uintptr(fd), "helper")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return err
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	buf := make([]byte, helperMsgMax)
	n, err := conn.Read(buf)
	if err != nil {
		return fmt.Errorf("reading the configuration: %w", err)
	}
	var cfg HelperConfig
	if err := json.Unmarshal(buf[:n], &cfg); err != nil {
		return fmt.Errorf("reading the configuration: %w", err)
	}
	h := &helper{cfg: cfg, conn: conn, log: log, sem: make(chan struct{}, helperConcurrent)}
	for {
		n, err := conn.Read(buf)
		if err != nil || n == 0 {
			h.wg.Wait()
			return nil // the server went away
		}
		var req helperRequest
		if err := json.Unmarshal(buf[:n], &req); err != nil {
			log.Warn("privileged helper: malformed request", "err", err)
			continue
		}
		h.sem <- struct{}{}
		h.wg.Add(1)
		go func() {
			defer func() { <-h.sem; h.wg.Done() }()
			h.reply(h.handle(req))
		}()
	}
}

type helper struct {
	cfg  HelperConfig
	conn *net.UnixConn
	log  *slog.Logger
	sem  chan struct{}
	wg   sync.WaitGroup
	wmu  sync.Mutex
}

func (h *helper) handle(req helperRequest) helperReply {
	rep := helperReply{ID: req.ID, fd: -1}
	fail := func(err error) helperReply {
		rep.Err = err.Error()
		return rep
	}
	switch req.Op {
	case "open":
		if req.Device == nil {
			return fail(errors.New("no device"))
		}
		d := *req.Device
		tc := tun.Config{Local: h.cfg.Local, Local6: h.cfg.Local6, Pool: h.cfg.Pool, Pool6: h.cfg.Pool6,
			UserPools: h.cfg.UserPools}
		local, local6 := tc.Locals(d.Peer, d.Peer6)
		pools := append([]netip.Prefix{h.cfg.Pool, h.cfg.Pool6}, h.cfg.UserPools...)
		inPool := func(a netip.Addr) bool {
			return slices.ContainsFunc(pools, func(p netip.Prefix) bool { return p.Contains(a) })
		}
		switch {
		case d.Prefix != h.cfg.Prefix:
			return fail(fmt.Errorf("device prefix %q refused", d.Prefix))
		case d.Local != local:
			return fail(fmt.Errorf("server address %s refused", d.Local))
		case d.Peer6.IsValid() && (!local6.IsValid() || d.Local6 != local6 || !d.Peer6.Is6() || !inPool(d.Peer6) || d.Peer6 == local6):
			return fail(fmt.Errorf("IPv6 addresses %s, %s refused", d.Local6, d.Peer6))
		case !d.Peer.Is4() || !inPool(d.Peer) || d.Peer == local:
			return fail(fmt.Errorf("client address %s outside the pool", d.Peer))
		case len(d.Routes) > 64:
			return fail(errors.New("too many routes"))
		}
		for _, r := range d.Routes {
			if r.Bits() == 0 || r.Addr().Is6() && !inPool(r.Addr()) {
				return fail(fmt.Errorf("route %s refused", r))
			}
		}
		fd, name, err := tun.LocalOpener{}.OpenDevice(context.Background(), d)
		if err != nil {
			return fail(err)
		}
		rep.Name, rep.fd = name, fd
	case "script":
		if err := CheckScriptEnv(req.Env); err != nil {
			return fail(err)
		}
		if err := h.cfg.Scripts.RunScript(context.Background(), req.Reason, req.Env); err != nil {
			var se *ScriptError
			rep.Script = errors.As(err, &se)
			return fail(err)
		}
	default:
		return fail(fmt.Errorf("unknown request %q", req.Op))
	}
	return rep
}

func (h *helper) reply(rep helperReply) {
	b, _ := json.Marshal(rep)
	var oob []byte
	if rep.fd >= 0 {
		oob = syscall.UnixRights(rep.fd)
	}
	h.wmu.Lock()
	_, _, err := h.conn.WriteMsgUnix(b, oob, nil)
	h.wmu.Unlock()
	if rep.fd >= 0 {
		syscall.Close(rep.fd) // the server holds the device now (or it is gone with a failed send)
	}
	if err != nil {
		h.log.Warn("privileged helper: replying", "err", err)
	}
}

// HelperClient is the server process's end: a DeviceOpener and a script runner.
type HelperClient struct {
	conn *net.UnixConn

	mu      sync.Mutex
	next    uint64                      // guarded by mu
	pending map[uint64]chan helperReply // guarded by mu
	err     error                       // guarded by mu: set when the helper went away
}

var _ tun.DeviceOpener = (*HelperClient)(nil)

func newHelperClient(conn *net.UnixConn) *HelperClient {
	c := &HelperClient{conn: conn, pending: make(map[uint64]chan helperReply)}
	go c.readLoop()
	return c
}

func (c *HelperClient) readLoop() {
	buf := make([]byte, helperMsgMax)
	oob := make([]byte, syscall.CmsgSpace(4*4))
	for {
		n, oobn, _, _, err := c.conn.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			c.fail(fmt.Errorf("privileged helper went away: %v", err))
			return
		}
		var rep helperReply
		rep.fd = -1
		if oobn > 0 {
			if msgs, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
				for _, m := range msgs {
					if fds, err := syscall.ParseUnixRights(&m); err == nil {
						for i, fd := range fds {
							if i == 0 && rep.fd < 0 {
								rep.fd = fd
							} else {
								syscall.Close(fd)
							}
						}
					}
				}
			}
		}
		if err := json.Unmarshal(buf[:n], &rep); err != nil {
			if rep.fd >= 0 {
				syscall.Close(rep.fd)
			}
			continue
		}
		c.mu.Lock()
		ch := c.pending[rep.ID]
		delete(c.pending, rep.ID)
		c.mu.Unlock()
		if ch == nil {
			if rep.fd >= 0 {
				syscall.Close(rep.fd)
			}
			continue
		}
		ch <- rep
	}
}

func (c *HelperClient) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
	}
	for id, ch := range c.pending {
		ch <- helperReply{ID: id, Err: c.err.Error(), fd: -1}
		delete(c.pending, id)
	}
}

func (c *HelperClient) call(ctx context.Context, req helperRequest) (helperReply, error) {
	ch := make(chan helperReply, 1)
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return helperReply{}, c.err
	}
	c.next++
	req.ID = c.next
	c.pending[req.ID] = ch
	c.mu.Unlock()
	b, _ := json.Marshal(req)
	if _, err := c.conn.Write(b); err != nil {
		c.fail(fmt.Errorf("privileged helper: %w", err))
	}
	select {
	case rep := <-ch:
		return rep, nil
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, req.ID)
		c.mu.Unlock()
		select { // the reply may have raced in: do not leak its descriptor
		case rep := <-ch:
			if rep.fd >= 0 {
				syscall.Close(rep.fd)
			}
		default:
		}
		return helperReply{}, ctx.Err()
	}
}

// OpenDevice asks the helper to create and configure a device.
func (c *HelperClient) OpenDevice(ctx context.Context, r tun.DeviceRequest) (int, string, error) {
	rep, err := c.call(ctx, helperRequest{Op: "open", Device: &r})
	if err != nil {
		return -1, "", err
	}
	if rep.Err != "" {
		if rep.fd >= 0 {
			syscall.Close(rep.fd)
		}
		return -1, "", errors.New(rep.Err)
	}
	if rep.fd < 0 {
		return -1, "", errors.New("privileged helper sent no device")
	}
	return rep.fd, rep.Name, nil
}

// RunScript asks the helper to run the script for reason (see Scripts.RunScript).
func (c *HelperClient) RunScript(ctx context.Context, reason string, env []string) error {
	rep, err := c.call(ctx, helperRequest{Op: "script", Reason: reason, Env: env})
	if err != nil {
		return err
	}
	if rep.Err != "" {
		return errors.New(rep.Err)
	}
	return nil
}

// Close closes the connection; the helper exits.
func (c *HelperClient) Close() error { return c.conn.Close() }

package ctl

// The server side of the socket: one goroutine per client connection, which is checked (SO_PEERCRED: only the
// server's own uid and root), reads one Request, and answers it.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"ocgate/protocol"
)

// maxRequest bounds a request line.
const maxRequest = 64 << 10

// ErrInUse is wrapped by Listen's error when another server answers on the socket.
var ErrInUse = errors.New("another server is listening there")

// Listen creates the socket at path with mode 0600, creating its directory (mode 0700) if missing. A socket file
// left by a server that is gone is replaced; one that answers means another server runs there.
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("control socket %s: exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket %s: %w", path, ErrInUse)
		}
		os.Remove(path)
	}
	old := syscall.Umask(0o177) // the socket is created 0600: no moment when others may connect
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	syscall.Umask(old)
	if errors.Is(err, syscall.EADDRINUSE) {
		// Another server bound it between the check above and here (two starting at once).
		return nil, fmt.Errorf("control socket %s: %w", path, ErrInUse)
	}
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return ln, nil
}

// Server answers the management socket's clients.
type Server struct {
	b   Backend
	log *slog.Logger
	uid int // besides root, the only uid allowed

	mu    sync.Mutex
	conns map[net.Conn]struct{} // guarded by mu
	wg    sync.WaitGroup
}

// NewServer returns a server for backend b; clients must run as uid (or root).
func NewServer(b Backend, uid int, log *slog.Logger) *Server {
	return &Server{b: b, uid: uid, log: log, conns: make(map[net.Conn]struct{})}
}

// Serve accepts clients until ln is closed; then it closes the clients' connections (ending `show events`
// streams) and waits for their goroutines.
func (s *Server) Serve(ln *net.UnixListener) error {
	defer func() {
		s.mu.Lock()
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	}()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// peerUID returns the uid of the process at the other end of c.
func peerUID(c *net.UnixConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := rc.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return -1, err
	}
	if credErr != nil {
		return -1, credErr
	}
	return int(cred.Uid), nil
}

func (s *Server) serveConn(c *net.UnixConn) {
	enc := json.NewEncoder(c)
	fail := func(format string, args ...any) {
		enc.Encode(Response{V: Version, Error: fmt.Sprintf(format, args...)})
	}
	uid, err := peerUID(c)
	if err != nil || (uid != 0 && uid != s.uid) {
		s.log.Warn("control socket: client refused", "uid", uid, "err", err)
		fail("permission denied: uid %d may not manage this server", uid)
		return
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 4096), maxRequest)
	if !sc.Scan() {
		return
	}
	c.SetReadDeadline(time.Time{})
	var req Request
	if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
		fail("bad request: %v", err)
		return
	}
	if req.V != Version {
		fail("protocol version %d not supported (this server speaks %d)", req.V, Version)
		return
	}
	key, arg, err := ParseCommand(req.Cmd)
	if err != nil {
		fail("%v", err)
		return
	}
	if key == "show events" {
		s.streamEvents(c, enc)
		return
	}
	s.log.Debug("control socket command", "cmd", strings.Join(req.Cmd, " "), "uid", uid)
	resp, err := s.run(key, arg)
	if err != nil {
		fail("%v", err)
		return
	}
	enc.Encode(resp)
	if key == "stop now" {
		s.b.Stop()
	}
}

// answer makes a successful response of data and text.
func answer(data any, text string) (Response, error) {
	b, err := json.Marshal(data)
	if err != nil {
		return Response{}, err
	}
	return Response{V: Version, OK: true, Text: text, Data: b}, nil
}

// run executes a command other than `show events`.
func (s *Server) run(key, arg string) (Response, error) {
	now := time.Now()
	si := s.b.ServerInfo()
	users := func(match func(protocol.SessionInfo) bool) []object {
		out := []object{}
		for _, in := range s.b.SessionInfos() {
			if match(in) {
				out = append(out, userObject(in, si.Datapath, now))
			}
		}
		return out
	}
	switch key {
	case "show status":
		o := statusObject(s.b.Status(), si, now)
		return answer(o, detailText([]object{o}))
	case "show users":
		// Like occtl: the sessions that have a tunnel address (those that have connected at least once).
		us := users(func(in protocol.SessionInfo) bool { return in.Addr.IsValid() })
		return answer(us, usersText(us))
	case "show users --all-instances":
		recs, err := s.b.ClusterSessions()
		if err != nil {
			return Response{}, err
		}
		us := clusterUsers(recs)
		return answer(us, clusterUsersText(us))
	case "show user":
		us := users(func(in protocol.SessionInfo) bool { return in.User == arg })
		if len(us) == 0 {
			return Response{}, fmt.Errorf("user %q not found", arg)
		}
		return answer(us, detailText(us))
	case "show id":
		id, err := parseID(arg)
		if err != nil {
			return Response{}, err
		}
		us := users(func(in protocol.SessionInfo) bool { return in.ID == id })
		if len(us) == 0 {
			return Response{}, fmt.Errorf("session %d not found", id)
		}
		return answer(us, detailText(us))
	case "show sessions all", "show sessions valid":
		// Every session in the store holds a cookie that can still be used: ended sessions leave the store.
		ss := []object{}
		for _, in := range s.b.SessionInfos() {
			ss = append(ss, sessionObject(in, now))
		}
		return answer(ss, sessionsText(ss))
	case "show session":
		for _, in := range s.b.SessionInfos() {
			if matchSID(in.SafeID, arg) {
				o := sessionObject(in, now)
				return answer([]object{o}, detailText([]object{o}))
			}
		}
		return Response{}, fmt.Errorf("session %q not found", arg)
	case "show ip bans", "show ip ban points":
		banned := key == "show ip bans"
		bs := []object{}
		for _, b := range s.b.BanList() {
			isBanned := !b.BannedUntil.IsZero()
			if banned && isBanned || !banned && (b.Score > 0 || isBanned) {
				bs = append(bs, banObject(b, now))
			}
		}
		return answer(bs, bansText(bs, banned))
	case "unban ip":
		a, err := netip.ParseAddr(arg)
		if err != nil {
			return Response{}, fmt.Errorf("%q is not an IP address", arg)
		}
		if !s.b.Unban(a.Unmap()) {
			return Response{}, fmt.Errorf("%s is not in the ban list", a)
		}
		return answer(object{{"Status", "unbanned"}, {"IP", a.String()}}, fmt.Sprintf("unbanned %s\n", a))
	case "show iroutes":
		rs := []object{}
		for _, in := range s.b.SessionInfos() {
			if len(in.IRoutes) > 0 {
				rs = append(rs, iroutesObject(in))
			}
		}
		return answer(rs, iroutesText(rs))
	case "disconnect user", "terminate user":
		var ids []uint64
		for _, in := range s.b.SessionInfos() {
			if in.User == arg {
				ids = append(ids, in.ID)
			}
		}
		return s.act(key, ids, "user "+arg)
	case "disconnect id", "terminate id":
		id, err := parseID(arg)
		if err != nil {
			return Response{}, err
		}
		return s.act(key, []uint64{id}, fmt.Sprintf("session %d", id))
	case "terminate session":
		var ids []uint64
		for _, in := range s.b.SessionInfos() {
			if matchSID(in.SafeID, arg) {
				ids = append(ids, in.ID)
			}
		}
		if len(ids) > 1 {
			return Response{}, fmt.Errorf("%q names %d sessions: give more of the SID", arg, len(ids))
		}
		return s.act("terminate id", ids, "session "+arg)
	case "reload":
		r, err := s.b.Reload()
		if err != nil {
			return Response{}, fmt.Errorf("configuration refused, the server keeps the one it runs:\n%v", err)
		}
		return answer(reloadObject(r), reloadText(r))
	case "stop now":
		return answer(object{{"Status", "stopping"}}, "server is stopping\n")
	}
	return Response{}, fmt.Errorf("%w: %q", ErrUsage, key)
}

// matchSID reports whether sid (a "Full session" or its 6-character "Session" prefix) names safeID.
func matchSID(safeID, sid string) bool {
	return len(sid) >= 6 && strings.HasPrefix(safeID, sid)
}

// act disconnects or terminates the sessions ids.
func (s *Server) act(key string, ids []uint64, what string) (Response, error) {
	terminate := strings.HasPrefix(key, "terminate")
	n := 0
	for _, id := range slices.Compact(ids) {
		ok := false
		if terminate {
			ok = s.b.Terminate(id)
		} else {
			ok = s.b.Disconnect(id)
		}
		if ok {
			n++
		}
	}
	if n == 0 {
		return Response{}, fmt.Errorf("%s not found", what)
	}
	verb := "disconnected"
	if terminate {
		verb = "terminated"
	}
	s.log.Info("control socket: "+verb, "what", what, "sessions", n)
	return answer(object{{"Status", verb}, {"Sessions", n}}, fmt.Sprintf("%s %s (%d session(s))\n", verb, what, n))
}

// streamEvents sends one Response per session event until the client closes the connection or the server stops.
func (s *Server) streamEvents(c *net.UnixConn, enc *json.Encoder) {
	events, cancel := s.b.Subscribe()
	defer cancel()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	go func() { // the client closing its end is the only thing it sends from now on
		var b [1]byte
		c.Read(b[:])
		stop()
	}()
	if err := enc.Encode(Response{V: Version, OK: true, Text: "Listening for events...\n"}); err != nil {
		return
	}
	datapath := s.b.ServerInfo().Datapath
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			r, err := answer(eventObject(ev, datapath), eventText(ev))
			if err != nil || enc.Encode(r) != nil {
				return
			}
		}
	}
}

package secmod

// The network process's end. Start runs the monitor; a control loop takes each worker socket the monitor hands
// over, reads the worker's hello and installs it as the current worker (or gives it to a waiting Reload). Calls go
// to the current worker; when it goes away they wait for the next one and are retried there (signing and checking a
// password are idempotent), so a login in progress during a restart is delayed, not lost, within its deadline.

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"ocgate/auth"
)

// StartConfig says how to start the security module.
type StartConfig struct {
	Exe   string          // the binary, run with MonitorArg and WorkerArg (e.g. /proc/self/exe)
	User  string          // the worker drops to this user after loading, when started as root
	Group string          // and this group ("": the user's)
	Arg   json.RawMessage // given to the worker's Loader
	// Stderr receives the monitor's and the workers' logs.
	Stderr io.Writer
	Logger *slog.Logger
}

// ErrUnavailable is returned by calls that found no worker before their deadline.
var ErrUnavailable = errors.New("the security module is not available")

// errGone is a worker connection that closed under a call (the call is retried on the next worker).
var errGone = errors.New("security module worker went away")

// RemoteError is a failure reported by the worker.
type RemoteError struct {
	Code string // "malformed", "failed", ...
	Msg  string
}

func (e *RemoteError) Error() string { return "security module: " + e.Msg }

// Client calls the security module. Its methods are safe for concurrent use.
type Client struct {
	log  *slog.Logger
	ctl  *net.UnixConn
	cmd  *exec.Cmd
	done chan struct{} // closed when the monitor has gone

	mu         sync.Mutex
	cur        *workerConn   // guarded by mu: nil while no worker serves
	up         chan struct{} // guarded by mu: closed while cur != nil
	closed     bool          // guarded by mu
	candidates chan candidate

	reloadMu sync.Mutex // one reload at a time
}

type candidate struct {
	wc  *workerConn
	err string
}

// Start starts the monitor and its first worker, and returns once the worker's hello arrived. A worker that
// could not load its secrets fails Start with its reason.
func Start(cfg StartConfig) (*Client, Hello, error) {
	ctl, cmd, err := startChild(cfg.Exe, MonitorArg, "security-module-monitor", cfg.Stderr)
	if err != nil {
		return nil, Hello{}, err
	}
	c := &Client{log: cfg.Logger, ctl: ctl, cmd: cmd, done: make(chan struct{}), up: make(chan struct{}),
		candidates: make(chan candidate, 1)}
	if err := send(ctl, ctlInit{Exe: cfg.Exe, Worker: workerInit{User: cfg.User, Group: cfg.Group, Arg: cfg.Arg}}); err != nil {
		c.Close()
		return nil, Hello{}, fmt.Errorf("starting the security module: %w", err)
	}
	first := make(chan candidate, 1)
	go c.ctlLoop(first)
	select {
	case f := <-first:
		if f.err != "" {
			c.Close()
			return nil, Hello{}, fmt.Errorf("security module: %s", f.err)
		}
		return c, f.wc.hello, nil
	case <-c.done:
		c.Close()
		return nil, Hello{}, errors.New("the security module exited during its start")
	}
}

// Done is closed when the monitor has gone (it died, or Close); no worker will come back.
func (c *Client) Done() <-chan struct{} { return c.done }

// Close stops the module: the monitor sees its control socket close and kills its workers.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	cur := c.cur
	c.cur = nil
	c.mu.Unlock()
	if cur != nil {
		cur.close()
	}
	c.ctl.Close()
	<-c.done
	return nil
}

// ctlLoop reads the monitor's events; the first current worker's hello (or failure) goes to first.
func (c *Client) ctlLoop(first chan candidate) {
	defer func() {
		c.cmd.Wait()
		close(c.done)
	}()
	buf := make([]byte, maxMessage+1)
	for {
		n, fd, err := readWithFD(c.ctl, buf)
		if err != nil || n == 0 {
			c.mu.Lock()
			closed := c.closed
			c.mu.Unlock()
			if !closed {
				c.log.Error("the security module's monitor went away; no new login can succeed", "err", err)
			}
			return
		}
		var ev ctlEvent
		if err := decode(buf[:n], &ev); err != nil || fd < 0 {
			if fd >= 0 {
				syscall.Close(fd)
			}
			if err == nil {
				err = errors.New(ev.Err)
			}
			if !ev.Current {
				select {
				case c.candidates <- candidate{err: err.Error()}:
				default:
				}
			}
			continue
		}
		wc, herr := c.open(fd, ev.Gen)
		switch {
		case !ev.Current:
			select {
			case c.candidates <- candidate{wc: wc, err: herr}:
			default: // nobody waits (the Reload gave up): drop it, the worker exits
				if wc != nil {
					wc.close()
				}
			}
		case herr != "":
			c.log.Error("security module worker could not load; the monitor retries", "gen", ev.Gen, "err", herr)
			if first != nil {
				first <- candidate{err: herr}
				first = nil
			}
		default:
			c.install(wc)
			if first != nil {
				first <- candidate{wc: wc}
				first = nil
			} else {
				c.log.Info("security module worker (re)started", "gen", ev.Gen)
			}
		}
	}
}

// helloTimeout bounds how long a worker may take to load its secrets.
const helloTimeout = time.Minute

// open reads a worker's hello on fd; on failure the connection is closed and the reason returned.
func (c *Client) open(fd int, gen uint64) (*workerConn, string) {
	conn, err := fileConn(fd)
	if err != nil {
		return nil, err.Error()
	}
	return c.openConn(conn, gen)
}

// openConn is open on a connection.
func (c *Client) openConn(conn *net.UnixConn, gen uint64) (*workerConn, string) {
	buf := make([]byte, maxMessage+1)
	conn.SetReadDeadline(time.Now().Add(helloTimeout))
	n, err := conn.Read(buf)
	conn.SetReadDeadline(time.Time{})
	var rep reply
	var h Hello
	if err == nil {
		if rep, err = decodeReply(buf[:n]); err == nil {
			err = json.Unmarshal(rep.Result, &h)
		}
	}
	switch {
	case err != nil:
		conn.Close()
		return nil, "reading the hello: " + err.Error()
	case h.Err != "":
		conn.Close()
		return nil, h.Err
	case len(h.Chain) == 0:
		conn.Close()
		return nil, "the hello carries no certificate"
	}
	wc := &workerConn{conn: conn, gen: gen, hello: h, pending: map[uint64]chan reply{}}
	go wc.readLoop(c)
	return wc, ""
}

// install makes wc the current worker and closes the previous one (its calls are retried on wc).
func (c *Client) install(wc *workerConn) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		wc.close()
		return
	}
	old := c.cur
	c.cur = wc
	select {
	case <-c.up:
	default:
		close(c.up)
	}
	c.mu.Unlock()
	if old != nil {
		old.close()
	}
}

// lost is called when wc's connection ended.
func (c *Client) lost(wc *workerConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != wc {
		return
	}
	c.cur = nil
	c.up = make(chan struct{})
	if !c.closed {
		c.log.Warn("security module worker went away; logins wait for its restart", "gen", wc.gen)
	}
}

// current waits for a worker until ctx is done.
func (c *Client) current(ctx context.Context) (*workerConn, error) {
	for {
		c.mu.Lock()
		wc, up, closed := c.cur, c.up, c.closed
		c.mu.Unlock()
		if wc != nil {
			return wc, nil
		}
		if closed {
			return nil, ErrUnavailable
		}
		select {
		case <-up:
		case <-c.done:
			return nil, ErrUnavailable
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
		}
	}
}

// Hello returns the current worker's hello (ok false while none serves).
func (c *Client) Hello() (Hello, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur == nil {
		return Hello{}, false
	}
	return c.cur.hello, true
}

// Call runs op with args on the worker and decodes its result into result (nil: ignored). It waits for a worker
// (and retries on the next one when the worker dies under it) until ctx is done.
func (c *Client) Call(ctx context.Context, op string, args, result any) error {
	a, err := json.Marshal(args)
	if err != nil {
		return err
	}
	for {
		wc, err := c.current(ctx)
		if err != nil {
			return err
		}
		rep, err := wc.call(ctx, request{Op: op, Args: a})
		if errors.Is(err, errGone) {
			c.lost(wc)
			continue
		}
		if err != nil {
			return err
		}
		if rep.Err != "" {
			return &RemoteError{Code: rep.Code, Msg: rep.Err}
		}
		if result == nil {
			return nil
		}
		return json.Unmarshal(rep.Result, result)
	}
}

// Reload starts a new worker, which loads the secrets anew; when its hello is good it replaces the current worker
// and its hello is returned. Otherwise the current worker stays and the error says why.
func (c *Client) Reload(ctx context.Context) (Hello, error) {
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	for { // drop a candidate left over from a Reload that timed out
		select {
		case old := <-c.candidates:
			if old.wc != nil {
				old.wc.close()
			}
			continue
		default:
		}
		break
	}
	if err := send(c.ctl, ctlRequest{Op: "start"}); err != nil {
		return Hello{}, fmt.Errorf("security module: %w", err)
	}
	var cand candidate
	select {
	case cand = <-c.candidates:
	case <-ctx.Done():
		return Hello{}, fmt.Errorf("security module reload: %w", ctx.Err())
	case <-c.done:
		return Hello{}, ErrUnavailable
	}
	if cand.err != "" {
		return Hello{}, fmt.Errorf("security module: %s", cand.err)
	}
	if err := send(c.ctl, ctlRequest{Op: "current", Gen: cand.wc.gen}); err != nil {
		cand.wc.close()
		return Hello{}, fmt.Errorf("security module: %w", err)
	}
	c.install(cand.wc)
	return cand.wc.hello, nil
}

// CheckPassword asks the module (auth.PasswordChecker).
func (c *Client) CheckPassword(ctx context.Context, user, password string) (auth.Identity, error) {
	var res passwordResult
	err := c.Call(ctx, opPassword, passwordArgs{User: user, Password: password}, &res)
	var re *RemoteError
	if errors.As(err, &re) {
		switch re.Code {
		case codeDenied:
			return auth.Identity{}, auth.ErrBadCredentials
		case codeLocked:
			return auth.Identity{}, auth.ErrLocked
		}
	}
	if err != nil {
		return auth.Identity{}, err
	}
	return auth.Identity{User: res.User, Groups: res.Groups}, nil
}

var _ auth.PasswordChecker = (*Client)(nil)

// signTimeout bounds one signature (a handshake waits for it, also across a worker restart).
const signTimeout = 15 * time.Second

// Certificate builds the TLS certificate of hello: the chain, and a crypto.Signer whose Sign goes to the module.
func (c *Client) Certificate(h Hello) (*tls.Certificate, error) {
	leaf, err := x509.ParseCertificate(h.Chain[0])
	if err != nil {
		return nil, fmt.Errorf("security module's certificate: %w", err)
	}
	return &tls.Certificate{Certificate: h.Chain, Leaf: leaf,
		PrivateKey: &Signer{c: c, keyID: KeyID(leaf), pub: leaf.PublicKey}}, nil
}

// Signer is a crypto.Signer whose private key lives in the security module.
type Signer struct {
	c     *Client
	keyID string
	pub   crypto.PublicKey
}

var _ crypto.Signer = (*Signer)(nil)

// Public returns the certificate's public key.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// Sign asks the module to sign digest (a message for Ed25519) with opts: the hash, and for RSA-PSS the salt
// length. The random source is the module's.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	a := signArgs{Key: s.keyID, Hash: uint(opts.HashFunc()), Digest: digest}
	if p, ok := opts.(*rsa.PSSOptions); ok {
		salt := p.SaltLength
		a.PSS = &salt
	}
	ctx, cancel := context.WithTimeout(context.Background(), signTimeout)
	defer cancel()
	var res signResult
	if err := s.c.Call(ctx, opSign, a, &res); err != nil {
		return nil, err
	}
	return res.Sig, nil
}

// workerConn is the connection to one worker.
type workerConn struct {
	conn  *net.UnixConn
	gen   uint64
	hello Hello

	mu      sync.Mutex
	next    uint64                // guarded by mu
	pending map[uint64]chan reply // guarded by mu
	gone    bool                  // guarded by mu
}

func (w *workerConn) close() { w.conn.Close() }

func (w *workerConn) readLoop(c *Client) {
	buf := make([]byte, maxMessage+1)
	for {
		n, err := w.conn.Read(buf)
		if err != nil || n == 0 {
			break
		}
		rep, err := decodeReply(buf[:n])
		if err != nil {
			c.log.Warn("security module: undecodable reply", "err", err)
			continue
		}
		w.mu.Lock()
		ch := w.pending[rep.ID]
		delete(w.pending, rep.ID)
		w.mu.Unlock()
		if ch != nil {
			ch <- rep
		}
	}
	w.conn.Close()
	w.mu.Lock()
	w.gone = true
	for id, ch := range w.pending {
		close(ch)
		delete(w.pending, id)
	}
	w.mu.Unlock()
	c.lost(w)
}

func (w *workerConn) call(ctx context.Context, req request) (reply, error) {
	ch := make(chan reply, 1)
	w.mu.Lock()
	if w.gone {
		w.mu.Unlock()
		return reply{}, errGone
	}
	w.next++
	req.ID = w.next
	w.pending[req.ID] = ch
	w.mu.Unlock()
	if err := write(w.conn)(encodeRequest(req)); err != nil {
		w.mu.Lock()
		delete(w.pending, req.ID)
		w.mu.Unlock()
		if errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			return reply{}, errGone
		}
		return reply{}, err
	}
	select {
	case rep, ok := <-ch:
		if !ok {
			return reply{}, errGone
		}
		return rep, nil
	case <-ctx.Done():
		w.mu.Lock()
		delete(w.pending, req.ID)
		w.mu.Unlock()
		return reply{}, fmt.Errorf("%w: %w", ErrUnavailable, ctx.Err())
	}
}

// SendRaw writes msg as one message to the current worker, unframed: a test hook for the worker's refusal of
// malformed requests. Its reply (if any) is dropped.
func (c *Client) SendRaw(msg []byte) error {
	wc, err := c.current(context.Background())
	if err != nil {
		return err
	}
	_, err = wc.conn.Write(msg)
	return err
}

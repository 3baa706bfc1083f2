package secmod

// The worker: the process that holds the secrets. It reads its init message (from the monitor), loads the secrets
// with the binary's Loader while it still has the privileges the server started with, drops to sec_mod_user,
// sends its hello and serves requests — each validated, bounded and run in its own goroutine (at most
// maxConcurrent at once) — until the network process closes the socket.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"ocgate/auth"
	"ocgate/egress/privsep"
)

const (
	maxConcurrent  = 64
	requestTimeout = 30 * time.Second
	maxEd25519Msg  = 1024 // TLS signs at most ~200 bytes with Ed25519 (1.3: 64 spaces, context, transcript hash)
	maxUser        = 256
	maxPassword    = 1024
)

// Secrets is what a Loader returns. Key and Passwords stay in the worker; Chain and Public go to the network
// process in the hello.
type Secrets struct {
	Chain     [][]byte             // the certificate chain (DER, leaf first)
	Key       crypto.Signer        // the private key of Chain[0]
	Passwords auth.PasswordChecker // nil: every password check is denied
	Public    map[string]string    // values the network process may know (e.g. a generated first user and password)
	Bans      *BanTable            // nil: the ban operations are refused (bans.go)

	// Methods are more operations the worker serves (Client.Call), e.g. an authentication module taking a request
	// and returning the next form or a verdict. Their names must not be those of the built-in operations; args
	// are at most 16 KiB and already valid JSON, the method validates the rest.
	Methods map[string]Method
}

// Method is an operation served by the worker. An error is returned to the caller as codeFailed with its text.
type Method func(ctx context.Context, args json.RawMessage) (any, error)

// Loader loads the secrets, in the worker, before it drops privileges. arg is the value given to Start.
type Loader func(arg json.RawMessage) (*Secrets, error)

// workerInit is the first message on a worker's socket, written by the monitor.
type workerInit struct {
	User  string          `json:"user"`  // drop to this user after loading (root only; "" stays)
	Group string          `json:"group"` // and this group ("" the user's)
	Arg   json.RawMessage `json:"arg"`   // for the Loader
}

// Hello is a worker's first message to the network process: the public part of what it loaded, or why it could
// not load.
type Hello struct {
	Chain  [][]byte          `json:"chain,omitempty"`
	KeyID  string            `json:"key_id,omitempty"` // hex SHA-256 of the leaf's SubjectPublicKeyInfo
	Public map[string]string `json:"public,omitempty"`
	Err    string            `json:"err,omitempty"`
}

// Built-in operations.
const (
	opSign     = "sign"
	opPassword = "password"
)

type signArgs struct {
	Key    string `json:"key"`           // Hello.KeyID of the key to sign with
	Hash   uint   `json:"hash"`          // crypto.Hash; 0 for Ed25519 (the message itself is signed)
	PSS    *int   `json:"pss,omitempty"` // RSA-PSS salt length (rsa.PSSOptions); absent: PKCS#1 v1.5 or ECDSA
	Digest []byte `json:"digest"`
}

type signResult struct {
	Sig []byte `json:"sig"`
}

type passwordArgs struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

type passwordResult struct {
	User   string   `json:"user"`
	Groups []string `json:"groups,omitempty"`
}

type worker struct {
	log       *slog.Logger
	conn      *net.UnixConn
	key       crypto.Signer
	keyID     string
	passwords auth.PasswordChecker
	methods   map[string]Method
	bans      *BanTable

	wmu       sync.Mutex // serialises writes
	malformed atomic.Uint64
	served    atomic.Uint64
}

// ServeWorker is the worker's main: fd is its socket (from the monitor). It returns nil when the network process
// closed the socket, an error when loading failed (after telling the network process in the hello).
func ServeWorker(fd int, load Loader, log *slog.Logger) error {
	conn, err := fileConn(fd)
	if err != nil {
		return err
	}
	defer conn.Close()
	ppid := os.Getppid()
	if err := setNotDumpable(); err != nil { // also while loading
		return err
	}
	buf := make([]byte, maxMessage+1)
	n, err := conn.Read(buf)
	if err != nil {
		return fmt.Errorf("reading the init message: %w", err)
	}
	var init workerInit
	if err := decode(buf[:n], &init); err != nil {
		return fmt.Errorf("reading the init message: %w", err)
	}
	w := &worker{log: log, conn: conn}
	hello, err := w.load(load, init.Arg)
	if err == nil {
		err = privsep.DropPrivileges(init.User, init.Group, false, log)
	}
	if err == nil {
		// Changing credentials cleared the parent-death signal: set it again, and make sure the monitor did not
		// die in between.
		err = rearmParentDeath(ppid)
	}
	if err == nil {
		err = setNotDumpable()
	}
	if err != nil {
		w.key, w.passwords = nil, nil
		write(conn)(encodeReply(reply{Result: mustJSON(Hello{Err: err.Error()})}))
		return err
	}
	if err := write(conn)(encodeReply(reply{Result: mustJSON(hello)})); err != nil {
		return fmt.Errorf("sending the hello: %w", err)
	}
	log.Info("security module serving", "uid", os.Getuid(), "key", hello.KeyID[:16])
	sem := make(chan struct{}, maxConcurrent)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		n, err := conn.Read(buf)
		if err != nil || n == 0 {
			return nil // the network process closed its end (it exited, or replaced this worker)
		}
		req, err := decodeRequest(buf[:n])
		if err != nil {
			w.refuse(req.ID, err)
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			w.write(w.handle(req))
		}()
	}
}

func (w *worker) load(load Loader, arg json.RawMessage) (Hello, error) {
	s, err := load(arg)
	if err != nil {
		return Hello{}, err
	}
	if len(s.Chain) == 0 || s.Key == nil {
		return Hello{}, errors.New("no certificate or key loaded")
	}
	leaf, err := x509.ParseCertificate(s.Chain[0])
	if err != nil {
		return Hello{}, fmt.Errorf("the certificate: %w", err)
	}
	pub, err := x509.MarshalPKIXPublicKey(s.Key.Public())
	if err != nil {
		return Hello{}, fmt.Errorf("the key: %w", err)
	}
	if sum := sha256.Sum256(pub); hex.EncodeToString(sum[:]) != KeyID(leaf) {
		return Hello{}, errors.New("the private key does not match the certificate")
	}
	for name := range s.Methods {
		if name == opSign || name == opPassword || name == opBanAdd || name == opBanList || name == opBanUnban {
			return Hello{}, fmt.Errorf("method %q shadows a built-in operation", name)
		}
	}
	w.key, w.keyID, w.passwords, w.methods, w.bans = s.Key, KeyID(leaf), s.Passwords, s.Methods, s.Bans
	if w.bans != nil {
		w.bans.log = w.log
	}
	return Hello{Chain: s.Chain, KeyID: w.keyID, Public: s.Public}, nil
}

// KeyID names a certificate's key: the hex SHA-256 of its SubjectPublicKeyInfo.
func KeyID(leaf *x509.Certificate) string {
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// refuse answers (when it can) and logs a malformed request; the log is limited to the first ten and then every
// hundredth, since the counter says the rest.
func (w *worker) refuse(id uint64, err error) {
	n := w.malformed.Add(1)
	if n <= 10 || n%100 == 0 {
		w.log.Warn("security module: refused a malformed request", "err", err, "malformed_total", n)
	}
	w.write(reply{ID: id, Err: err.Error(), Code: codeMalformed})
}

func (w *worker) write(rep reply) {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if err := write(w.conn)(encodeReply(rep)); err != nil {
		w.log.Warn("security module: replying", "err", err)
	}
}

func (w *worker) handle(req request) reply {
	if len(req.Args) > maxArgs {
		w.refuseLater(req, fmt.Errorf("%w: arguments of %d bytes", errMalformed, len(req.Args)))
		return reply{ID: req.ID, Err: "arguments too large", Code: codeMalformed}
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	var res any
	var err error
	switch req.Op {
	case opSign:
		var a signArgs
		if err = strictUnmarshal(req.Args, &a); err == nil {
			res, err = w.sign(a)
		}
	case opPassword:
		var a passwordArgs
		if err = strictUnmarshal(req.Args, &a); err == nil {
			res, err = w.password(ctx, a)
		}
	case opBanAdd, opBanList, opBanUnban:
		res, err = w.ban(req)
	default:
		m := w.methods[req.Op]
		if m == nil {
			err = fmt.Errorf("%w: unknown operation %.32q", errMalformed, req.Op)
			break
		}
		res, err = m(ctx, req.Args)
	}
	w.served.Add(1)
	rep := reply{ID: req.ID}
	switch {
	case errors.Is(err, errMalformed):
		w.refuseLater(req, err)
		rep.Err, rep.Code = err.Error(), codeMalformed
	case errors.Is(err, auth.ErrBadCredentials):
		rep.Err, rep.Code = err.Error(), codeDenied
	case errors.Is(err, auth.ErrLocked):
		rep.Err, rep.Code = err.Error(), codeLocked
	case err != nil:
		rep.Err, rep.Code = err.Error(), codeFailed
	default:
		rep.Result = mustJSON(res)
	}
	return rep
}

// refuseLater counts and logs a request refused after framing (the reply is the caller's).
func (w *worker) refuseLater(req request, err error) {
	n := w.malformed.Add(1)
	if n <= 10 || n%100 == 0 {
		w.log.Warn("security module: refused a malformed request", "op", fmt.Sprintf("%.32q", req.Op), "err", err,
			"malformed_total", n)
	}
}

// strictUnmarshal decodes args, refusing unknown fields.
func strictUnmarshal(args json.RawMessage, v any) error {
	d := json.NewDecoder(bytes.NewReader(args))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	return nil
}

var allowedHashes = map[crypto.Hash]bool{crypto.SHA1: true, crypto.SHA256: true, crypto.SHA384: true, crypto.SHA512: true}

func (w *worker) sign(a signArgs) (any, error) {
	if a.Key != w.keyID {
		return nil, fmt.Errorf("unknown key %.16q (the certificate was reloaded during the handshake?)", a.Key)
	}
	h := crypto.Hash(a.Hash)
	var opts crypto.SignerOpts = h
	_, isRSA := w.key.Public().(*rsa.PublicKey)
	switch {
	case a.PSS != nil && !isRSA:
		return nil, fmt.Errorf("%w: PSS with a non-RSA key", errMalformed)
	case isEd25519(w.key):
		if h != 0 || len(a.Digest) > maxEd25519Msg {
			return nil, fmt.Errorf("%w: Ed25519 signs a message of at most %d bytes with no hash", errMalformed, maxEd25519Msg)
		}
	case !allowedHashes[h] || len(a.Digest) != h.Size():
		return nil, fmt.Errorf("%w: hash %d with a digest of %d bytes", errMalformed, a.Hash, len(a.Digest))
	case a.PSS != nil:
		if s := *a.PSS; s < rsa.PSSSaltLengthEqualsHash || s > w.key.Public().(*rsa.PublicKey).Size() {
			return nil, fmt.Errorf("%w: PSS salt length %d", errMalformed, s)
		}
		opts = &rsa.PSSOptions{SaltLength: *a.PSS, Hash: h}
	}
	sig, err := w.key.Sign(rand.Reader, a.Digest, opts)
	if err != nil {
		return nil, err
	}
	return signResult{Sig: sig}, nil
}

func (w *worker) password(ctx context.Context, a passwordArgs) (any, error) {
	if len(a.User) == 0 || len(a.User) > maxUser || len(a.Password) > maxPassword {
		return nil, fmt.Errorf("%w: user name of %d bytes, password of %d", errMalformed, len(a.User), len(a.Password))
	}
	if w.passwords == nil {
		return nil, auth.ErrBadCredentials
	}
	id, err := w.passwords.CheckPassword(ctx, a.User, a.Password)
	if err != nil {
		return nil, err
	}
	return passwordResult{User: id.User, Groups: id.Groups}, nil
}

func (w *worker) ban(req request) (any, error) {
	if w.bans == nil {
		return nil, errors.New("this module keeps no ban table")
	}
	switch req.Op {
	case opBanAdd:
		var a banAddArgs
		if err := strictUnmarshal(req.Args, &a); err != nil {
			return nil, err
		}
		return w.bans.add(a)
	case opBanUnban:
		var a banUnbanArgs
		if err := strictUnmarshal(req.Args, &a); err != nil {
			return nil, err
		}
		return w.bans.unban(a)
	}
	return w.bans.bans.List(time.Now()), nil
}

func isEd25519(k crypto.Signer) bool {
	_, ok := k.Public().(ed25519.PublicKey)
	return ok
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only this package's own types are marshalled
	}
	return b
}

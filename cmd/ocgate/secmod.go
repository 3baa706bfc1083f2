package main

// Wiring of the security module (egress/secmod): the hidden arguments that make this binary its monitor or its
// worker, the Loader that runs in the worker — the configuration, loadState (prepareState: certificate, key,
// password file, the generated first user; the login module; the RADIUS accounting client) and the ban table — and
// starting it from serve before anything listens. The network process keeps only the public part: the certificate
// chain, and the generated user's name and password when there is one (it prints them), or that the password was
// changed since (it prints none).

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"ocgate/auth"
	"ocgate/config"
	"ocgate/egress/secmod"
	"ocgate/protocol"
	"ocgate/protocol/cluster"
)

// secmodArg is what the worker's Loader gets: where the configuration and the state are.
type secmodArg struct {
	Config   string `json:"config"` // "" = the embedded defaults
	StateDir string `json:"state_dir"`
}

// Keys of secmod.Secrets.Public.
const (
	publicInitialUser     = "initial_user"
	publicInitialPassword = "initial_password"
	publicPasswordChanged = "password_changed" // "true" when `ocgate passwd` changed the generated password
)

// loadSecrets is the worker's Loader.
func loadSecrets(raw json.RawMessage) (*secmod.Secrets, error) {
	var a secmodArg
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, err
	}
	cfg := config.Default()
	if a.Config != "" {
		var err error
		if cfg, err = config.Load(a.Config); err != nil {
			return nil, err
		}
	}
	ld, err := loadState(cfg, a.StateDir, false)
	if err != nil {
		return nil, err
	}
	st, logins, acct := ld.st, ld.logins, ld.acct
	bans, err := secmod.OpenBanTable(bansPath(a.StateDir), protocol.BanConfigOf(cfg))
	if err != nil {
		return nil, err
	}
	if cfg.RedisURL != "" { // ban points shared by the instances
		pw, err := cluster.PasswordFromFile(cfg.RedisPasswordFile)
		if err != nil {
			return nil, err
		}
		sb, err := secmod.OpenSharedBans(cfg.RedisURL, pw, protocol.BanConfigOf(cfg), slog.Default())
		if err != nil {
			return nil, err
		}
		bans.Share(sb)
	}
	s := &secmod.Secrets{Chain: st.chain, Key: st.key, Passwords: ld.passwords, Bans: bans, Methods: map[string]secmod.Method{
		opAuthStep: func(ctx context.Context, args json.RawMessage) (any, error) {
			var req auth.Request
			if err := json.Unmarshal(args, &req); err != nil {
				return nil, fmt.Errorf("auth step: %w", err)
			}
			// A banned address gets no password checked, whatever the network process's own view says.
			if ra, err := netip.ParseAddr(req.Remote); err == nil && !bans.Until(ra, time.Now()).IsZero() {
				return auth.Reply{Verdict: auth.Refused, User: req.Answers["username"], Message: "Authentication failed",
					Reason: "banned address (security module)"}, nil
			}
			return logins.Step(ctx, req), nil
		},
	}}
	s.Methods[opAcctSend] = func(ctx context.Context, args json.RawMessage) (any, error) {
		if acct == nil { // a reload removed acct; accounting is set at start, so this is until the restart
			return nil, errors.New("accounting: the module's configuration has no acct key (a reload removed it: restart)")
		}
		var r auth.AcctRecord
		if err := json.Unmarshal(args, &r); err != nil {
			return nil, fmt.Errorf("accounting: %w", err)
		}
		return struct{}{}, acct.Send(ctx, r)
	}
	if keys := ld.cookieKeys; keys != nil {
		s.Methods[opCookieSeal] = func(_ context.Context, args json.RawMessage) (any, error) {
			var t auth.Token
			if err := json.Unmarshal(args, &t); err != nil {
				return nil, fmt.Errorf("cookie seal: %w", err)
			}
			return keys.Seal(t)
		}
		s.Methods[opCookieOpen] = func(_ context.Context, args json.RawMessage) (any, error) {
			var c string
			if err := json.Unmarshal(args, &c); err != nil {
				return nil, fmt.Errorf("cookie open: %w", err)
			}
			return keys.Open(c, time.Now())
		}
	}
	s.Public = st.public()
	return s, nil
}

// loaded is what the security module's worker loads from the configuration (loadState).
type loaded struct {
	st        *state
	passwords auth.PasswordChecker // nil (every check denied) without a password file
	logins    *auth.Module
	acct      auth.Accounting // nil without the acct key
	// cookieKeys seal and open cookies (cookie_key_file); nil: cookies are random (auth.NewCookie).
	cookieKeys *auth.CookieKeys
}

// loadState loads the configuration's secrets: prepareState (the certificate and key, or the generated ones and
// the generated user), the password file, the login module with its files, the accounting client and the cookie
// keys. The worker
// runs it (loadSecrets); so does `ocgate config check` (checkConfig), in its own process and with check set, so that
// a configuration it passes is one the module loads. passwords and logins are nil when check finds the user would
// be generated.
func loadState(cfg *config.Config, stateDir string, check bool) (*loaded, error) {
	st, err := prepareState(stateDir, cfg, check)
	if err != nil {
		return nil, err
	}
	ld := &loaded{st: st}
	if st.passwdFile != "" {
		pf, err := auth.OpenPlainFile(st.passwdFile)
		if err != nil {
			return nil, err
		}
		ld.passwords = pf
	}
	if st.passwdFile != "" || len(cfg.Auth) > 0 {
		if ld.logins, err = newAuthModule(cfg, st.passwdFile); err != nil {
			return nil, err
		}
	}
	if ld.acct, err = newAccounting(cfg); err != nil {
		return nil, err
	}
	if cfg.CookieKeyFile != "" {
		if ld.cookieKeys, err = auth.LoadCookieKeys(cfg.CookieKeyFile); err != nil {
			return nil, err
		}
	}
	return ld, nil
}

// bansPath is where the ban table is kept across worker restarts: bansFile in the state directory, created for it
// if it can be. A configuration that needs no state directory (server_cert, server_key and auth set) still starts
// where there is none to be had, with the table in memory only ("").
func bansPath(stateDir string) string {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		slog.Warn("security module: the ban table is kept in memory only (a worker restart forgets it): "+
			"its place, the state directory, cannot be created; set --state-dir to a writable directory", "err", err)
		return ""
	}
	return filepath.Join(stateDir, bansFile)
}

// public is what the network process may know of st (secmod.Secrets.Public): the generated user's name, its
// password while it is still the user's, and whether `ocgate passwd` changed it since.
func (st *state) public() map[string]string {
	if st.initialUser == "" {
		return nil
	}
	p := map[string]string{publicInitialUser: st.initialUser, publicInitialPassword: st.initialPassword}
	if st.passwordChanged {
		p[publicPasswordChanged] = "true"
	}
	return p
}

// runSecurityModule is main for the monitor and the worker.
func runSecurityModule(arg string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	var err error
	if arg == secmod.MonitorArg {
		log = log.With("component", "security-module-monitor")
		err = secmod.ServeMonitor(3, log)
	} else {
		log = log.With("component", "security-module", "pid", os.Getpid())
		// The worker's heap grows with a burst of logins (concurrent password checks and signatures) too.
		done := make(chan struct{})
		defer close(done)
		go trimMemoryWhenQuiet(done)
		err = secmod.ServeWorker(3, loadSecrets, log)
	}
	if err != nil {
		log.Error("exiting", "err", err)
		return 1
	}
	return 0
}

// startSecurityModule starts the module for the configuration file configPath ("" = the embedded defaults).
func startSecurityModule(cfg *config.Config, configPath, stateDir string, log *slog.Logger) (*secmod.Client, secmod.Hello, error) {
	user, group := cfg.SecModUser, ""
	if user == "" {
		user, group = cfg.RunAsUser, cfg.RunAsGroup
	}
	exe := "/proc/self/exe" // the running binary even if the file was replaced since
	if runtime.GOOS != "linux" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, secmod.Hello{}, err
		}
	}
	arg, _ := json.Marshal(secmodArg{Config: configPath, StateDir: stateDir})
	return secmod.Start(secmod.StartConfig{Exe: exe, User: user, Group: group, Arg: arg, Stderr: os.Stderr,
		Logger: log.With("component", "security-module")})
}

// publicState is what the network process knows of the state: enough to say how to connect.
type publicState struct {
	pin             string // pin-sha256:... of the server key, for openconnect --servercert
	initialUser     string
	initialPassword string // "" when passwordChanged
	passwordChanged bool   // the generated password was changed since: it is not printed
}

func publicStateOf(h secmod.Hello) (*publicState, error) {
	leaf, err := x509.ParseCertificate(h.Chain[0])
	if err != nil {
		return nil, fmt.Errorf("the security module's certificate: %w", err)
	}
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return &publicState{pin: "pin-sha256:" + base64.StdEncoding.EncodeToString(sum[:]),
		initialUser: h.Public[publicInitialUser], initialPassword: h.Public[publicInitialPassword],
		passwordChanged: h.Public[publicPasswordChanged] == "true"}, nil
}

// bansFile, in the state directory, holds the module's ban table across worker restarts.
const bansFile = "bans.json"

// opAcctSend is the module's method for one accounting request (auth.Accounting.Send): the RADIUS shared secret
// stays in the module.
const opAcctSend = "acct.send"

// secmodAccounting is accounting as the network process sees it: each request a call to the security module. A
// worker restart during a call repeats the request on the next worker (RADIUS servers see a duplicate at worst).
type secmodAccounting struct{ c *secmod.Client }

var _ auth.Accounting = secmodAccounting{}

func (a secmodAccounting) Send(ctx context.Context, r auth.AcctRecord) error {
	return a.c.Call(ctx, opAcctSend, r, nil)
}

// opAuthStep is the module's method for one step of a login (auth.Module.Step): the password and OTP files and
// the login's state stay in the module; this process sends the client's answers and gets the next form or the
// verdict.
const opAuthStep = "auth.step"

// secmodAuth is the login module as the network process sees it: each step a call to the security module.
type secmodAuth struct{ c *secmod.Client }

var _ auth.Authenticator = secmodAuth{}

func (a secmodAuth) Step(ctx context.Context, req auth.Request) auth.Reply {
	var r auth.Reply
	if err := a.c.Call(ctx, opAuthStep, req, &r); err != nil {
		return auth.Reply{Verdict: auth.Refused, User: req.Answers["username"], Message: "Authentication failed",
			Reason: "security module: " + err.Error()}
	}
	return r
}

// opCookieSeal and opCookieOpen are the module's methods for sealed cookies (auth.CookieKeys): cookie_key_file
// stays in the module; this process sends a token and gets the cookie, or a cookie and gets its token.
const (
	opCookieSeal = "cookie.seal"
	opCookieOpen = "cookie.open"
)

// secmodSealer seals and opens cookies through the security module.
type secmodSealer struct{ c *secmod.Client }

var _ auth.CookieSealer = secmodSealer{}

func (s secmodSealer) SealCookie(ctx context.Context, t auth.Token) (string, error) {
	var c string
	err := s.c.Call(ctx, opCookieSeal, t, &c)
	return c, err
}

// OpenCookie returns auth.ErrBadCookie for a cookie the module refused, another error when it could not be asked.
func (s secmodSealer) OpenCookie(ctx context.Context, cookie string) (auth.Token, error) {
	var t auth.Token
	err := s.c.Call(ctx, opCookieOpen, cookie, &t)
	if re, ok := errors.AsType[*secmod.RemoteError](err); ok && re.Msg == auth.ErrBadCookie.Error() {
		return auth.Token{}, auth.ErrBadCookie
	}
	return t, err
}

// Command ocgate is an OpenConnect (AnyConnect-compatible) VPN server whose default data path needs no root and no
// TUN device. This file is wiring only: `ocgate [serve]` (the default command; cli.go holds the command line)
// loads the configuration, prepares the state directory and connects the packages.
//
//	ocgate [serve] [-c FILE] [--state-dir DIR]   serve (--pprof ADDR with -tags pprof)
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"ocgate/auth"
	"ocgate/config"
	"ocgate/egress/secmod"
	"ocgate/protocol"
)

// shutdownTimeout bounds how long the server waits, after sending TERMINATE, for its connections to close.
const shutdownTimeout = 5 * time.Second

// stateDirDefault is $XDG_STATE_HOME/ocgate, else ~/.local/state/ocgate.
func stateDirDefault() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "ocgate")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return filepath.Join(os.TempDir(), "ocgate-state")
	}
	return filepath.Join(home, ".local", "state", "ocgate")
}

type serveFlags struct {
	config    string
	stateDir  string
	logFormat string
	logLevel  string
	pprof     string
	version   bool
}

// serveCommand is `ocgate [serve]`, the default command (cli.go).
var serveCommand = &command{name: "serve", summary: "run the server (the default command)", setup: serveSetup}

func serveSetup(fs *pflag.FlagSet) func(stdio, []string) int {
	var f serveFlags
	fs.StringVarP(&f.config, "config", "c", "", "configuration file (TOML, ocserv option names); default: embedded defaults")
	fs.StringVar(&f.stateDir, "state-dir", "", "state directory for the generated certificate and users (default "+stateDirDefault()+")")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.pprof, "pprof", "", "serve Go's profiler (/debug/pprof/) on this address, e.g. 127.0.0.1:6060; binaries built with -tags pprof only; never a public address")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	return func(io stdio, _ []string) int {
		if f.version {
			fmt.Fprint(io.out, versionInfo())
			return 0
		}
		log, err := newLogger(io.err, f.logFormat, f.logLevel)
		if err != nil {
			fmt.Fprintln(io.err, "ocgate:", err)
			return exitUsage
		}
		if err := serve(f, log, io.out); err != nil {
			fmt.Fprintln(io.err, "ocgate:", err)
			return 1
		}
		return 0
	}
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func serve(f serveFlags, log *slog.Logger, stdout io.Writer) error {
	if f.pprof != "" {
		if err := startPprof(f.pprof, log); err != nil {
			return err
		}
	}
	cfg := config.Default()
	if f.config != "" {
		var err error
		if cfg, err = config.Load(f.config); err != nil {
			return err
		}
	}
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	removePID, err := writePIDFile(cfg.PidFile, log)
	if err != nil {
		return err
	}
	defer removePID()
	stateDir := f.stateDir
	if stateDir == "" {
		stateDir = stateDirDefault()
	}
	tc := &tls.Config{}
	revocations := &auth.Revocations{}
	su, err := prepare(cfg, tc, revocations)
	if err != nil {
		return err
	}
	pool, pool6, userPools := su.pool, su.pool6, su.userPools
	// The security module holds the private key and the password file; this process never reads them.
	sm, hello, err := startSecurityModule(cfg, f.config, stateDir, log)
	if err != nil {
		return err
	}
	defer sm.Close()
	st, err := publicStateOf(hello)
	if err != nil {
		return err
	}
	tlsCert, err := sm.Certificate(hello)
	if err != nil {
		return err
	}
	var accounting auth.Accounting // the RADIUS client and its secret are the module's (secmod.go)
	if len(cfg.Acct) > 0 {
		accounting = secmodAccounting{sm}
	}
	dp, err := newDatapath(cfg, pool, pool6, userPools, log)
	if err != nil {
		return err
	}
	defer dp.Close()

	// The certificate is swapped by a reload (manage.go); logins run in the security module (secmodAuth), which a
	// reload replaces; client certificates are verified here, in the handshake, against ca_cert and the CRL.
	cert := &atomic.Pointer[tls.Certificate]{}
	cert.Store(tlsCert)
	tc.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return cert.Load(), nil
	}
	shared, err := openShared(cfg, sm, log)
	if err != nil {
		return err
	}
	defer shared.close()
	srv, err := protocol.NewServer(protocol.Options{
		Config:     cfg,
		TLSConfig:  tc,
		Auth:       secmodAuth{sm},
		Accounting: accounting,
		Bans:       secmod.NewBans(sm), // the ban table is the module's too
		Datapath:   dp.Datapath,
		Pool:       pool,
		Pool6:      pool6,
		UserPools:  userPools,
		Logger:     log,
		Version:    version,
		Scripts:    dp.scripts,
		DefaultDNS: dp.defaultDNS,
		Cluster:    shared.store,
		Sealer:     shared.sealer,
	})
	if err != nil {
		return err
	}
	shared.start(srv)
	addr := net.JoinHostPort(cfg.ListenHost, strconv.Itoa(cfg.TCPPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on TCP %s: %w", addr, err)
	}
	clearLns, err := listenClear(cfg)
	if err != nil {
		ln.Close()
		return err
	}
	defer func() {
		for _, l := range clearLns {
			l.Close()
		}
	}()
	serveErr := make(chan error, 2+len(clearLns))
	udpDesc := ""
	if !cfg.NoUDP {
		host := cfg.UDPListenHost
		if host == "" {
			host = cfg.ListenHost
		}
		uaddr := net.JoinHostPort(host, strconv.Itoa(cfg.UDPPort))
		pc, err := net.ListenPacket("udp", uaddr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listening on UDP %s: %w", uaddr, err)
		}
		udpDesc = " and UDP " + pc.LocalAddr().String()
		go func() {
			if err := srv.ServeDTLS(pc.(*net.UDPConn)); !errors.Is(err, protocol.ErrServerClosed) {
				serveErr <- fmt.Errorf("DTLS: %w", err)
			}
		}()
	}
	stop := make(chan struct{})
	var stopOnce sync.Once
	var draining atomic.Bool
	mgmt := &backend{Server: srv, log: log, datapath: cfg.Datapath, cfg: cfg, stateDir: stateDir, cert: cert,
		secmod: sm, revocations: revocations, stop: func() { stopOnce.Do(func() { close(stop) }) }}
	serveCtl, closeCtl, err := startControlSocket(cfg, stateDir, mgmt, log)
	if err != nil {
		ln.Close()
		return err
	}
	defer closeCtl()
	closeMetrics, err := startMetrics(cfg, srv, dp, &draining, log)
	if err != nil {
		ln.Close()
		return err
	}
	defer closeMetrics()
	if err := dp.dropPrivileges(cfg, log); err != nil {
		ln.Close()
		return err
	}
	if err := isolate(cfg, stateDir, dp.helper != nil, log); err != nil {
		ln.Close()
		return err
	}
	if installTestHooks != nil {
		installTestHooks(&serverHooks{secmod: sm, log: log, stateDir: stateDir})
	}
	serveCtl()
	log.Info("listening", "tcp", ln.Addr().String(), "udp", strings.TrimPrefix(udpDesc, " and UDP "), "datapath", cfg.Datapath, "pool", pool.Prefix())
	go func() { serveErr <- srv.Serve(ln) }()
	for _, l := range clearLns {
		log.Info("listening for plain HTTP behind a TLS-terminating proxy", "listener", l.Addr().Network()+":"+l.Addr().String())
		go func() {
			if err := srv.ServeClear(l); !errors.Is(err, protocol.ErrServerClosed) {
				serveErr <- fmt.Errorf("serving %s: %w", l.Addr(), err)
			}
		}()
	}
	printHowToConnect(stdout, ln.Addr().String()+udpDesc, cfg, st)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	stopNow := false // ctl stop now: no drain
wait:
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP {
				if _, err := mgmt.Reload(); err != nil {
					log.Error("reload refused; the running configuration stays", "err", err)
				}
				continue
			}
			log.Info("shutting down", "signal", s.String())
			draining.Store(true) // /readyz: not ready from now on
			break wait
		case <-stop:
			log.Info("shutting down", "reason", "ctl stop now")
			draining.Store(true)
			stopNow = true
			break wait
		case err := <-serveErr:
			return fmt.Errorf("serving: %w", err)
		case <-sm.Done():
			err := errors.New("the security module's monitor exited")
			srv.Shutdown(context.Background())
			return err
		}
	}
	// server_drain_ms: not ready (/readyz) and refusing new connections while the sessions go on, so that a load
	// balancer notices and sends new users elsewhere; a second signal cuts the wait short.
	if d := time.Duration(cfg.ServerDrainMS) * time.Millisecond; d > 0 && !stopNow {
		srv.StopAccepting()
		log.Info("draining: new connections refused; sessions end after server_drain_ms", "in", d)
		select {
		case <-time.After(d):
		case s := <-sig:
			log.Info("ending sessions now", "signal", s.String())
		}
	}
	// Every session gets TERMINATE; the process exits within shutdownTimeout of this point.
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("shutdown did not finish cleanly", "err", err)
	}
	return nil
}

// startup is what the network process builds from its configuration before it listens; the secrets are the
// security module's (loadState).
type startup struct {
	pool      *protocol.Pool
	pool6     *protocol.Pool6
	userPools []netip.Prefix // the networks of per-user and per-group files: the datapath serves them from the start
}

// prepare checks and builds what the configuration gives the network process: what isolate_workers forbids, the
// address pools (the global ones and those of per-user and per-group files, which must not overlap), and into tc
// and revocations the client-certificate CA and CRL. `ocgate config check` runs it too, with loadState, so that a
// file it passes is one the server starts with.
func prepare(cfg *config.Config, tc *tls.Config, revocations *auth.Revocations) (*startup, error) {
	if err := checkIsolation(cfg); err != nil {
		return nil, err
	}
	su := &startup{}
	var err error
	if su.pool, err = protocol.NewPool(cfg.IPv4Network); err != nil {
		return nil, err
	}
	if cfg.IPv6Network.IsValid() {
		if su.pool6, err = protocol.NewPool6(cfg.IPv6Network, cfg.IPv6SubnetPrefix); err != nil {
			return nil, err
		}
	}
	su.userPools = cfg.UserNetworks()
	if err := config.PoolsOverlap(append([]netip.Prefix{cfg.IPv4Network, cfg.IPv6Network}, su.userPools...)); err != nil {
		return nil, err
	}
	if err := clientCertTLS(tc, cfg, revocations); err != nil {
		return nil, err
	}
	return su, nil
}

// socksPort is the SOCKS5 port of the unprivileged client command the banner prints (ocproxy -D).
const socksPort = 11080

// printHowToConnect prints the banner: the client commands (with a TUN device, which needs root on the client, and
// without root through ocproxy), the password when it is the generated one and still current, and what users may
// reach.
func printHowToConnect(w io.Writer, listening string, cfg *config.Config, st *publicState) {
	host := cfg.ListenHost
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	url := "https://" + net.JoinHostPort(host, strconv.Itoa(cfg.TCPPort)) + "/"
	login := ""
	if st.initialUser != "" {
		login = " -u " + st.initialUser
	}
	fmt.Fprintf(w, "ocgate: listening on TCP %s, %s datapath\n", listening, cfg.Datapath)
	fmt.Fprintln(w, "Connect with:")
	fmt.Fprintf(w, "  openconnect --servercert %s%s %s\n", st.pin, login, url)
	switch {
	case st.initialPassword != "":
		fmt.Fprintf(w, "Password: %s\n", st.initialPassword)
	case st.passwordChanged:
		fmt.Fprintf(w, "(the generated password of %s was changed since, with `ocgate passwd`: it is not printed)\n", st.initialUser)
	}
	fmt.Fprintf(w, "That needs root on the client (a TUN device). Without root, ocproxy makes the tunnel a SOCKS5 proxy:\n")
	fmt.Fprintf(w, "  openconnect --servercert %s%s --script-tun --script \"ocproxy -D %d\" %s\n", st.pin, login, socksPort, url)
	fmt.Fprintf(w, "  curl --socks5-hostname 127.0.0.1:%d http://HOST/\n", socksPort)
	fmt.Fprintln(w, reachable(cfg))
	if host == "127.0.0.1" {
		fmt.Fprintln(w, "(from another machine, use this host's name or address instead of 127.0.0.1)")
	}
}

// reachable is the banner's line on what users may reach, and where that is changed.
func reachable(cfg *config.Config) string {
	routes := "every address"
	if len(cfg.Routes) > 0 && !slices.ContainsFunc(cfg.Routes, func(p netip.Prefix) bool { return p.Bits() == 0 }) {
		s := make([]string, len(cfg.Routes))
		for i, p := range cfg.Routes {
			s[i] = p.String()
		}
		routes = strings.Join(s, ", ")
	}
	where := "in " + cfg.Path
	if cfg.Path == "" {
		where = "in a configuration file (ocgate config defaults > ocgate.toml; ocgate -c ocgate.toml)"
	}
	if cfg.Datapath == "tun" {
		return fmt.Sprintf("Users reach: %s (route), as this host's kernel routes and its firewall allows; change route %s.", routes, where)
	}
	line := fmt.Sprintf("Users reach: %s (route), except this host itself, loopback, link-local (cloud metadata), "+
		"multicast and broadcast", routes)
	if len(cfg.EgressDeny) > 0 {
		line += " and egress_deny"
	}
	if len(cfg.EgressAllow) > 0 {
		line += fmt.Sprintf(", but for egress_allow (%d entries)", len(cfg.EgressAllow))
	}
	return line + fmt.Sprintf("; egress_allow publishes a service of this host; change route, egress_allow and egress_deny %s.", where)
}

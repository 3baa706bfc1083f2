// Command ocgate is an OpenConnect (AnyConnect-compatible) VPN server whose default data path needs no root and no
// TUN device. This file is wiring only: it parses flags, loads the configuration, prepares the state directory and
// connects the packages.
//
//	ocgate [-c FILE] [--state-dir DIR]     serve (the default; --pprof ADDR with -tags pprof)
//	ocgate passwd ...                      edit a password file like ocpasswd
//	ocgate config check FILE | defaults    validate a config / print the defaults
//	ocgate ctl [-s SOCKET] COMMAND         manage a running server (also as `occtl`, a symlink; ctl.go)
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
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"ocgate/auth"
	"ocgate/config"
	"ocgate/egress/privsep"
	"ocgate/egress/secmod"
	"ocgate/protocol"
)

const version = "0.1.0"

// shutdownTimeout bounds how long the server waits, after sending TERMINATE, for its connections to close.
const shutdownTimeout = 5 * time.Second

func main() {
	args := os.Args[1:]
	if filepath.Base(os.Args[0]) == "occtl" {
		os.Exit(runCtl("occtl", args, os.Stdout, os.Stderr))
	}
	if len(args) > 0 {
		switch args[0] {
		case "ctl":
			os.Exit(runCtl("ocgate ctl", args[1:], os.Stdout, os.Stderr))
		case "passwd":
			os.Exit(runPasswd(args[1:], os.Stdin, os.Stdout, os.Stderr))
		case "config":
			os.Exit(runConfig(args[1:], os.Stdout, os.Stderr))
		case "serve":
			args = args[1:]
		case secmod.MonitorArg, secmod.WorkerArg: // the security module (secmod.go), started by the server itself
			os.Exit(runSecurityModule(args[0]))
		case privHelperArg: // the privileged helper (datapath.go), started by the server itself
			log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "privileged-helper")
			if err := privsep.ServeHelper(3, log); err != nil {
				log.Error("exiting", "err", err)
				os.Exit(1)
			}
			os.Exit(0)
		}
	}
	os.Exit(runServe(args, os.Stdout, os.Stderr))
}

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

func runServe(args []string, stdout, stderr io.Writer) int {
	var f serveFlags
	fs := pflag.NewFlagSet("ocgate", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVarP(&f.config, "config", "c", "", "configuration file (TOML, ocserv option names); default: embedded defaults")
	fs.StringVar(&f.stateDir, "state-dir", "", "state directory for the generated certificate and users (default "+stateDirDefault()+")")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&f.pprof, "pprof", "", "serve Go's profiler (/debug/pprof/) on this address, e.g. 127.0.0.1:6060; binaries built with -tags pprof only; never a public address")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return 2
	}
	if f.version {
		fmt.Fprintln(stdout, "ocgate", version)
		return 0
	}
	log, err := newLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "ocgate:", err)
		return 2
	}
	if err := serve(f, log, stdout); err != nil {
		fmt.Fprintln(stderr, "ocgate:", err)
		return 1
	}
	return 0
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
	if err := checkIsolation(cfg); err != nil {
		return err
	}
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
	pool, err := protocol.NewPool(cfg.IPv4Network)
	if err != nil {
		return err
	}
	var pool6 *protocol.Pool6
	if cfg.IPv6Network.IsValid() {
		if pool6, err = protocol.NewPool6(cfg.IPv6Network, cfg.IPv6SubnetPrefix); err != nil {
			return err
		}
	}
	// The networks of per-user and per-group files: the datapath serves them from the start.
	userPools := cfg.UserNetworks()
	if err := config.PoolsOverlap(append([]netip.Prefix{cfg.IPv4Network, cfg.IPv6Network}, userPools...)); err != nil {
		return err
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
	tc := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return cert.Load(), nil
	}}
	revocations := &auth.Revocations{}
	if err := clientCertTLS(tc, cfg, revocations); err != nil {
		return err
	}
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
	})
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(cfg.ListenHost, strconv.Itoa(cfg.TCPPort))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on TCP %s: %w", addr, err)
	}
	serveErr := make(chan error, 2)
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

func printHowToConnect(w io.Writer, listening string, cfg *config.Config, st *publicState) {
	host := cfg.ListenHost
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	url := "https://" + net.JoinHostPort(host, strconv.Itoa(cfg.TCPPort)) + "/"
	fmt.Fprintf(w, "ocgate: listening on TCP %s, %s datapath\n", listening, cfg.Datapath)
	fmt.Fprintln(w, "Connect with:")
	if st.initialUser != "" {
		fmt.Fprintf(w, "  openconnect --servercert %s -u %s %s\n", st.pin, st.initialUser, url)
		fmt.Fprintf(w, "Password: %s\n", st.initialPassword)
	} else {
		fmt.Fprintf(w, "  openconnect --servercert %s %s\n", st.pin, url)
	}
	if host == "127.0.0.1" {
		fmt.Fprintln(w, "(from another machine, use this host's name or address instead of 127.0.0.1)")
	}
}

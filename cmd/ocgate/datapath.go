package main

// Choosing the datapath, the script runner and who keeps privileges.
//
//	netstack                    the server process does everything; scripts run as whoever runs ocgate
//	tun, not root               the process needs CAP_NET_ADMIN (setcap); scripts run in it
//	tun, root, no run_as_user   everything in the process, as root (like ocserv without run-as-user)
//	tun, root, run_as_user      a privileged helper (a copy of this binary, kept root) creates devices and runs
//	                            scripts; the server process drops to run_as_user once its sockets are bound

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"

	"ocgate/config"
	"ocgate/egress"
	"ocgate/egress/privsep"
	"ocgate/egress/tun"
	"ocgate/netstack"
	"ocgate/protocol"
	"ocgate/protocol/datapath"
	"ocgate/protocol/dtls"
)

// maxDTLSSockets bounds the SO_REUSEPORT group of the DTLS port: one socket (and reader) per core, up to this.
const maxDTLSSockets = 8

// listenDTLS opens the DTLS port: a SO_REUSEPORT group of one socket per core, each with its own reader, so that
// the DTLS input of many clients (and the netstack's input, which runs in the reader) is spread over the cores.
func listenDTLS(addr string) ([]*net.UDPConn, error) {
	return dtls.Listen(addr, min(runtime.GOMAXPROCS(0), maxDTLSSockets))
}

// privHelperArg is the (undocumented) first argument that makes ocgate the privileged helper.
const privHelperArg = "__privileged-helper"

type wiredDatapath struct {
	datapath.Datapath
	scripts    protocol.ScriptRunner
	defaultDNS []netip.Addr
	flowLog    *os.File // closed with the datapath
	helper     *privsep.HelperClient
	helperCmd  *exec.Cmd
	socksDone  chan struct{} // closed when the SOCKS5 ingress has stopped (netstack with socks5_listen)
}

// userPools are the networks of per-user and per-group files, served from the start (protocol.Options.UserPools).
func newDatapath(cfg *config.Config, pool *protocol.Pool, pool6 *protocol.Pool6, userPools []netip.Prefix, log *slog.Logger) (*wiredDatapath, error) {
	scripts := &privsep.Scripts{Connect: cfg.ConnectScript, Disconnect: cfg.DisconnectScript, HostUpdate: cfg.HostUpdateScript,
		RouteAdd: cfg.RouteAddCmd, RouteDel: cfg.RouteDelCmd}
	w := &wiredDatapath{}
	if *scripts != (privsep.Scripts{}) {
		w.scripts = scripts
	}
	switch cfg.Datapath {
	case "netstack":
		var flowLog io.Writer
		switch cfg.FlowLog {
		case "":
		case "-":
			flowLog = os.Stderr
		default:
			f, err := os.OpenFile(cfg.FlowLog, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
			if err != nil {
				return nil, fmt.Errorf("flow_log: %w", err)
			}
			flowLog, w.flowLog = f, f
		}
		keepalive := cfg.TCPKeepalive
		if keepalive == 0 {
			keepalive = -1 // tcp_keepalive = 0: none (the netstack's zero means its default)
		}
		dp, err := netstack.New(netstack.Config{
			Gateway:   pool.Gateway(),
			Pool:      pool.Prefix(),
			Gateway6:  pool6.Gateway(),
			Pool6:     pool6.Prefix(),
			ServeDNS:  len(cfg.DNS) == 0,
			UserPools: userPools,
			Policy:    egress.Config{Allow: cfg.EgressAllow, Deny: cfg.EgressDeny},
			ICMP:      icmpStrategy(cfg, log),
			Upstream:  cfg.DNSUpstream,
			FlowLog:   flowLog,
			Logger:    log.With("component", "netstack"),

			MaxFlowsPerSession:    cfg.MaxFlowsPerSession,
			MaxHalfOpenPerSession: cfg.MaxHalfOpenPerSession,
			MaxDialsInFlight:      cfg.MaxDialsInFlight,
			TCPKeepalive:          keepalive,
			UDPIdleTimeout:        cfg.UDPIdleTimeout,
		})
		if err != nil {
			return nil, fmt.Errorf("starting the netstack datapath: %w", err)
		}
		w.Datapath = dp
		w.defaultDNS = []netip.Addr{pool.Gateway()}
		if cfg.SOCKS5Listen != "" {
			if err := w.startSOCKS(dp, cfg, log); err != nil {
				dp.Close()
				return nil, err
			}
		}
		return w, nil
	case "tun":
		tcfg := tun.Config{Prefix: cfg.Device, Local: pool.Gateway(), Local6: pool6.Gateway(), Logger: log.With("component", "tun"),
			Pool: pool.Prefix(), Pool6: pool6.Prefix(), UserPools: userPools}
		if pool6 != nil {
			tcfg.ClientBits6 = pool6.SubnetBits()
		}
		if cfg.RunAsUser != "" && os.Geteuid() == 0 {
			h, cmd, err := privsep.StartHelper([]string{"/proc/self/exe", privHelperArg}, privsep.HelperConfig{
				Prefix: cfg.Device, Local: pool.Gateway(), Pool: pool.Prefix(), Scripts: *scripts,
				Local6: pool6.Gateway(), Pool6: pool6.Prefix(), UserPools: userPools,
			}, os.Stderr)
			if err != nil {
				return nil, err
			}
			w.helper, w.helperCmd = h, cmd
			tcfg.Opener = h
			if w.scripts != nil {
				w.scripts = h
			}
		}
		// socks5_listen is ignored here (config.Parse warned): the kernel routes the host's connections to the
		// clients' addresses through their devices already.
		dp, err := tun.New(tcfg)
		if err != nil {
			w.closeHelper()
			return nil, fmt.Errorf("device: %w", err)
		}
		w.Datapath = dp
		return w, nil
	}
	return nil, fmt.Errorf("unknown datapath %q", cfg.Datapath)
}

// startSOCKS serves the SOCKS5 ingress (socks5_listen): host applications reach VPN clients' addresses, and only
// those, through the stack. It binds now, before privileges are dropped; the stack's Close stops it.
func (w *wiredDatapath) startSOCKS(dp *netstack.Stack, cfg *config.Config, log *slog.Logger) error {
	ln, err := net.Listen("tcp", cfg.SOCKS5Listen)
	if err != nil {
		return fmt.Errorf("socks5_listen: %w", err)
	}
	log.Info("socks5 ingress listening", "addr", ln.Addr().String(), "auth", cfg.SOCKS5User != "")
	w.socksDone = make(chan struct{})
	go func() {
		defer close(w.socksDone)
		if err := dp.ServeSOCKS(ln, netstack.SOCKSConfig{User: cfg.SOCKS5User, Password: cfg.SOCKS5Password}); err != nil {
			log.Error("socks5 ingress stopped", "err", err)
		}
	}()
	return nil
}

func (w *wiredDatapath) Close() error {
	err := w.Datapath.Close()
	if w.flowLog != nil {
		w.flowLog.Close()
	} // a netstack's Close also stops the SOCKS5 ingress
	if w.socksDone != nil {
		<-w.socksDone
	}
	w.closeHelper()
	return err
}

func (w *wiredDatapath) closeHelper() {
	if w.helper != nil {
		w.helper.Close() // the helper exits when its socket closes
		w.helperCmd.Wait()
	}
}

// dropPrivileges switches to run_as_user and run_as_group when running as root; it is called once the sockets
// are bound.
func (w *wiredDatapath) dropPrivileges(cfg *config.Config, log *slog.Logger) error {
	return privsep.DropPrivileges(cfg.RunAsUser, cfg.RunAsGroup, w.helper != nil, log)
}

// Command loadgen opens many OpenConnect (AnyConnect-protocol) sessions against a server — ocgate or ocserv — with
// its own Go client (package client: XML auth, CONNECT, CSTP, DTLS 1.2 PSK), keeps them idle or pushes traffic
// through them, and reports what it measured:
//
//	go run ./integration/loadgen --url https://127.0.0.1:8443/ --user ocgate --password PW --pin pin-sha256:... \
//	    -n 1000 --concurrency 32 --mode idle --duration 10s --server-pid $(pgrep -n ocgate)
//
// Modes:
//
//	idle  establish the sessions and hold them for --duration (RSS per idle session with --server-pid)
//	ping  --rate packets/s per session for --duration: ICMP echo to --target IP (default: the first DNS server the
//	      CONNECT response names, the gateway on ocgate), or UDP to --target IP:PORT (an echo service)
//	bulk  each session runs TCP through a user-space gVisor stack bound to its tunnel address to --bulk-target,
//	      downloading and/or uploading (--bulk-dir) for --duration; aggregate goodput, and server CPU per GiB with
//	      --server-pid
//
// The bulk target speaks a trivial protocol that `loadgen --serve ADDR` provides (one command byte: 'D' = the server
// sends zeros until the connection closes, 'U' = it discards what it receives); --serve also echoes UDP on the same
// port for ping mode. Against ocgate the target on loopback needs `egress_allow = ["127.0.0.0/8"]`; for many
// sessions from one address set max_ban_score = 0, rate_limit_ms = 0, max_same_clients = 0, max_clients and a pool
// large enough (the same goes for ocserv's options of those names).
//
// The report: sessions requested/established, sessions per second over the establishment phase, connect latency
// (TCP connect → CONNECT 200, → DTLS established with --dtls) p50/p90/p99/max and per stage, errors by kind, server
// RSS (VmRSS from /proc, summed over --server-pid and, with --server-tree, their descendants) before and after the
// sessions and per session, and the traffic figures. --json prints the same as JSON on stdout.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/spf13/pflag"
)

// loadgenGOGC is the collector's setting unless GOGC is set: the load generator's memory is not what is measured,
// but its CPU is taken from the cores the server under test runs on (GOGC=400 against 100: 1.19 against 1.43 ms of
// load generator CPU per login, docs/performance.md). Thousands of sessions in one process would let the heap grow
// five times its live size: loadgenMemLimit (unless GOMEMLIMIT is set) makes the collector work harder from there.
const (
	loadgenGOGC     = 400
	loadgenMemLimit = 2 << 30
)

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(loadgenGOGC)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(loadgenMemLimit)
	}
	cfg := defaultConfig()
	fs := pflag.NewFlagSet("loadgen", pflag.ContinueOnError)
	fs.StringVar(&cfg.URL, "url", "", "server URL, https://host:port/")
	fs.StringVar(&cfg.User, "user", "ocgate", "user name; %d in it is replaced by the session's number (0..n-1), one user per session")
	fs.StringVar(&cfg.Password, "password", "", "password (default: $LOADGEN_PASSWORD)")
	fs.StringVarP(&cfg.Cert, "certificate", "c", "", "client certificate (PEM file), as openconnect -c")
	fs.StringVarP(&cfg.Key, "sslkey", "k", "", "the client certificate's private key (PEM file; default: in --certificate), as openconnect -k")
	fs.StringVar(&cfg.TokenSecret, "token-secret", "", "TOTP secret (base32, or 0xHEX) answering the one-time password form, as openconnect --token-mode=totp --token-secret")
	fs.StringVar(&cfg.Group, "group", "", "group to choose when the server offers a group_list")
	fs.BoolVar(&cfg.Insecure, "insecure", false, "accept any server certificate")
	fs.StringVar(&cfg.Pin, "pin", "", "server certificate pin: pin-sha256:BASE64 (as openconnect --servercert) or sha256:HEX")
	fs.IntVarP(&cfg.N, "sessions", "n", cfg.N, "number of sessions")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "handshakes in parallel")
	fs.StringVar(&cfg.Mode, "mode", cfg.Mode, "idle, ping or bulk")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "ping: packets per second per session")
	fs.IntVar(&cfg.Size, "size", cfg.Size, "ping: payload bytes per packet (≥ 16)")
	fs.StringVar(&cfg.Target, "target", "", "ping: IP (ICMP echo) or IP:PORT (UDP echo) inside the tunnel; default the first pushed DNS server")
	fs.StringVar(&cfg.BulkTarget, "bulk-target", "", "bulk: IP:PORT of a \"loadgen --serve\" target, reached through the tunnel")
	fs.StringVar(&cfg.BulkDir, "bulk-dir", cfg.BulkDir, "bulk: down, up or both (two TCP connections per session)")
	fs.IntVar(&cfg.Flows, "flows", 1000, "flows: TCP connections each session opens to --bulk-target and holds")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "how long to hold the sessions (idle) or push traffic (ping, bulk)")
	fs.DurationVar(&cfg.Warmup, "warmup", cfg.Warmup, "bulk: traffic before the measured window starts")
	fs.BoolVar(&cfg.DTLS, "dtls", cfg.DTLS, "establish DTLS (PSK-NEGOTIATE) and require it; --dtls=false for CSTP only")
	fs.BoolVar(&cfg.PionRecords, "pion-records", false, "DTLS application records through pion's record layer (default: the client's own, for GCM/ChaCha20)")
	fs.IntSliceVar(&cfg.ServerPIDs, "server-pid", nil, "server process(es) to sample VmRSS and CPU time of, from /proc")
	fs.BoolVar(&cfg.ServerTree, "server-tree", false, "include the descendants of --server-pid (ocserv: workers, sec-mod)")
	fs.DurationVar(&cfg.Settle, "settle", cfg.Settle, "wait after establishing before sampling the server's RSS")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "bound for establishing one session")
	fs.BoolVar(&cfg.JSON, "json", false, "print the report as JSON on stdout")
	fs.BoolVarP(&cfg.Quiet, "quiet", "q", false, "no progress lines on stderr")
	fs.StringVar(&cfg.Serve, "serve", "", "instead of a load: run the bulk/echo target on this IP:PORT (TCP and UDP) until interrupted")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the loadgen to this file")
	fs.SortFlags = false
	if err := fs.Parse(os.Args[1:]); err != nil {
		if err == pflag.ErrHelp {
			os.Exit(0)
		}
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if cfg.Serve != "" {
		if fs.Changed("duration") {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
			defer cancel()
		}
		t, err := serveTarget(ctx, cfg.Serve)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "loadgen: serving the bulk target on tcp %s and UDP echo on %s\n", t.TCPAddr(), t.UDPAddr())
		<-ctx.Done()
		t.Close()
		return
	}
	if cfg.Password == "" {
		cfg.Password = os.Getenv("LOADGEN_PASSWORD")
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(2)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	var progress io.Writer = os.Stderr
	if cfg.Quiet {
		progress = io.Discard
	}
	rep, err := run(ctx, cfg, progress)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	if cfg.JSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		rep.print(os.Stdout)
	}
	pprof.StopCPUProfile()
	if rep.Established < rep.Requested || len(rep.Errors) > 0 {
		os.Exit(1)
	}
}

// config is the whole run; run() validates it.
type config struct {
	URL, User, Password, Group, Pin string
	Cert, Key, TokenSecret          string
	Insecure                        bool
	N, Concurrency                  int
	Mode                            string
	Rate                            float64
	Size                            int
	Target                          string
	BulkTarget, BulkDir             string
	Flows                           int
	Duration, Warmup                time.Duration
	DTLS, PionRecords               bool
	ServerPIDs                      []int
	ServerTree                      bool
	Settle, Timeout                 time.Duration
	JSON, Quiet                     bool
	Serve                           string
}

func defaultConfig() config {
	return config{N: 10, Concurrency: 16, Mode: "idle", Rate: 1, Size: 56, BulkDir: "down", Duration: 10 * time.Second,
		Warmup: time.Second, DTLS: true, Settle: 2 * time.Second, Timeout: 30 * time.Second}
}

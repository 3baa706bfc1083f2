//go:build pprof

package main

// Go's profiler over HTTP, for performance work only. It is linked only into binaries built with -tags pprof, so
// the default binary carries no debug endpoint (deps_test.go checks that).

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
)

// startPprof serves /debug/pprof/ on addr until the process exits. The listener is bound before it returns, so a
// bad address fails the start.
func startPprof(addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	go func() { log.Warn("pprof listener ended", "err", http.Serve(ln, mux)) }()
	log.Warn("profiling endpoint enabled (--pprof); never expose it publicly", "addr", ln.Addr().String())
	return nil
}

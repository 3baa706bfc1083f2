package main

import (
	"fmt"
	"io/fs"
	"net"
	"os"

	"ocgate/config"
)

// listenClear opens the listeners of plain HTTP behind a proxy that terminates TLS (listen_clear_file, a unix
// socket, and listen_clear, TCP): none, one or both. A stale socket file left by an earlier run is replaced; the
// socket is made group-writable (0660) so that a proxy in the socket's group can connect.
func listenClear(cfg *config.Config) ([]net.Listener, error) {
	var lns []net.Listener
	fail := func(err error) ([]net.Listener, error) {
		for _, ln := range lns {
			ln.Close()
		}
		return nil, err
	}
	if f := cfg.ListenClearFile; f != "" {
		if fi, err := os.Lstat(f); err == nil && fi.Mode().Type() == fs.ModeSocket {
			os.Remove(f)
		}
		ln, err := net.Listen("unix", f)
		if err != nil {
			return fail(fmt.Errorf("listen_clear_file: %w", err))
		}
		lns = append(lns, ln)
		if err := os.Chmod(f, 0o660); err != nil {
			return fail(fmt.Errorf("listen_clear_file: %w", err))
		}
	}
	if a := cfg.ListenClear; a != "" {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return fail(fmt.Errorf("listen_clear: %w", err))
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

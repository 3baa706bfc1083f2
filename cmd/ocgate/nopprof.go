//go:build !pprof

package main

import (
	"errors"
	"log/slog"
)

// startPprof refuses: this binary was built without the profiler (see pprof.go).
func startPprof(string, *slog.Logger) error {
	return errors.New("--pprof: built without pprof; rebuild with -tags pprof")
}

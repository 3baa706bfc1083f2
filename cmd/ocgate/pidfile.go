package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
)

// writePIDFile writes the process ID to path (pid_file) and returns the function that removes the file again,
// to be called on exit. An empty path writes nothing. The file is written before privileges are dropped, so
// removing it may fail afterwards; that is logged, not fatal.
func writePIDFile(path string, log *slog.Logger) (remove func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("pid_file: %w", err)
	}
	return func() {
		if err := os.Remove(path); err != nil {
			log.Warn("could not remove pid_file", "err", err)
		}
	}, nil
}

package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestPIDFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ocgate.pid")
	remove, err := writePIDFile(path, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil || string(b) != strconv.Itoa(os.Getpid())+"\n" {
		t.Fatalf("pid file %q, %v", b, err)
	}
	remove()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("after remove: %v", err)
	}
	if _, err := writePIDFile(filepath.Join(path, "nodir", "x"), slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("unwritable path accepted")
	}
	if remove, err := writePIDFile("", nil); err != nil || remove == nil {
		t.Fatal("empty path must write nothing")
	}
}

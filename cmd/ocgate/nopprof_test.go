//go:build !pprof

package main

import (
	"bytes"
	"strings"
	"testing"
)

// The default binary has no profiler, and asking for one says how to get it instead of starting without it.
func TestPprofNeedsBuildTag(t *testing.T) {
	var out, errb bytes.Buffer
	code := run([]string{"--pprof", "127.0.0.1:0", "--state-dir", t.TempDir()}, stdio{out: &out, err: &errb})
	if code != 1 || !strings.Contains(errb.String(), "built without pprof; rebuild with -tags pprof") {
		t.Fatalf("ocgate --pprof: exit %d, stderr %q", code, errb.String())
	}
}

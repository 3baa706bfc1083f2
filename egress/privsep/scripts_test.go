package privsep

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeScript(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "s.sh")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestScripts: a script sees only its variables (plus PATH and REASON), a non-zero exit is a *ScriptError
// carrying its output, a hanging script is killed with its children, and no script configured is no error.
func TestScripts(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	s := &Scripts{Connect: writeScript(t, "env > "+out+"\n"), Disconnect: writeScript(t, "echo bad user >&2; exit 3\n"),
		HostUpdate: writeScript(t, "sleep 30 & sleep 30\n"), Timeout: 300 * time.Millisecond}
	t.Setenv("SECRET_OF_THE_SERVER", "x")
	if err := s.RunScript(context.Background(), ReasonConnect, []string{"USERNAME=alice", "DEVICE="}); err != nil {
		t.Fatal(err)
	}
	env, _ := os.ReadFile(out)
	for _, want := range []string{"USERNAME=alice\n", "REASON=connect\n", "DEVICE=\n", "PATH="} {
		if !strings.Contains(string(env), want) {
			t.Errorf("script environment lacks %q:\n%s", want, env)
		}
	}
	if strings.Contains(string(env), "SECRET_OF_THE_SERVER") {
		t.Errorf("script inherited the server's environment:\n%s", env)
	}
	var se *ScriptError
	if err := s.RunScript(context.Background(), ReasonDisconnect, nil); !errors.As(err, &se) || !strings.Contains(se.Output, "bad user") {
		t.Errorf("failing script: %v, want a ScriptError with its output", err)
	}
	start := time.Now()
	if err := s.RunScript(context.Background(), ReasonHostUpdate, nil); err == nil || time.Since(start) > 5*time.Second {
		t.Errorf("hanging script: %v after %s, want killed after the timeout", err, time.Since(start))
	}
	if err := (&Scripts{}).RunScript(context.Background(), ReasonConnect, nil); err != nil {
		t.Errorf("no script: %v", err)
	}
	if err := s.RunScript(context.Background(), ReasonConnect, []string{"LD_PRELOAD=x"}); err == nil {
		t.Error("LD_PRELOAD passed to a script")
	}
}

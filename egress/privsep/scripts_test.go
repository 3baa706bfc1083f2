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

// TestRouteCommands: route_add_cmd and route_del_cmd run through the shell with ocserv's substitutions; the user
// name is quoted, and a route or device that is not one is refused before the shell.
func TestRouteCommands(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	s := &Scripts{RouteAdd: "echo add %{R} %{RI} dev=%{D} %{U} %{G} >> " + out, RouteDel: "echo del %{RI} >> " + out}
	env := []string{"ROUTE=192.168.50.0/24", "DEVICE=vpns3", "USERNAME=o'brien; touch /tmp/x", "GROUPNAME=staff"}
	if err := s.RunScript(context.Background(), ReasonRouteAdd, env); err != nil {
		t.Fatal(err)
	}
	if err := s.RunScript(context.Background(), ReasonRouteDel, []string{"ROUTE=fd00:50::/64", "DEVICE="}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	want := "add 192.168.50.0/255.255.255.0 192.168.50.0/24 dev=vpns3 o'brien; touch /tmp/x staff\ndel fd00:50::/64\n"
	if string(got) != want {
		t.Errorf("commands wrote %q, want %q", got, want)
	}
	for _, env := range [][]string{{"ROUTE=$(reboot)", "DEVICE=vpns0"}, {"ROUTE=10.0.0.0/8", "DEVICE=a;b"}} {
		if err := s.RunScript(context.Background(), ReasonRouteAdd, env); err == nil || !strings.Contains(err.Error(), "refused") && !strings.Contains(err.Error(), "not a prefix") {
			t.Errorf("%q: %v, want refused", env, err)
		}
	}
	var se *ScriptError
	if err := (&Scripts{RouteAdd: "exit 4"}).RunScript(context.Background(), ReasonRouteAdd, env); !errors.As(err, &se) {
		t.Errorf("failing command: %v, want a ScriptError", err)
	}
	if err := (&Scripts{}).RunScript(context.Background(), ReasonRouteDel, env); err != nil {
		t.Errorf("no command: %v", err)
	}
}

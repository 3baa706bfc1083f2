package ctl

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ocgate/auth"
	"ocgate/protocol"
	"ocgate/protocol/cluster"
)

// jsonKind is the JSON type of a decoded value.
func jsonKind(v any) string {
	switch v.(type) {
	case float64:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case bool:
		return "bool"
	}
	return "null"
}

// sampleKeys reads one object of a captured occtl output: key → JSON type.
func sampleKeys(t *testing.T, file string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if a, ok := v.([]any); ok {
		v = a[0]
	}
	out := map[string]string{}
	for k, x := range v.(map[string]any) {
		out[k] = jsonKind(x)
	}
	return out
}

// encoded marshals o and decodes it back as a generic object.
func encoded(t *testing.T, o object) map[string]any {
	t.Helper()
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	if len(m) != len(o) {
		t.Fatalf("duplicate keys in %s", b)
	}
	return m
}

// checkKeys checks that got has every key of want (occtl's), each with occtl's JSON type.
func checkKeys(t *testing.T, want map[string]string, got map[string]any) {
	t.Helper()
	for k, kind := range want {
		t.Run(k, func(t *testing.T) {
			v, ok := got[k]
			if !ok {
				t.Fatalf("key %q missing", k)
			}
			if jsonKind(v) != kind {
				t.Fatalf("key %q is a JSON %s, occtl's is a %s", k, jsonKind(v), kind)
			}
		})
	}
}

func testSession() protocol.SessionInfo {
	return protocol.SessionInfo{
		ID: 10976, User: "alice", Groups: []string{"users"},
		Addr: netip.MustParseAddr("10.250.77.2"), Gateway: netip.MustParseAddr("10.250.77.1"),
		Remote: netip.MustParseAddrPort("127.0.0.1:40000"), LocalReal: netip.MustParseAddrPort("127.0.0.1:8443"),
		UserAgent: "Open AnyConnect VPN Agent v9.01-3", Hostname: "vm",
		Created: time.Now().Add(-time.Minute), ConnectedAt: time.Now().Add(-time.Minute),
		SafeID: "gNDepNeMsu9ZnW/o9BIoyYfH1XA=", Connected: true, Channel: "DTLS", DTLSCipher: "(DTLS1.2)-(PSK)-(AES-128-GCM)",
		TLSCipher: "(TLS1.3)-(X25519)-(TLS_AES_128_GCM_SHA256)", MTU: 1434, DPD: 90 * time.Second,
		Keepalive: 32400 * time.Second, RxBytes: 20726, TxBytes: 1090145,
		Routes: []netip.Prefix{netip.MustParsePrefix("10.77.0.0/24")}, DNS: []netip.Addr{netip.MustParseAddr("10.250.77.1")},
	}
}

// Every key of occtl's `show users` element, with its JSON type; ocgate's own keys come on top.
func TestUsersJSONMatchesOcctl(t *testing.T) {
	want := sampleKeys(t, "occtl-users.json")
	got := encoded(t, userObject(testSession(), "netstack", time.Now()))
	checkKeys(t, want, got)
	for _, k := range []string{"IPv6", "P-t-P IPv6", "Datapath", "Channel"} {
		if _, ok := got[k]; !ok {
			t.Errorf("key %q missing", k)
		}
	}
	if got["RX"] != "20726" || got["TX"] != "1090145" || got["MTU"] != "1434" || got["ID"] != float64(10976) ||
		got["Channel"] != "dtls" || got["Session"] != "gNDepN" {
		t.Fatalf("values: %v", got)
	}
	if r := got["Routes"].([]any); len(r) != 1 || r[0] != "10.77.0.0/255.255.255.0" {
		t.Fatalf("Routes %v", r)
	}
}

// Every key of occtl's `show status` but the latency statistics (ocserv measures them only when built with
// --enable-latency-stats; ocgate does not measure them), with its JSON type.
func TestStatusJSONMatchesOcctl(t *testing.T) {
	want := sampleKeys(t, "occtl-status.json")
	st := protocol.Status{Start: time.Now().Add(-time.Hour), ActiveSessions: 1, RxBytes: 5, MinMTU: 1434, MaxMTU: 1434}
	got := encoded(t, statusObject(st, ServerInfo{PID: 42, Datapath: "netstack"}, time.Now()))
	for k := range want {
		if strings.Contains(k, "latency") {
			delete(want, k)
		}
	}
	checkKeys(t, want, got)
	for _, k := range []string{"Min MTU", "Max MTU", "raw_rx", "raw_tx"} {
		if jsonKind(got[k]) != "number" {
			t.Errorf("%s = %v, want a number", k, got[k])
		}
	}
	if got["Active sessions"] != float64(1) || got["Server PID"] != float64(42) || got["uptime"].(float64) < 3600 {
		t.Fatalf("values: %v", got)
	}
}

func TestSinceAndBytes(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{2 * time.Second, "    2s"}, {63 * time.Second, " 1m:03s"}, {2*time.Hour + 5*time.Minute, " 2h:05m"}, {50 * time.Hour, " 2days"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			if got := since(tc.d); got != tc.want {
				t.Fatalf("since(%s) = %q", tc.d, got)
			}
		})
	}
	if humanBytes(20726) != "20.7 KB" || humanBytes(1090145) != "1.1 MB" || humanBytes(0) != "0 bytes" {
		t.Fatal(humanBytes(20726), humanBytes(1090145))
	}
}

func TestParseCommand(t *testing.T) {
	tests := []struct {
		in       string
		key, arg string
		err      bool
	}{
		{"show users", "show users", "", false},
		{"show user alice", "show user", "alice", false},
		{"show cookies all", "show sessions all", "", false},
		{"show stats", "show status", "", false},
		{"terminate session gNDepN", "terminate session", "gNDepN", false},
		{"show user", "", "", true},
		{"show everything", "", "", true},
		{"stop", "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			key, arg, err := ParseCommand(strings.Fields(tc.in))
			if (err != nil) != tc.err || key != tc.key || arg != tc.arg {
				t.Fatalf("%q %q %v", key, arg, err)
			}
			if err != nil && !errors.Is(err, ErrUsage) {
				t.Fatalf("error %v is not ErrUsage", err)
			}
		})
	}
}

// fakeBackend is a Backend with one session and one banned address.
type fakeBackend struct {
	sessions   []protocol.SessionInfo
	terminated []uint64
	unbanned   []netip.Addr
	events     chan protocol.Event
	reloadErr  error
}

func (f *fakeBackend) Status() protocol.Status              { return protocol.Status{Start: time.Now()} }
func (f *fakeBackend) SessionInfos() []protocol.SessionInfo { return f.sessions }
func (f *fakeBackend) Disconnect(id uint64) bool            { return id == f.sessions[0].ID }
func (f *fakeBackend) Terminate(id uint64) bool {
	f.terminated = append(f.terminated, id)
	return id == f.sessions[0].ID
}
func (f *fakeBackend) Subscribe() (<-chan protocol.Event, func()) { return f.events, func() {} }
func (f *fakeBackend) BanList() []auth.BanInfo {
	return []auth.BanInfo{{Addr: netip.MustParseAddr("192.0.2.1"), BannedUntil: time.Now().Add(time.Minute)},
		{Addr: netip.MustParseAddr("192.0.2.2"), Score: 10}}
}
func (f *fakeBackend) Unban(a netip.Addr) bool {
	f.unbanned = append(f.unbanned, a)
	return true
}
func (f *fakeBackend) Reload() (ReloadReport, error) {
	return ReloadReport{Applied: []string{"route"}, NeedsRestart: []string{"tcp_port"}}, f.reloadErr
}
func (f *fakeBackend) Stop() {}
func (f *fakeBackend) ClusterSessions() ([]cluster.Record, error) {
	return nil, errors.New("no shared state (redis_url is not set)")
}
func (f *fakeBackend) ServerInfo() ServerInfo { return ServerInfo{PID: 1, Datapath: "netstack"} }

// The socket end to end with a fake backend: answers, refusals, the event stream.
func TestSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "ocgate.socket")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v", fi.Mode(), err)
	}
	b := &fakeBackend{sessions: []protocol.SessionInfo{testSession()}, events: make(chan protocol.Event, 1)}
	srv := NewServer(b, os.Geteuid(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	done := make(chan error)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		ln.Close()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	do := func(cmd string) (Response, error) {
		c, err := Dial(path, strings.Fields(cmd))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		return c.Next()
	}
	tests := []struct {
		cmd, text, err string
	}{
		{"show users", "alice", ""},
		{"show user bob", "", `user "bob" not found`},
		{"show ip bans", "192.0.2.1", ""},
		{"unban ip 192.0.2.1", "unbanned 192.0.2.1", ""},
		{"terminate id 10976", "terminated session 10976", ""},
		{"disconnect id 7", "", "session 7 not found"},
		{"terminate session gNDepN", "terminated", ""},
		{"reload", "tcp_port (needs a restart)", ""},
		{"show nothing", "", "unknown command"},
	}
	for _, tc := range tests {
		t.Run(tc.cmd, func(t *testing.T) {
			r, err := do(tc.cmd)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !strings.Contains(r.Text, tc.text) || !json.Valid(r.Data) {
				t.Fatalf("%+v, %v; want text with %q", r, err, tc.text)
			}
		})
	}
	// A banned address only in `show ip bans`; one with points in `show ip ban points`.
	r, _ := do("show ip ban points")
	if !strings.Contains(r.Text, "192.0.2.2") {
		t.Fatalf("ban points: %s", r.Text)
	}

	c, err := Dial(path, []string{"show", "events"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r, err := c.Next(); err != nil || !strings.Contains(r.Text, "Listening") {
		t.Fatalf("%+v %v", r, err)
	}
	b.events <- protocol.Event{Type: "connect", Time: time.Now(), Session: testSession()}
	r, err = c.Next()
	var ev struct {
		Event    string
		Username string
		ID       uint64
	}
	if err != nil || json.Unmarshal(r.Data, &ev) != nil || ev.Event != "connect" || ev.Username != "alice" || ev.ID != 10976 {
		t.Fatalf("event %+v %v", r, err)
	}
}

// A client of another uid is refused before its request is read.
func TestSocketRefusesOtherUID(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root is always allowed; the integration test runs the client as another uid")
	}
	path := filepath.Join(t.TempDir(), "s")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srv := NewServer(&fakeBackend{}, os.Geteuid()+1, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go srv.Serve(ln)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	line, _ := bufio.NewReader(c).ReadString('\n')
	if !strings.Contains(line, "permission denied") {
		t.Fatalf("got %q", line)
	}
}

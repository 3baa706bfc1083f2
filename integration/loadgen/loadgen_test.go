package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"ocgate/protocol/client"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type server struct {
	url, pin, password string
	pid                int
	out                *syncBuffer
}

// startOcgate builds (or takes $OCGATE_BIN) and starts ocgate on a free loopback port with a fresh state
// directory, a pool large enough, no per-address limits and egress to loopback allowed for the bulk target.
func startOcgate(t *testing.T) *server {
	t.Helper()
	bin := os.Getenv("OCGATE_BIN")
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "ocgate")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/ocgate")
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build ./cmd/ocgate: %v\n%s", err, out)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	dir := t.TempDir()
	conf := filepath.Join(dir, "ocgate.toml")
	os.WriteFile(conf, fmt.Appendf(nil, `listen_host = "127.0.0.1"
tcp_port = %d
udp_port = %d
ipv4_network = "10.250.0.0/20"
max_clients = 200
max_same_clients = 0
rate_limit_ms = 0
max_ban_score = 0
egress_allow = ["127.0.0.0/8"]
`, port, port), 0o600)
	out := &syncBuffer{}
	cmd := exec.Command(bin, "-c", conf, "--state-dir", filepath.Join(dir, "state"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("ocgate output:\n%s", out.String())
		}
	})
	pw := regexp.MustCompile(`(?m)^Password: (\S+)`)
	pin := regexp.MustCompile(`pin-sha256:\S+`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := out.String()
		if m := pw.FindStringSubmatch(s); m != nil && pin.MatchString(s) {
			return &server{url: fmt.Sprintf("https://127.0.0.1:%d/", port), pin: pin.FindString(s), password: m[1],
				pid: cmd.Process.Pid, out: out}
		}
		select {
		case <-exited:
			t.Fatalf("ocgate exited:\n%s", s)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("ocgate did not print its password and pin:\n%s", s)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *server) config() config {
	c := defaultConfig()
	c.URL, c.Pin, c.User, c.Password = s.url, s.pin, "ocgate", s.password
	c.Settle = 0
	return c
}

// Pass/fail depends on counts only: every session established, no error of any kind, bytes moved.
func TestLoadAgainstOcgate(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the ocgate binary")
	}
	srv := startOcgate(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	t.Run("idle", func(t *testing.T) {
		c := srv.config()
		c.N, c.Concurrency, c.Mode, c.Duration, c.ServerPIDs = 20, 8, "idle", 500*time.Millisecond, []int{srv.pid}
		rep, err := run(ctx, c, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Established != 20 || len(rep.Errors) != 0 || rep.Lost != 0 {
			t.Fatalf("established %d of 20, lost %d, errors %v", rep.Established, rep.Lost, rep.Errors)
		}
		if rep.Ciphers == nil || rep.Stages["dtls"].N != 20 {
			t.Errorf("DTLS not established everywhere: %+v", rep.Stages["dtls"])
		}
		if rep.Server == nil || rep.Server.RSSAfterKiB == 0 {
			t.Errorf("no RSS sampled: %+v", rep.Server)
		}
		rep.print(testWriter{t})
	})

	tgt, err := serveTarget(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.Close()
	for _, v := range []struct{ dtls, pion bool }{{true, false}, {true, true}, {false, false}} {
		t.Run(fmt.Sprintf("bulk dtls=%v pion-records=%v", v.dtls, v.pion), func(t *testing.T) {
			c := srv.config()
			c.N, c.Mode, c.BulkTarget, c.BulkDir, c.DTLS, c.PionRecords = 2, "bulk", tgt.TCPAddr(), "both", v.dtls, v.pion
			c.Warmup, c.Duration = 200*time.Millisecond, time.Second
			rep, err := run(ctx, c, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			b := rep.Bulk
			if rep.Established != 2 || len(rep.Errors) != 0 || b == nil || b.Conns != 4 || b.DownBytes == 0 || b.UpBytes == 0 {
				t.Fatalf("established %d, errors %v, bulk %+v", rep.Established, rep.Errors, b)
			}
			if v.dtls && (rep.Client.DTLSRx == 0 || rep.Client.DTLSTx == 0) {
				t.Errorf("no data over DTLS: %+v", rep.Client)
			}
			rep.print(testWriter{t})
		})
	}

	t.Run("ping", func(t *testing.T) {
		for _, target := range []string{"", tgt.UDPAddr()} {
			c := srv.config()
			c.N, c.Mode, c.Rate, c.Duration, c.Target = 2, "ping", 20, 500*time.Millisecond, target
			rep, err := run(ctx, c, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Established != 2 || len(rep.Errors) != 0 || rep.Ping == nil || rep.Ping.Sent == 0 || rep.Ping.Received == 0 {
				t.Fatalf("target %q: established %d, errors %v, ping %+v", target, rep.Established, rep.Errors, rep.Ping)
			}
		}
	})

	// The package as a programmable client: a raw ICMP echo to the gateway, then logout, after which the cookie
	// is refused.
	t.Run("client", func(t *testing.T) {
		o := client.Options{URL: srv.url, Pin: srv.pin, User: "ocgate", Password: srv.password, DTLS: true, RequireDTLS: true}
		dctx, dcancel := context.WithTimeout(ctx, 30*time.Second)
		defer dcancel()
		s, err := client.Dial(dctx, o)
		if err != nil {
			t.Fatal(err)
		}
		if !s.DTLS() || len(s.DNS) == 0 {
			t.Fatalf("DTLS %v, DNS %v", s.DTLS(), s.DNS)
		}
		if err := s.WritePacket(client.ICMPEcho(s.Addr, s.DNS[0], 7, 1, []byte("hello"))); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		for {
			n, err := s.ReadPacket(dctx, buf)
			if err != nil {
				t.Fatal(err)
			}
			if from, id, seq, p, ok := client.ParseICMPEchoReply(buf[:n]); ok && from == s.DNS[0] && id == 7 && seq == 1 && string(p) == "hello" {
				break
			}
		}
		cookie := s.Cookie
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if !errors.Is(s.Err(), client.ErrClosed) {
			t.Fatalf("Err after Close: %v", s.Err())
		}
		o.Cookie = cookie
		_, err = client.Dial(dctx, o)
		var se *client.StatusError
		if !errors.As(err, &se) || se.Code != 401 {
			t.Fatalf("CONNECT with the cookie after logout: %v, want 401", err)
		}
		o.Cookie, o.Password = "", "wrong"
		if _, err := client.Dial(dctx, o); !errors.Is(err, client.ErrAuthFailed) {
			t.Fatalf("wrong password: %v", err)
		}
	})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

package secmod

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"ocgate/auth"
)

// TestMain fails the package's tests if any goroutine they started is still running at the end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuf is a log sink the tests read.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// selfSigned returns a certificate chain for key.
func selfSigned(tb testing.TB, key crypto.Signer) [][]byte {
	tb.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"test"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		tb.Fatal(err)
	}
	return [][]byte{der}
}

type fakeChecker map[string]string

func (f fakeChecker) CheckPassword(_ context.Context, user, password string) (auth.Identity, error) {
	switch {
	case user == "locked" && password == f[user]:
		return auth.Identity{}, auth.ErrLocked
	case f[user] != "" && f[user] == password:
		return auth.Identity{User: user, Groups: []string{"staff"}}, nil
	}
	return auth.Identity{}, auth.ErrBadCredentials
}

// startPair runs a worker in this process (ServeWorker on one end of a socketpair) and a Client on the other
// end, without a monitor. The cleanup closes the client's end and waits for the worker to return.
func startPair(tb testing.TB, s *Secrets) (*Client, Hello, *syncBuf) {
	tb.Helper()
	ours, theirs, err := socketpair("test")
	if err != nil {
		tb.Fatal(err)
	}
	fd, err := syscall.Dup(int(theirs.Fd()))
	theirs.Close()
	if err != nil {
		tb.Fatal(err)
	}
	logs := &syncBuf{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	if err := send(ours, workerInit{}); err != nil {
		tb.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- ServeWorker(fd, func(json.RawMessage) (*Secrets, error) { return s, nil }, log)
	}()
	c := &Client{log: log, done: make(chan struct{}), up: make(chan struct{}), candidates: make(chan candidate, 1)}
	wc, herr := c.openConn(ours, 1)
	if herr != "" {
		tb.Fatal(herr)
	}
	c.install(wc)
	tb.Cleanup(func() {
		wc.close()
		if err := <-done; err != nil {
			tb.Errorf("ServeWorker: %v", err)
		}
	})
	return c, wc.hello, logs
}

func newKeys(tb testing.TB) map[string]crypto.Signer {
	tb.Helper()
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatal(err)
	}
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	return map[string]crypto.Signer{"ECDSA P-256": ec, "RSA 2048": rk, "Ed25519": ed}
}

// TestHandshakeThroughModule: a TLS server whose key lives in the worker completes TLS 1.2 and 1.3 handshakes
// with ECDSA, RSA (PSS in both versions, as Go's client asks) and Ed25519 keys.
func TestHandshakeThroughModule(t *testing.T) {
	for name, key := range newKeys(t) {
		chain := selfSigned(t, key)
		c, hello, _ := startPair(t, &Secrets{Chain: chain, Key: key})
		cert, err := c.Certificate(hello)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := cert.PrivateKey.(*Signer); !ok {
			t.Fatalf("%s: the certificate's key is %T, want the module's Signer", name, cert.PrivateKey)
		}
		roots := x509.NewCertPool()
		roots.AddCert(cert.Leaf)
		for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
			t.Run(name+"/"+tls.VersionName(v), func(t *testing.T) {
				handshake(t, &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: v, MaxVersion: v},
					&tls.Config{RootCAs: roots, ServerName: "test", MinVersion: v, MaxVersion: v})
			})
		}
	}
}

func handshake(tb testing.TB, server, client *tls.Config) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	errc := make(chan error, 1)
	go func() { errc <- tls.Server(a, server).Handshake() }()
	if err := tls.Client(b, client).Handshake(); err != nil {
		tb.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		tb.Fatalf("server handshake: %v", err)
	}
}

// TestSignOptions: the options reach the key — PKCS#1 v1.5 and PSS with either salt length verify.
func TestSignOptions(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	c, hello, _ := startPair(t, &Secrets{Chain: selfSigned(t, key), Key: key})
	cert, _ := c.Certificate(hello)
	s := cert.PrivateKey.(crypto.Signer)
	digest := sha256.Sum256([]byte("hello"))
	for name, tc := range map[string]struct {
		opts   crypto.SignerOpts
		verify func(sig []byte) error
	}{
		"PKCS#1 v1.5": {crypto.SHA256, func(sig []byte) error { return rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA256, digest[:], sig) }},
		"PSS salt = hash": {&rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}, func(sig []byte) error {
			return rsa.VerifyPSS(&key.PublicKey, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: 32})
		}},
		"PSS salt 20": {&rsa.PSSOptions{SaltLength: 20, Hash: crypto.SHA256}, func(sig []byte) error {
			return rsa.VerifyPSS(&key.PublicKey, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: 20})
		}},
	} {
		t.Run(name, func(t *testing.T) {
			sig, err := s.Sign(rand.Reader, digest[:], tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.verify(sig); err != nil {
				t.Fatalf("verify: %v", err)
			}
		})
	}
}

// TestPasswordThroughModule: the verdicts keep their meaning across the RPC.
func TestPasswordThroughModule(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c, _, _ := startPair(t, &Secrets{Chain: selfSigned(t, key), Key: key,
		Passwords: fakeChecker{"alice": "secret", "locked": "pw"}})
	ctx := context.Background()
	if id, err := c.CheckPassword(ctx, "alice", "secret"); err != nil || id.User != "alice" || len(id.Groups) != 1 {
		t.Errorf("right password: %+v, %v", id, err)
	}
	for _, tc := range []struct {
		user, pass string
		want       error
	}{
		{"alice", "wrong", auth.ErrBadCredentials}, {"nobody", "x", auth.ErrBadCredentials}, {"locked", "pw", auth.ErrLocked},
	} {
		if _, err := c.CheckPassword(ctx, tc.user, tc.pass); !errors.Is(err, tc.want) {
			t.Errorf("%s/%s: %v, want %v", tc.user, tc.pass, err, tc.want)
		}
	}
}

// TestMalformedRefused: requests that break the format or the bounds are refused with codeMalformed, logged and
// counted, and the worker keeps serving.
func TestMalformedRefused(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	c, hello, logs := startPair(t, &Secrets{Chain: selfSigned(t, key), Key: key, Passwords: fakeChecker{}})
	ctx := context.Background()
	digest := make([]byte, 32)
	pss := 32
	for name, tc := range map[string]struct {
		op   string
		args any
	}{
		"unknown operation":   {"shell", map[string]string{"cmd": "id"}},
		"unknown field":       {opSign, map[string]any{"key": hello.KeyID, "hash": 5, "digest": digest, "x": 1}},
		"digest length":       {opSign, signArgs{Key: hello.KeyID, Hash: uint(crypto.SHA256), Digest: digest[:31]}},
		"hash not allowed":    {opSign, signArgs{Key: hello.KeyID, Hash: uint(crypto.MD5), Digest: digest[:16]}},
		"PSS with ECDSA":      {opSign, signArgs{Key: hello.KeyID, Hash: uint(crypto.SHA256), Digest: digest, PSS: &pss}},
		"empty user":          {opPassword, passwordArgs{Password: "x"}},
		"long password":       {opPassword, passwordArgs{User: "a", Password: strings.Repeat("x", maxPassword+1)}},
		"arguments too large": {opPassword, passwordArgs{User: "a", Password: strings.Repeat("x", maxArgs)}},
	} {
		t.Run(name, func(t *testing.T) {
			err := c.Call(ctx, tc.op, tc.args, nil)
			var re *RemoteError
			if !errors.As(err, &re) || re.Code != codeMalformed {
				t.Fatalf("%v, want a refusal with code %q", err, codeMalformed)
			}
		})
	}
	// Broken frames: the worker cannot answer them by id, but logs, counts and goes on.
	notJSON := append([]byte{0, 0, 0, 17, rpcVersion, 0, 0, 0, 0, 0, 0, 3, 0xe7, 4}, `sign{"a`...) // id 999
	for _, raw := range [][]byte{{1, 2}, {0, 0, 0, 9, 1, '{'}, {0, 0, 0, 2, 7, '{', '}'}, {0, 0, 0, 1, 1, '['},
		{0, 0, 0, 3, rpcVersion, 0, 0, 0}, notJSON} {
		if err := c.SendRaw(raw); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.CheckPassword(ctx, "alice", "x"); !errors.Is(err, auth.ErrBadCredentials) {
		t.Fatalf("after malformed frames: %v, want the worker still serving", err)
	}
	if !strings.Contains(logs.String(), "refused a malformed request") || !strings.Contains(logs.String(), "malformed_total=10") {
		t.Errorf("log lacks the refusals and their count:\n%s", logs)
	}
	if err := c.Call(ctx, opSign, signArgs{Key: strings.Repeat("0", 64), Hash: uint(crypto.SHA256), Digest: digest}, nil); err == nil {
		t.Errorf("signing with an unknown key succeeded")
	}
}

// TestWrongKeyRefused: a Loader whose key does not match its certificate fails the start.
func TestWrongKeyRefused(t *testing.T) {
	a, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	b, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	w := &worker{}
	if _, err := w.load(func(json.RawMessage) (*Secrets, error) { return &Secrets{Chain: selfSigned(t, a), Key: b}, nil }, nil); err == nil {
		t.Fatal("a key that does not match the certificate was accepted")
	}
}

// BenchmarkHandshake compares a TLS 1.3 ECDSA P-256 handshake with the key in this process and in the module
// (over the socketpair, same process here: the difference is the RPC, not the scheduling of another process).
func BenchmarkHandshake(b *testing.B) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	chain := selfSigned(b, key)
	leaf, _ := x509.ParseCertificate(chain[0])
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	client := &tls.Config{RootCAs: roots, ServerName: "test"}
	b.Run("in-process key", func(b *testing.B) {
		srv := &tls.Config{Certificates: []tls.Certificate{{Certificate: chain, PrivateKey: key, Leaf: leaf}}}
		for b.Loop() {
			handshake(b, srv, client)
		}
	})
	b.Run("security module", func(b *testing.B) {
		c, hello, _ := startPair(b, &Secrets{Chain: chain, Key: key})
		cert, _ := c.Certificate(hello)
		srv := &tls.Config{Certificates: []tls.Certificate{*cert}}
		for b.Loop() {
			handshake(b, srv, client)
		}
	})
	b.Run("sign only/security module", func(b *testing.B) {
		c, hello, _ := startPair(b, &Secrets{Chain: chain, Key: key})
		cert, _ := c.Certificate(hello)
		d := sha256.Sum256([]byte("x"))
		for b.Loop() {
			if _, err := cert.PrivateKey.(crypto.Signer).Sign(nil, d[:], crypto.SHA256); err != nil {
				b.Fatal(err)
			}
		}
	})
}

package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"ocgate/auth"
	"ocgate/config"
)

// The state directory holds what the embedded defaults generate on the first start and reuse afterwards:
//
//	server-cert.pem, server-key.pem   self-signed ECDSA P-256 certificate (when the config names none)
//	users.passwd                      ocpasswd-format users (when the config has no auth method)
//	initial-password                  the generated user's password, so it can be printed again
const (
	certFile     = "server-cert.pem"
	keyFile      = "server-key.pem"
	usersFile    = "users.passwd"
	initPassFile = "initial-password"
	initialUser  = "ocgate"
)

// state is what prepareState found or made. It runs in the security module (secmod.go): the network process
// gets only the public part (publicState).
type state struct {
	chain           [][]byte      // the certificate chain, DER
	key             crypto.Signer // its private key
	passwdFile      string
	initialUser     string // set when the generated user is in use
	initialPassword string
}

func prepareState(dir string, cfg *config.Config) (*state, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	st := &state{}
	certPath, keyPath := cfg.ServerCert, cfg.ServerKey
	if certPath == "" && keyPath == "" {
		certPath, keyPath = filepath.Join(dir, certFile), filepath.Join(dir, keyFile)
		if err := ensureSelfSigned(certPath, keyPath); err != nil {
			return nil, err
		}
	} else if certPath == "" || keyPath == "" {
		return nil, errors.New("server_cert and server_key must be set together")
	}
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return nil, fmt.Errorf("loading %s / %s: %w", certPath, keyPath, err)
	}
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: private key type %T cannot sign", keyPath, cert.PrivateKey)
	}
	st.chain, st.key = cert.Certificate, signer

	st.passwdFile = cfg.PlainPasswd()
	if st.passwdFile == "" && len(cfg.Auth) == 0 {
		st.passwdFile = filepath.Join(dir, usersFile)
		if err := ensureInitialUser(dir, st); err != nil {
			return nil, err
		}
	}
	return st, nil
}

func ensureSelfSigned(certPath, keyPath string) error {
	_, errC := os.Stat(certPath)
	_, errK := os.Stat(keyPath)
	if errC == nil && errK == nil {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	names := []string{"localhost"}
	if host != "" && host != "localhost" {
		names = append(names, host)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "ocgate " + firstNonEmpty(host, "server")},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              names,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return writeFileAtomic(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// ensureInitialUser creates users.passwd with one user and a random password on the first start, and reads the
// password back on later starts so it can be printed again.
func ensureInitialUser(dir string, st *state) error {
	passPath := filepath.Join(dir, initPassFile)
	_, err := os.Stat(st.passwdFile)
	switch {
	case err == nil:
		b, err := os.ReadFile(passPath)
		if err == nil {
			st.initialUser, st.initialPassword = initialUser, strings.TrimSpace(string(b))
		}
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	pw := randomPassword()
	if err := writeFileAtomic(passPath, []byte(pw+"\n"), 0o600); err != nil {
		return err
	}
	if err := auth.EditPasswordFile(st.passwdFile, true, auth.PasswdSet, initialUser, nil, pw); err != nil {
		return err
	}
	st.initialUser, st.initialPassword = initialUser, pw
	return nil
}

func randomPassword() string {
	b := make([]byte, 12)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

package main

import (
	"context"
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
//	bans.json                         the security module's ban table (secmod.go), when the directory can be created
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
	chain           [][]byte      // the certificate chain, DER (nil when `config check` finds it would be generated)
	key             crypto.Signer // its private key
	passwdFile      string        // "" when checking a configuration whose user would be generated
	initialUser     string        // set when the generated user is in use
	initialPassword string        // "" when the generated user's password was changed (passwordChanged)
	passwordChanged bool          // `ocgate passwd` changed it since: the stored one is stale and not printed
	generated       []string      // what comes from the state directory, for `config check`
}

// prepareState loads the server's certificate and finds its password file, generating them in dir when the
// configuration names none. The directory is created only then: a configuration with server_cert, server_key and
// auth never needs it. With check set (`ocgate config check`) nothing is created or generated.
func prepareState(dir string, cfg *config.Config, check bool) (*state, error) {
	st := &state{}
	certPath, keyPath := cfg.ServerCert, cfg.ServerKey
	switch {
	case certPath == "" && keyPath == "":
		st.generated = append(st.generated, "a self-signed certificate (server_cert and server_key are unset)")
		if check {
			break
		}
		certPath, keyPath = filepath.Join(dir, certFile), filepath.Join(dir, keyFile)
		if err := ensureStateDir(dir, "the generated certificate", "server_cert and server_key"); err != nil {
			return nil, err
		}
		if err := ensureSelfSigned(certPath, keyPath); err != nil {
			return nil, err
		}
	case certPath == "" || keyPath == "":
		return nil, errors.New("server_cert and server_key must be set together")
	}
	if certPath != "" {
		if err := st.loadCertificate(certPath, keyPath); err != nil {
			return nil, err
		}
	}
	st.passwdFile = cfg.PlainPasswd()
	if st.passwdFile == "" && len(cfg.Auth) == 0 {
		st.generated = append(st.generated, "the user "+initialUser+" and its password (auth is unset)")
		if check {
			return st, nil
		}
		st.passwdFile = filepath.Join(dir, usersFile)
		if err := ensureStateDir(dir, "the generated user", `auth (e.g. auth = ["plain[passwd=/etc/ocgate/users.passwd]"])`); err != nil {
			return nil, err
		}
		if err := ensureInitialUser(dir, st); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// ensureStateDir creates the state directory for what, or says which keys would have avoided it.
func ensureStateDir(dir, what, avoid string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("state directory, needed for %s: %w (set %s in the configuration, or --state-dir to a writable directory)", what, err, avoid)
	}
	return nil
}

// loadCertificate loads the certificate and its key and checks that they match.
func (st *state) loadCertificate(certPath, keyPath string) error {
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		return fmt.Errorf("loading %s / %s: %w", certPath, keyPath, err)
	}
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok {
		return fmt.Errorf("%s: private key type %T cannot sign", keyPath, cert.PrivateKey)
	}
	st.chain, st.key = cert.Certificate, signer
	return nil
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
// password back on later starts so it can be printed again, if it is still the user's: after `ocgate passwd`
// changed it, the stored one is stale and is not printed.
func ensureInitialUser(dir string, st *state) error {
	passPath := filepath.Join(dir, initPassFile)
	_, err := os.Stat(st.passwdFile)
	switch {
	case err == nil:
		b, err := os.ReadFile(passPath)
		if err != nil {
			return nil
		}
		st.initialUser, st.initialPassword = initialUser, strings.TrimSpace(string(b))
		pf, err := auth.OpenPlainFile(st.passwdFile)
		if err != nil {
			return err
		}
		if _, err := pf.CheckPassword(context.Background(), initialUser, st.initialPassword); err != nil {
			st.initialPassword, st.passwordChanged = "", true
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

package dtls

// Legacy DTLS 1.2 (docs/protocol.md §7.7): what Cisco AnyConnect clients and openconnect before 7.08 use. The client
// sends a random master secret in X-DTLS-Master-Secret; the server names a session id and one cipher suite; the
// client then "resumes" that session that never existed with an abbreviated handshake. pion does the resumption
// from a SessionStore holding that one session. Only DTLS 1.2 suites that pion has are offered (the
// X-DTLS12-CipherSuite names); DTLS 0.9 ("DTLS1_BAD_VER") and RSA key-exchange suites are not possible with pion.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"strings"
	"sync"
	"time"

	pion "github.com/pion/dtls/v3"
)

// legacySuites maps the OpenSSL names clients offer in X-DTLS12-CipherSuite to pion suites, in our preference.
var legacySuites = []struct {
	name  string
	suite pion.CipherSuiteID
	rsa   bool
}{
	{"ECDHE-RSA-AES128-GCM-SHA256", pion.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, true},
	{"ECDHE-RSA-AES256-GCM-SHA384", pion.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, true},
	{"ECDHE-ECDSA-AES128-GCM-SHA256", pion.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, false},
	{"ECDHE-ECDSA-AES256-GCM-SHA384", pion.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, false},
}

// Legacy is what a legacy registration needs for the resumption (Server.Register).
type Legacy struct {
	masterSecret []byte
	suite        pion.CipherSuiteID
	rsa          bool
}

// LegacyOffer picks a suite from the client's X-DTLS12-CipherSuite (suites) and reads its X-DTLS-Master-Secret
// (masterSecret, hex); nil when the client offers nothing we can do. name is the suite chosen, for the response.
func LegacyOffer(masterSecret, suites string) (l *Legacy, name string) {
	secret, err := hex.DecodeString(masterSecret)
	if err != nil || len(secret) != 48 {
		return nil, ""
	}
	offered := map[string]bool{}
	for tok := range strings.SplitSeq(suites, ":") {
		offered[strings.TrimSpace(tok)] = true
	}
	for _, s := range legacySuites {
		if offered[s.name] {
			return &Legacy{masterSecret: secret, suite: s.suite, rsa: s.rsa}, s.name
		}
	}
	return nil, ""
}

// legacyOptions are pion's options for resuming the legacy session id.
func (l *Legacy) options(sessionID []byte) ([]pion.ServerOption, error) {
	cert, err := legacyCert(l.rsa)
	if err != nil {
		return nil, err
	}
	return []pion.ServerOption{
		pion.WithCipherSuites(l.suite),
		pion.WithCertificates(cert),
		pion.WithExtendedMasterSecret(pion.DisableExtendedMasterSecret),
		pion.WithInsecureSkipVerifyHello(true),
		pion.WithSessionStore(&oneSession{s: pion.Session{
			ID: bytes.Clone(sessionID), Secret: l.masterSecret, Version: 1, CipherSuiteID: l.suite,
		}}),
		pion.WithMTU(pionMTU),
	}, nil
}

// oneSession is a SessionStore that knows exactly the legacy session of one CONNECT.
type oneSession struct{ s pion.Session }

func (o *oneSession) Set([]byte, pion.Session) error { return nil }
func (o *oneSession) Del([]byte) error               { return nil }
func (o *oneSession) Get(key []byte) (pion.Session, error) {
	if bytes.Equal(key, o.s.ID) {
		return o.s, nil
	}
	return pion.Session{}, nil
}

// legacyCert is a throwaway certificate: pion insists on one for certificate-authenticated suites, but an
// abbreviated handshake never shows it. Generated on first use.
var legacyCerts struct {
	sync.Mutex
	rsa, ecdsa *tls.Certificate
}

func legacyCert(useRSA bool) (tls.Certificate, error) {
	legacyCerts.Lock()
	defer legacyCerts.Unlock()
	slot := &legacyCerts.ecdsa
	if useRSA {
		slot = &legacyCerts.rsa
	}
	if *slot != nil {
		return **slot, nil
	}
	var key any
	var pub any
	if useRSA {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return tls.Certificate{}, err
		}
		key, pub = k, &k.PublicKey
	} else {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return tls.Certificate{}, err
		}
		key, pub = k, &k.PublicKey
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ocgate legacy DTLS"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	c := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	if c.PrivateKey == nil {
		return tls.Certificate{}, errors.New("no key")
	}
	*slot = c
	return *c, nil
}

package protocol

// Legacy DTLS 1.2 (protocol.md §7.7): what Cisco AnyConnect clients and openconnect before 7.08 use. The client
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

	"github.com/pion/dtls/v3"
)

// legacySuites maps the OpenSSL names clients offer in X-DTLS12-CipherSuite to pion suites, in our preference.
var legacySuites = []struct {
	name  string
	suite dtls.CipherSuiteID
	rsa   bool
}{
	{"ECDHE-RSA-AES128-GCM-SHA256", dtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, true},
	{"ECDHE-RSA-AES256-GCM-SHA384", dtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, true},
	{"ECDHE-ECDSA-AES128-GCM-SHA256", dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, false},
	{"ECDHE-ECDSA-AES256-GCM-SHA384", dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, false},
}

// dtlsLegacy is what a legacy registration needs for the resumption.
type dtlsLegacy struct {
	masterSecret []byte
	suite        dtls.CipherSuiteID
	rsa          bool
}

// legacyOffer picks a suite from the client's X-DTLS12-CipherSuite and reads its X-DTLS-Master-Secret; nil when
// the client offers nothing we can do.
func legacyOffer(req *request) (*dtlsLegacy, string) {
	secret, err := hex.DecodeString(req.get("X-DTLS-Master-Secret"))
	if err != nil || len(secret) != 48 {
		return nil, ""
	}
	offered := map[string]bool{}
	for tok := range strings.SplitSeq(req.get("X-DTLS12-CipherSuite"), ":") {
		offered[strings.TrimSpace(tok)] = true
	}
	for _, s := range legacySuites {
		if offered[s.name] {
			return &dtlsLegacy{masterSecret: secret, suite: s.suite, rsa: s.rsa}, s.name
		}
	}
	return nil, ""
}

// legacyOptions are pion's options for resuming the legacy session id.
func (l *dtlsLegacy) options(sessionID []byte) ([]dtls.ServerOption, error) {
	cert, err := legacyCert(l.rsa)
	if err != nil {
		return nil, err
	}
	return []dtls.ServerOption{
		dtls.WithCipherSuites(l.suite),
		dtls.WithCertificates(cert),
		dtls.WithExtendedMasterSecret(dtls.DisableExtendedMasterSecret),
		dtls.WithInsecureSkipVerifyHello(true),
		dtls.WithSessionStore(&oneSession{s: dtls.Session{
			ID: bytes.Clone(sessionID), Secret: l.masterSecret, Version: 1, CipherSuiteID: l.suite,
		}}),
		dtls.WithMTU(1400),
	}, nil
}

// oneSession is a SessionStore that knows exactly the legacy session of one CONNECT.
type oneSession struct{ s dtls.Session }

func (o *oneSession) Set([]byte, dtls.Session) error { return nil }
func (o *oneSession) Del([]byte) error               { return nil }
func (o *oneSession) Get(key []byte) (dtls.Session, error) {
	if bytes.Equal(key, o.s.ID) {
		return o.s, nil
	}
	return dtls.Session{}, nil
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

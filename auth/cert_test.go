package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A CRL signed by the issuer refuses the certificates it lists; one signed by another CA does not count; Load
// replaces the list (reload) and "" clears it.
func TestRevocations(t *testing.T) {
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey, otherKey, leafKey := newKey(), newKey(), newKey()
	mkCA := func(name string, k *ecdsa.PrivateKey) *x509.Certificate {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true,
			BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		c, _ := x509.ParseCertificate(der)
		return c
	}
	ca, other := mkCA("ca", caKey), mkCA("other", otherKey)
	leafDER, _ := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(7),
		Subject: pkix.Name{CommonName: "alice"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)},
		ca, &leafKey.PublicKey, caKey)
	leaf, _ := x509.ParseCertificate(leafDER)
	chains := [][]*x509.Certificate{{leaf, ca}}
	dir := t.TempDir()
	crl := func(name string, issuer *x509.Certificate, key *ecdsa.PrivateKey, serials ...int64) string {
		var e []x509.RevocationListEntry
		for _, s := range serials {
			e = append(e, x509.RevocationListEntry{SerialNumber: big.NewInt(s), RevocationTime: time.Now()})
		}
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1),
			ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour), RevokedCertificateEntries: e}, issuer, key)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644)
		return p
	}
	var r Revocations
	for _, tc := range []struct {
		name    string
		path    string
		revoked bool
	}{
		{"listed", crl("listed.pem", ca, caKey, 3, 7), true},
		{"not listed", crl("other-serial.pem", ca, caKey, 8), false},
		{"listed by another CA", crl("other-ca.pem", other, otherKey, 7), false},
		{"cleared", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := r.Load(tc.path); err != nil {
				t.Fatal(err)
			}
			if err := r.CheckRevoked(nil, chains); errors.Is(err, ErrRevoked) != tc.revoked {
				t.Fatalf("CheckRevoked: %v, want revoked %v", err, tc.revoked)
			}
		})
	}
	if err := r.Load(filepath.Join(dir, "missing.pem")); err == nil {
		t.Fatal("a missing CRL loaded")
	}
}

package auth

// Client certificates (docs/protocol.md §4): the TLS handshake verifies the chain against ca_cert and asks
// CheckRevoked about the CRL; the login module then reads the user name and groups out of the leaf certificate
// with cert_user_oid and cert_group_oid.

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
)

// OIDs and forms cert_user_oid takes, as ocserv spells them.
const (
	OIDCommonName = "2.5.4.3"
	OIDUID        = "0.9.2342.19200300.100.1.1"
	SANEmail      = "SAN(rfc822name)"
)

// CertMethod reads identities out of client certificates.
type CertMethod struct {
	UserOID  string // cert_user_oid: a subject attribute OID or SAN(rfc822name); "" = the common name
	GroupOID string // cert_group_oid: every subject attribute with this OID is a group; "" = no groups
}

// errNoCertUser is a certificate without the attribute cert_user_oid names.
var errNoCertUser = errors.New("the certificate has no user name")

// Identity returns the user name and groups of a DER certificate.
func (m *CertMethod) Identity(der []byte) (Identity, error) {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return Identity{}, fmt.Errorf("reading the certificate: %w", err)
	}
	var id Identity
	switch oid := m.UserOID; {
	case strings.EqualFold(oid, SANEmail):
		if len(c.EmailAddresses) > 0 {
			id.User = c.EmailAddresses[0]
		}
	case oid == "":
		id.User = c.Subject.CommonName
	default:
		id.User = firstAttr(c, oid)
	}
	if id.User == "" {
		return Identity{}, errNoCertUser
	}
	if m.GroupOID != "" {
		for _, n := range c.Subject.Names {
			if v, ok := n.Value.(string); ok && n.Type.String() == m.GroupOID && v != "" {
				id.Groups = append(id.Groups, v)
			}
		}
	}
	return id, nil
}

func firstAttr(c *x509.Certificate, oid string) string {
	for _, n := range c.Subject.Names {
		if v, ok := n.Value.(string); ok && n.Type.String() == oid {
			return v
		}
	}
	return ""
}

// LoadCertPool reads a PEM file of CA certificates (ca_cert).
func LoadCertPool(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca_cert: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("ca_cert %s: no PEM certificate", path)
	}
	return pool, nil
}

// Revocations is the CRL in force; Load replaces it (at start and on reload), CheckRevoked reads it without a
// lock from the TLS handshakes.
type Revocations struct {
	lists atomic.Pointer[[]*x509.RevocationList]
}

// ErrRevoked is a certificate listed in the CRL.
var ErrRevoked = errors.New("certificate revoked")

// Load reads a CRL file (PEM, one or more X509 CRL blocks, or one DER list); "" clears it.
func (r *Revocations) Load(path string) error {
	if path == "" {
		r.lists.Store(nil)
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("crl: %w", err)
	}
	var lists []*x509.RevocationList
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "X509 CRL" {
			continue
		}
		l, err := x509.ParseRevocationList(b.Bytes)
		if err != nil {
			return fmt.Errorf("crl %s: %w", path, err)
		}
		lists = append(lists, l)
	}
	if len(lists) == 0 {
		l, err := x509.ParseRevocationList(data)
		if err != nil {
			return fmt.Errorf("crl %s: no CRL (PEM \"X509 CRL\" or DER): %w", path, err)
		}
		lists = append(lists, l)
	}
	r.lists.Store(&lists)
	return nil
}

// CheckRevoked is a tls.Config.VerifyPeerCertificate: it refuses a verified chain any of whose certificates is
// listed by a CRL that its issuer signed.
func (r *Revocations) CheckRevoked(_ [][]byte, chains [][]*x509.Certificate) error {
	p := r.lists.Load()
	if p == nil {
		return nil
	}
	for _, chain := range chains {
		for i := 0; i+1 < len(chain); i++ {
			c, issuer := chain[i], chain[i+1]
			for _, l := range *p {
				if l.CheckSignatureFrom(issuer) != nil {
					continue
				}
				for _, e := range l.RevokedCertificateEntries {
					if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
						return fmt.Errorf("%w: serial %s, subject %q", ErrRevoked, c.SerialNumber, c.Subject.String())
					}
				}
			}
		}
	}
	return nil
}

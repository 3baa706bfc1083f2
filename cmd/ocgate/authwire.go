package main

// Wiring of authentication: the login module built from the auth, enable_auth and group keys, swapped whole by a
// reload, the accounting of the acct key (built in the security module; on or off is fixed at start), and the TLS
// settings that request and verify client certificates (ca_cert, crl).

import (
	"crypto/tls"
	"fmt"

	"ocgate/auth"
	"ocgate/config"
)

// newAuthModule builds the login module of cfg. passwdFile is the password file without auth entries (the
// generated user); with them, the files come from the plain entries.
func newAuthModule(cfg *config.Config, passwdFile string) (*auth.Module, error) {
	var groupSource *auth.PlainFile
	chainOf := func(methods []config.AuthMethod) (auth.Chain, error) {
		var c auth.Chain
		for _, m := range methods {
			switch m.Name {
			case "certificate":
				c.Cert = &auth.CertMethod{UserOID: cfg.CertUserOID, GroupOID: cfg.CertGroupOID}
			case "plain":
				pf, err := auth.OpenPlainFile(m.Params["passwd"])
				if err != nil {
					return c, err
				}
				c.Password = pf
				if groupSource == nil {
					groupSource = pf
				}
				if f := m.Params["otp"]; f != "" {
					if c.OTP, err = auth.OpenOTPFile(f); err != nil {
						return c, err
					}
				}
			case "radius":
				rc, err := auth.LoadRadiusConfig(m.Params["config"])
				if err != nil {
					return c, err
				}
				if c.Radius, err = auth.NewRadiusMethod(rc, m.Params["nas-identifier"], m.Params["groupconfig"] == "true"); err != nil {
					return c, err
				}
			default:
				return c, fmt.Errorf("auth method %q is not supported", m.Name)
			}
		}
		return c, nil
	}
	var mc auth.ModuleConfig
	if len(cfg.Auth) == 0 {
		pf, err := auth.OpenPlainFile(passwdFile)
		if err != nil {
			return nil, err
		}
		groupSource = pf
		mc.Chains = append(mc.Chains, auth.Chain{Password: pf})
	}
	for _, methods := range append([][]config.AuthMethod{cfg.Auth}, splitEach(cfg.EnableAuth)...) {
		if len(methods) == 0 {
			continue
		}
		c, err := chainOf(methods)
		if err != nil {
			return nil, err
		}
		mc.Chains = append(mc.Chains, c)
	}
	for _, g := range cfg.SelectGroups {
		mc.Groups.Select = append(mc.Groups.Select, auth.GroupOption{Value: g.Name, Label: g.Label})
	}
	if cfg.AutoSelectGroup && groupSource != nil {
		mc.Groups.Auto = groupSource.Groups
	}
	mc.Groups.Default = cfg.DefaultSelectGroup
	mc.LoginTimeout = cfg.AuthTimeout
	return auth.NewModule(mc)
}

// newAccounting returns the accounting of the acct key, or nil without one.
func newAccounting(cfg *config.Config) (auth.Accounting, error) {
	if len(cfg.Acct) == 0 {
		return nil, nil
	}
	rc, err := auth.LoadRadiusConfig(cfg.Acct[0].Params["config"])
	if err != nil {
		return nil, err
	}
	return auth.NewRadiusAccounting(rc)
}

// splitEach makes each enable_auth entry a chain of its own.
func splitEach(ms []config.AuthMethod) [][]config.AuthMethod {
	out := make([][]config.AuthMethod, len(ms))
	for i, m := range ms {
		out[i] = []config.AuthMethod{m}
	}
	return out
}

// clientCertTLS sets tc to request client certificates and verify those given against ca_cert and the CRL
// (docs/protocol.md §4). Whether a login needs one is the login module's business, so a client without one still
// completes the handshake and is told "No certificate". The CA stays until a restart; the CRL is re-read by
// reloads (revocations.Load).
func clientCertTLS(tc *tls.Config, cfg *config.Config, revocations *auth.Revocations) error {
	if cfg.CACert == "" {
		return nil
	}
	pool, err := auth.LoadCertPool(cfg.CACert)
	if err != nil {
		return err
	}
	if err := revocations.Load(cfg.CRL); err != nil {
		return err
	}
	tc.ClientAuth = tls.VerifyClientCertIfGiven
	tc.ClientCAs = pool
	tc.VerifyPeerCertificate = revocations.CheckRevoked
	return nil
}

package config

// Keys of the server's front: where it listens, TLS and DTLS, and how users authenticate.

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

var serverKeys = []key{
	{name: "listen_host", def: `""`, doc: "Address to listen on (empty: all).", field: "ListenHost", conv: text},
	{name: "udp_listen_host", def: `""`, doc: "Address for UDP (DTLS) (empty: listen_host).", field: "UDPListenHost", conv: text},
	{name: "tcp_port", def: "8443", doc: "TCP port (TLS).", field: "TCPPort", conv: integer(1, 65535)},
	{name: "udp_port", def: "0", doc: "UDP port (DTLS); 0 = same as tcp_port.", field: "UDPPort", conv: integer(0, 65535)},
	{name: "no_udp", def: "false", doc: "Disable DTLS: the tunnel runs over TLS only.", scope: anyFile, field: "NoUDP",
		conv: boolean, userField: "NoUDP"},
	{name: "dtls_psk", def: "true", field: "DTLSPSK", conv: boolean,
		doc: "Offer openconnect's PSK-NEGOTIATE DTLS mode to clients that ask for it: the DTLS key is exported from the\n" +
			"TLS session (docs/protocol.md §7.2). false: only the legacy DTLS 1.2 mode, resuming the session the client\n" +
			"proposes with its X-DTLS-Master-Secret (docs/protocol.md §7.7)."},
	{name: "dtls_fast_path", def: "true", field: "DTLSFastPath", conv: boolean,
		doc: "Encrypt DTLS records with ocgate's own record layer after pion's handshake (AES-GCM, ChaCha20-Poly1305;\n" +
			"no allocation per record); false keeps pion's record layer, about 1.5x slower."},
	{name: "server_cert", def: `""`, field: "ServerCert", conv: path,
		doc: "Server certificate (PEM). Empty: a self-signed pair generated in the state directory."},
	{name: "server_key", def: `""`, doc: "Server key (PEM), with server_cert.", field: "ServerKey", conv: path},
	{name: "ca_cert", def: `""`, field: "CACert", conv: path,
		doc: "CA (PEM) that client certificates must chain to; the TLS handshake requests and verifies them. Needed by\n" +
			"the \"certificate\" method."},
	{name: "crl", def: `""`, field: "CRL", conv: path,
		doc: "Certificate revocation list (PEM or DER) of ca_cert: listed client certificates are refused in the TLS\n" +
			"handshake. Re-read on reload."},
	{name: "cert_user_oid", def: `"2.5.4.3"`, field: "CertUserOID", conv: certOID(true),
		doc: "Where a client certificate names its user: a subject OID (CN 2.5.4.3, UID 0.9.2342.19200300.100.1.1)\n" +
			"or SAN(rfc822name) (its first e-mail address)."},
	{name: "cert_group_oid", def: `""`, ex: `"2.5.4.11"`, field: "CertGroupOID", conv: certOID(false),
		doc: "A subject OID (e.g. OU 2.5.4.11) whose values are the certificate's groups: the only ones its user may\n" +
			"choose. Empty: the groups come from the password file."},
	{name: "auth", def: "[]", field: "Auth", conv: list(parseAuths),
		doc: "Authentication, ocserv syntax; several entries are all required, e.g. [\"certificate\",\n" +
			"\"plain[passwd=users.passwd]\"]. Methods: plain[passwd=FILE,otp=OATHFILE] (an ocpasswd file, and an\n" +
			"oath-toolkit users file whose one-time password is asked after the password), certificate,\n" +
			"radius[config=FILE,groupconfig=true,nas-identifier=NAME] (FILE a radcli radiusclient.conf; groupconfig:\n" +
			"Class \"OU=g1;g2\" names the user's groups).\n" +
			"Empty: the generated user in the state directory's users.passwd."},
	{name: "acct", def: "[]", ex: `["radius[config=/etc/radcli/radiusclient.conf]"]`, field: "Acct",
		conv: list(parseAccts),
		doc: "Accounting, ocserv syntax: radius[config=FILE] sends Start when a session connects, Interim-Update\n" +
			"(the server's Acct-Interim-Interval) and Stop when it ends. A session whose Start no server answers is\n" +
			"refused. The accounting servers are fixed at start; a reload does not change them."},
	{name: "enable_auth", def: "[]", field: "EnableAuth", conv: list(parseAuths),
		doc: "Alternatives to auth, each entry alone enough (ocserv's enable-auth), e.g. [\"certificate\"]: a client\n" +
			"presenting a certificate logs in with it, others with auth."},
	{name: "select_group", def: "[]", field: "SelectGroups", conv: list(parseSelectGroups),
		doc: "Groups offered at login, \"NAME\" or \"NAME[LABEL]\" (openconnect --authgroup matches the label). A user\n" +
			"choosing a group that is not theirs is refused; the chosen group's config_per_group file applies."},
	{name: "auto_select_group", def: "false", field: "AutoSelectGroup", conv: boolean,
		doc: "Offer every group of the password file at login."},
	{name: "default_select_group", def: `""`, ex: `"DEFAULT"`, field: "DefaultSelectGroup", conv: text,
		doc: "The label of an extra group choice meaning \"my default group\" (the user's first)."},
}

// certOID converts cert_user_oid (user: SAN(rfc822name) allowed) or cert_group_oid.
func certOID(user bool) conv {
	return func(p *parser, key string, v any) (any, bool) {
		s, ok := p.str(key, v)
		if !ok || s == "" && !user {
			return s, ok
		}
		if strings.EqualFold(s, "SAN(rfc822name)") && user {
			return s, true
		}
		for part := range strings.SplitSeq(s, ".") {
			if part == "" || strings.Trim(part, "0123456789") != "" {
				if user {
					p.errf(key, "%q: want a dotted OID (2.5.4.3) or SAN(rfc822name)", s)
				} else {
					p.errf(key, "%q: want a dotted OID (2.5.4.11)", s)
				}
				return nil, false
			}
		}
		return s, true
	}
}

// parseSelectGroups parses select_group entries, NAME or NAME[LABEL].
func parseSelectGroups(p *parser, key string, in []string) []GroupChoice {
	var out []GroupChoice
	for _, e := range in {
		name, label, hasLabel := strings.Cut(strings.TrimSpace(e), "[")
		g := GroupChoice{Name: strings.TrimSpace(name), Label: strings.TrimSpace(name)}
		if hasLabel {
			l, ok := strings.CutSuffix(label, "]")
			if !ok {
				p.errf(key, "%q: missing ']'", e)
				continue
			}
			g.Label = strings.TrimSpace(l)
		}
		if g.Name == "" || g.Label == "" {
			p.errf(key, "%q: empty group name or label", e)
			continue
		}
		out = append(out, g)
	}
	return out
}

// parseAuths parses the auth entries; the files they name are resolved against the file's directory.
func parseAuths(p *parser, key string, in []string) []AuthMethod {
	var out []AuthMethod
	for _, a := range in {
		m, err := parseAuth(a)
		if err != nil {
			p.errf(key, "%q: %v", a, err)
			continue
		}
		for k, v := range m.Params {
			if k == "passwd" || k == "otp" || k == "config" {
				m.Params[k] = p.resolve(v)
			}
		}
		out = append(out, m)
	}
	return out
}

// supportedAuth lists the auth methods implemented so far.
var supportedAuth = []string{"plain", "certificate", "radius"}

// parseAccts parses acct: at most one radius[config=FILE] entry (ocserv's acct is a single string).
func parseAccts(p *parser, key string, in []string) []AuthMethod {
	if len(in) > 1 {
		p.errf(key, "%d entries: at most one accounting method", len(in))
		return nil
	}
	var out []AuthMethod
	for _, a := range in {
		m, err := parseAuth(a)
		if err == nil && m.Name != "radius" {
			err = fmt.Errorf("method %q cannot do accounting (supported: radius)", m.Name)
		}
		if err == nil && (len(m.Params) != 1 || m.Params["config"] == "") {
			err = errors.New("want radius[config=FILE]")
		}
		if err != nil {
			p.errf(key, "%q: %v", a, err)
			continue
		}
		m.Params["config"] = p.resolve(m.Params["config"])
		out = append(out, m)
	}
	return out
}

// knownAuth are ocserv's methods, refused with "not supported" rather than "unknown".
var knownAuth = []string{"plain", "certificate", "pam", "radius", "gssapi", "oidc"}

// parseAuth parses ocserv's `name[key=value,key=value]` syntax.
func parseAuth(s string) (AuthMethod, error) {
	s = strings.TrimSpace(s)
	name, rest, hasParams := strings.Cut(s, "[")
	m := AuthMethod{Name: strings.TrimSpace(name), Params: map[string]string{}}
	if hasParams {
		body, ok := strings.CutSuffix(rest, "]")
		if !ok {
			return m, errors.New("missing ']'")
		}
		if m.Name == "plain" && !strings.Contains(body, "=") && strings.TrimSpace(body) != "" {
			body = "passwd=" + body // ocserv's legacy form, plain[/path/to/passwd]
		}
		for kv := range strings.SplitSeq(body, ",") {
			k, v, ok := strings.Cut(kv, "=")
			if !ok || strings.TrimSpace(k) == "" {
				return m, fmt.Errorf("parameter %q: want key=value", kv)
			}
			m.Params[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	switch {
	case slices.Contains(supportedAuth, m.Name):
	case slices.Contains(knownAuth, m.Name):
		return m, fmt.Errorf("method %q is not supported yet (supported: %s)", m.Name, strings.Join(supportedAuth, ", "))
	default:
		return m, fmt.Errorf("unknown method %q (supported: %s)", m.Name, strings.Join(supportedAuth, ", "))
	}
	if m.Name == "plain" && m.Params["passwd"] == "" {
		return m, errors.New("plain needs passwd=FILE")
	}
	if m.Name == "radius" && m.Params["config"] == "" {
		return m, errors.New("radius needs config=FILE")
	}
	if g, ok := m.Params["groupconfig"]; ok && g != "true" && g != "false" {
		return m, fmt.Errorf("groupconfig=%.20q: want true or false", g)
	}
	// A parameter we do not act on must not pass silently: "otp=" ignored would leave an administrator
	// believing one-time passwords are asked for.
	for k := range m.Params {
		switch {
		case m.Name == "plain" && (k == "passwd" || k == "otp"):
		case m.Name == "radius" && (k == "config" || k == "groupconfig" || k == "nas-identifier"):
		default:
			return m, fmt.Errorf("parameter %q is not supported for %s", k, m.Name)
		}
	}
	return m, nil
}

// checkAuth checks the auth and enable_auth entries together: each way to log in asks for something, at most one
// password method, a certificate method has a CA.
func (p *parser) checkAuth(c *Config) {
	count := func(ms []AuthMethod, name string) int {
		n := 0
		for _, m := range ms {
			if m.Name == name {
				n++
			}
		}
		return n
	}
	if n := count(c.Auth, "plain") + count(c.Auth, "radius"); n > 1 {
		p.errf("auth", "%d password methods: at most one (with a certificate) can be required", n)
	}
	if count(c.Auth, "certificate") > 1 {
		p.errf("auth", "\"certificate\" appears twice")
	}
	if len(c.EnableAuth) > 0 && len(c.Auth) == 0 {
		p.errf("enable_auth", "set without auth: enable_auth lists alternatives to auth")
	}
	if count(c.EnableAuth, "certificate") > 0 && count(c.Auth, "certificate") > 0 {
		p.errf("enable_auth", "\"certificate\" is already required by auth")
	}
	if (count(c.Auth, "certificate") > 0 || count(c.EnableAuth, "certificate") > 0) && c.CACert == "" {
		p.errf("auth", "the certificate method needs ca_cert (the CA client certificates chain to)")
	}
	if c.CRL != "" && c.CACert == "" {
		p.warnf("crl", "has no effect without ca_cert")
	}
	if c.CertGroupOID != "" && count(c.Auth, "certificate")+count(c.EnableAuth, "certificate") == 0 {
		p.warnf("cert_group_oid", "has no effect without the certificate method")
	}
}

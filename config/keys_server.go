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
	{name: "no_udp", def: "false", doc: "Disable DTLS.", scope: anyFile, field: "NoUDP", conv: boolean},
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
		doc:   "CA for client certificates. Certificate authentication is not supported yet: kept, with a warning.",
		inert: "ignored: certificate authentication is not supported yet"},
	{name: "auth", def: "[]", field: "Auth", conv: list(parseAuths),
		doc: "Authentication, ocserv syntax, e.g. \"plain[passwd=users.passwd]\". Empty: the generated user in the state\n" +
			"directory's users.passwd."},
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
var supportedAuth = []string{"plain"}

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
	// A parameter we do not act on must not pass silently: "otp=" ignored would leave an administrator
	// believing one-time passwords are asked for.
	for k := range m.Params {
		switch {
		case m.Name == "plain" && k == "passwd":
		case k == "otp":
			return m, errors.New("otp= (one-time passwords) is not supported yet")
		default:
			return m, fmt.Errorf("parameter %q is not supported for %s", k, m.Name)
		}
	}
	return m, nil
}

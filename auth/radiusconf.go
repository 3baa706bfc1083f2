package auth

// A radcli client configuration (radiusclient.conf), as ocserv's radius[config=FILE] reads it:
//
//	nas-identifier   vpn1
//	authserver       radius1.example.com:1812,radius2.example.com
//	acctserver       radius1.example.com:1813
//	servers          /etc/radcli/servers      # "host secret" lines
//	dictionary       /etc/radcli/dictionary
//	radius_timeout   10                       # seconds per try
//	radius_retries   3                        # tries per server
//
// A server is host[:port[:secret]]; the secret comes from the servers file when the entry does not carry one.
// Servers are tried in order (failover). The dictionary only names attributes for radcli; ocgate knows the
// standard ones it uses, so the file is checked to exist and is otherwise not read. Other radcli keys (bindaddr,
// seqfile, radius_deadtime, default_realm, ...) are accepted and ignored.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// RadiusServer is one RADIUS server. Secret is never logged: String leaves it out.
type RadiusServer struct {
	Addr   string // host:port
	Secret []byte
}

func (s RadiusServer) String() string { return s.Addr }

// RadiusConfig is a parsed radcli configuration.
type RadiusConfig struct {
	NASIdentifier string
	AuthServers   []RadiusServer
	AcctServers   []RadiusServer
	Timeout       time.Duration // per try; radcli's default is 10 s
	Retries       int           // tries per server; radcli's default is 3
}

// LoadRadiusConfig reads a radcli configuration file and the servers file it names.
func LoadRadiusConfig(file string) (*RadiusConfig, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("radius: %w", err)
	}
	c := &RadiusConfig{Timeout: 10 * time.Second, Retries: 3}
	var auth, acct []string
	var serversFile string
	dir := filepath.Dir(file)
	abs := func(p string) string {
		if p != "" && !filepath.IsAbs(p) {
			return filepath.Join(dir, p)
		}
		return p
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v := line, ""
		if i := strings.IndexAny(line, " \t"); i > 0 {
			k, v = line[:i], strings.TrimSpace(line[i:])
		}
		bad := func(want string) error { return fmt.Errorf("radius: %s:%d: %s: want %s", file, n, k, want) }
		switch k {
		case "nas-identifier", "nas_identifier":
			c.NASIdentifier = v
		case "authserver":
			auth = splitServers(v)
		case "acctserver":
			acct = splitServers(v)
		case "servers":
			serversFile = abs(v)
		case "dictionary":
			if _, err := os.Stat(abs(v)); err != nil {
				return nil, fmt.Errorf("radius: %s:%d: dictionary: %w", file, n, err)
			}
		case "radius_timeout":
			s, err := strconv.Atoi(v)
			if err != nil || s <= 0 || s > 600 {
				return nil, bad("seconds between 1 and 600")
			}
			c.Timeout = time.Duration(s) * time.Second
		case "radius_retries":
			r, err := strconv.Atoi(v)
			if err != nil || r <= 0 || r > 100 {
				return nil, bad("a number of tries between 1 and 100")
			}
			c.Retries = r
		}
	}
	secrets := map[string][]byte{}
	if serversFile != "" {
		if secrets, err = loadRadiusSecrets(serversFile); err != nil {
			return nil, err
		}
	}
	if c.AuthServers, err = resolveServers(auth, 1812, secrets); err != nil {
		return nil, fmt.Errorf("radius: %s: authserver: %w", file, err)
	}
	if c.AcctServers, err = resolveServers(acct, 1813, secrets); err != nil {
		return nil, fmt.Errorf("radius: %s: acctserver: %w", file, err)
	}
	return c, nil
}

// splitServers splits radcli's list of servers (commas or blanks).
func splitServers(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' })
}

// loadRadiusSecrets reads a radcli servers file: "host secret" lines.
func loadRadiusSecrets(file string) (map[string][]byte, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("radius: servers file: %w", err)
	}
	out := map[string][]byte{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) != 2 {
			// The line may hold a secret: say where, never what.
			return nil, fmt.Errorf("radius: %s:%d: want \"host secret\"", file, n)
		}
		out[f[0]] = []byte(f[1])
	}
	return out, nil
}

// resolveServers turns host[:port[:secret]] entries into servers, the secret from the entry or the servers file
// (by host, or host:port).
func resolveServers(entries []string, defPort int, secrets map[string][]byte) ([]RadiusServer, error) {
	var out []RadiusServer
	for _, e := range entries {
		host, rest, _ := strings.Cut(e, ":")
		if strings.HasPrefix(e, "[") { // [v6]:port:secret
			end := strings.Index(e, "]")
			if end < 0 {
				return nil, fmt.Errorf("%.64q: missing ']'", host)
			}
			host, rest = e[1:end], strings.TrimPrefix(e[end+1:], ":")
		}
		portStr, secret, hasSecret := strings.Cut(rest, ":")
		port := defPort
		if portStr != "" {
			p, err := strconv.Atoi(portStr)
			if err != nil || p <= 0 || p > 65535 {
				return nil, fmt.Errorf("server %q: bad port", host)
			}
			port = p
		}
		s := RadiusServer{Addr: net.JoinHostPort(host, strconv.Itoa(port))}
		switch {
		case hasSecret:
			s.Secret = []byte(secret)
		case secrets[s.Addr] != nil:
			s.Secret = secrets[s.Addr]
		case secrets[host] != nil:
			s.Secret = secrets[host]
		default:
			return nil, fmt.Errorf("server %s: no secret in the servers file", s.Addr)
		}
		out = append(out, s)
	}
	return out, nil
}

var errNoRadiusServer = errors.New("radius: no server configured")

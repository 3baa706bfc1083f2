package integration

// The balancer harness: N ocgate instances behind HAProxy, with Redis beside them, for the edge tests (edge_test.go)
// and the scale-out tests built on it.
//
//	client namespace                 cluster namespace (the servers' host; the test targets on its lo, newNetns)
//	  openconnect, ocproxy           HAProxy     frontend 10.59.0.1:443, connects from 10.60.0.254
//	  10.59.0.2/24 ──── veth ────── 10.59.0.1/24
//	  route 10.60.0.0/16 via .1      instance i  10.60.1.i:8443 (TCP/TLS and UDP/DTLS), state in its own dir
//	                                 Redis       10.60.2.1:6379
//	                                 nftables    UDP 10.59.0.1:8443 → 10.60.1.(jhash of the source address) (DTLS)
//
// Modes (clusterOptions.Mode):
//   - lbProxyV2: HAProxy in TCP mode passes the TLS through and sends a PROXY v2 header (send-proxy-v2); the
//     instances run listen_proxy_proto with trusted_proxies = HAProxy's source address.
//   - lbTLSFront: HAProxy terminates TLS (ssl crt, the instances' certificate) and sends the plain HTTP with a PROXY
//     v2 header to each instance's listen_clear_file. DTLS is not offered: clients run over TLS only.
//
// Every instance presents the same certificate (placed in its state directory, where ocgate reuses it), so the
// client's pin holds whichever instance it reaches, and shares one password file (vpnUser, "locked"). The shared
// configuration fragment (clusterOptions.Shared) goes into every instance's file; Redis is started on request
// (clusterOptions.Redis) and its URL is cluster.redisURL(). Processes die with the test (cleanups), the
// namespaces with them.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// lbMode is how HAProxy carries the clients to the instances.
type lbMode int

const (
	lbProxyV2  lbMode = iota // TCP mode, TLS passed through, send-proxy-v2 to the instances' TLS port
	lbTLSFront               // HAProxy terminates TLS, send-proxy-v2 to the instances' listen_clear_file
)

// The cluster's addresses.
const (
	lbFront      = "10.59.0.1"   // HAProxy's frontend, the address clients connect to (port 443)
	lbClientAddr = "10.59.0.2"   // the client namespace's address: what the instances must log as the client's
	lbSource     = "10.60.0.254" // HAProxy's source address towards the instances
	lbRedis      = "10.60.2.1:6379"
	lbDTLSPort   = 8443 // the instances' UDP port, announced in X-DTLS-Port; nftables balances it at lbFront
)

// clusterOptions configure newCluster.
type clusterOptions struct {
	Instances int    // default 2
	Mode      lbMode // default lbProxyV2
	// Shared is TOML every instance's configuration gets (after the harness's own keys: listen_host, ports, the
	// PROXY and clear-listener keys, auth).
	Shared string
	// PerInstance adds TOML for instance i (0-based), after Shared.
	PerInstance func(i int) string
	Redis       bool   // start redis-server at lbRedis before the instances
	Balance     string // HAProxy's balance algorithm; default "source" (the same client reaches the same instance)
	NoUDPLB     bool   // no nftables UDP balancing at lbFront (DTLS then fails and clients run TLS only)
	// DTLSElsewhere sends TCP to the first instance (HAProxy's "balance first") and all UDP to the last one: every
	// client's DTLS ClientHello reaches an instance that does not know its session.
	DTLSElsewhere bool
}

// cluster is the running set: namespaces, instances, HAProxy, Redis.
type cluster struct {
	t        testing.TB
	opts     clusterOptions
	ns       *netns // the servers' host
	clientNS *netns // the clients' side
	dir      string // shared files: certificate, password file, haproxy.cfg, Redis's directory
	pin      string // openconnect's --servercert for every instance
	inst     []*instance
	haproxy  *proc
	redis    *proc
}

// instance is one ocgate of the cluster. Its *server gives ctl, users, stop and the logs of the current run.
type instance struct {
	*server
	c    *cluster
	i    int
	addr string   // 10.60.1.(i+1)
	args []string // ocgate's arguments, for restart
	logs []string // stderr of the runs before the current one (restart, kill)
}

// newCluster starts the namespaces, Redis (if asked), the instances and HAProxy, and waits until HAProxy reaches
// every instance.
func newCluster(t testing.TB, o clusterOptions) *cluster {
	t.Helper()
	for _, tool := range []string{"haproxy", "redis-server"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (integration/test.sh installs it): %v", tool, err)
		}
	}
	if o.Instances == 0 {
		o.Instances = 2
	}
	if o.Balance == "" {
		o.Balance = "source"
	}
	if o.DTLSElsewhere {
		o.Balance = "first"
	}
	c := &cluster{t: t, opts: o, ns: newNetns(t), clientNS: newBareNetns(t), dir: tempDir(t)}
	c.ns.startTarget()
	c.wire()
	c.writeShared()
	if o.Redis {
		c.startRedis()
	}
	for i := range o.Instances {
		c.inst = append(c.inst, c.newInstance(i))
	}
	c.startHAProxy()
	if !o.NoUDPLB {
		c.balanceUDP()
	}
	return c
}

// wire joins the namespaces and gives the cluster namespace its addresses.
func (c *cluster) wire() {
	n := vethCounter.Add(1)
	sv, cv := fmt.Sprintf("oclb%ds", n), fmt.Sprintf("oclb%dc", n)
	c.ns.must("ip", "link", "add", sv, "netns", c.ns.name, "type", "veth", "peer", "name", cv, "netns", c.clientNS.name)
	c.ns.must("ip", "-n", c.ns.name, "addr", "add", lbFront+"/24", "dev", sv)
	c.ns.must("ip", "-n", c.ns.name, "link", "set", sv, "up")
	c.ns.must("ip", "-n", c.clientNS.name, "addr", "add", lbClientAddr+"/24", "dev", cv)
	c.ns.must("ip", "-n", c.clientNS.name, "link", "set", cv, "up")
	c.ns.must("ip", "-n", c.clientNS.name, "route", "add", "10.60.0.0/16", "via", lbFront)
	c.ns.must("ip", "-n", c.ns.name, "addr", "add", lbSource+"/32", "dev", "lo")
	c.ns.must("ip", "-n", c.ns.name, "addr", "add", strings.Split(lbRedis, ":")[0]+"/32", "dev", "lo")
	for i := range c.opts.Instances {
		c.ns.must("ip", "-n", c.ns.name, "addr", "add", instanceAddr(i)+"/32", "dev", "lo")
	}
}

func instanceAddr(i int) string { return fmt.Sprintf("10.60.1.%d", i+1) }

// writeShared writes the certificate every instance presents (and HAProxy, in lbTLSFront) and the password file.
func (c *cluster) writeShared() {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "vpn.test"},
		DNSNames: []string{"vpn.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		c.t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		c.t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	for name, b := range map[string][]byte{"server-cert.pem": certPEM, "server-key.pem": keyPEM,
		"haproxy.pem": append(append([]byte{}, certPEM...), keyPEM...)} {
		if err := os.WriteFile(filepath.Join(c.dir, name), b, 0o600); err != nil {
			c.t.Fatal(err)
		}
	}
	c.pin = pinOf(c.t, filepath.Join(c.dir, "server-cert.pem"))
	pw := newServerDir(c.t) // users.passwd with vpnUser and "locked"
	b, err := os.ReadFile(filepath.Join(pw, "users.passwd"))
	if err != nil {
		c.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "users.passwd"), b, 0o644); err != nil {
		c.t.Fatal(err)
	}
}

// clearSocket is instance i's listen_clear_file.
func (c *cluster) clearSocket(i int) string {
	return filepath.Join(c.dir, fmt.Sprintf("i%d", i), "clear.socket")
}

// newInstance writes instance i's directory and configuration and starts it.
func (c *cluster) newInstance(i int) *instance {
	c.t.Helper()
	dir := filepath.Join(c.dir, fmt.Sprintf("i%d", i))
	state := filepath.Join(dir, "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		c.t.Fatal(err)
	}
	for _, f := range []string{"server-cert.pem", "server-key.pem"} {
		b, _ := os.ReadFile(filepath.Join(c.dir, f))
		if err := os.WriteFile(filepath.Join(state, f), b, 0o600); err != nil {
			c.t.Fatal(err)
		}
	}
	cfg := fmt.Sprintf("listen_host = %q\ntcp_port = 8443\nudp_port = %d\nauth = [\"plain[passwd=%s]\"]\n"+
		"listen_proxy_proto = true\ntrusted_proxies = [\"%s/32\"]\n",
		instanceAddr(i), lbDTLSPort, filepath.Join(c.dir, "users.passwd"), lbSource)
	if c.opts.Mode == lbTLSFront {
		cfg += fmt.Sprintf("listen_clear_file = %q\n", c.clearSocket(i))
	}
	cfg += publishTargets(c.opts.Shared) + "\n"
	if c.opts.PerInstance != nil {
		cfg += c.opts.PerInstance(i) + "\n"
	}
	path := filepath.Join(dir, "ocgate.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		c.t.Fatal(err)
	}
	os.Chmod(c.dir, 0o755)
	chownAll(c.t, dir)
	in := &instance{c: c, i: i, addr: instanceAddr(i),
		server: &server{t: c.t, ns: c.ns, dir: dir, stateDir: state, port: 8443, host: instanceAddr(i)}}
	in.args = []string{"-c", path, "--state-dir", state, "--log-level", "debug"}
	in.server.start(in.args...)
	return in
}

// front is the balancer as a server value for connect, authenticate and launchCookie: clients run in the client
// namespace and reach https://10.59.0.1:443/.
func (c *cluster) front() *server {
	return &server{t: c.t, ns: c.clientNS, pin: c.pin, host: lbFront, port: 443}
}

// instance returns instance i.
func (c *cluster) instance(i int) *instance { return c.inst[i] }

// redisURL is the URL of the cluster's Redis.
func (c *cluster) redisURL() string { return "redis://" + lbRedis + "/0" }

// startRedis starts redis-server (again) at lbRedis, without persistence, and waits until it answers.
func (c *cluster) startRedis() {
	c.t.Helper()
	dir := filepath.Join(c.dir, "redis")
	os.MkdirAll(dir, 0o700)
	host, port, _ := net.SplitHostPort(lbRedis)
	c.redis = c.ns.start(nil, "redis-server", "--bind", host, "--port", port, "--save", "", "--appendonly", "no",
		"--dir", dir, "--protected-mode", "no")
	waitFor(c.t, 10*time.Second, "redis-server to listen", func() bool {
		return strings.Contains(c.redis.out.String(), "Ready to accept connections") || c.redis.exited()
	})
	if c.redis.exited() {
		c.t.Fatalf("redis-server exited: %s", c.redis.out.String())
	}
}

// stopRedis stops redis-server (SIGTERM, then SIGKILL) and waits until it is gone.
func (c *cluster) stopRedis() {
	c.t.Helper()
	if c.redis != nil {
		c.redis.stop(5 * time.Second)
	}
}

// haproxyConfig is HAProxy's configuration for the cluster's mode.
func (c *cluster) haproxyConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
	log stdout format raw local0 info
	maxconn 4096
defaults
	mode tcp
	log global
	option tcplog
	option redispatch
	retries 3
	timeout connect 2s
	timeout client 1h
	timeout server 1h
	timeout check 1s
frontend vpn
`)
	if c.opts.Mode == lbTLSFront {
		fmt.Fprintf(&b, "\tbind %s:443 ssl crt %s\n", lbFront, filepath.Join(c.dir, "haproxy.pem"))
	} else {
		fmt.Fprintf(&b, "\tbind %s:443\n", lbFront)
	}
	fmt.Fprintf(&b, "\tdefault_backend ocgate\nbackend ocgate\n\tbalance %s\n", c.opts.Balance)
	if c.opts.Mode == lbProxyV2 {
		fmt.Fprintf(&b, "\tsource %s\n", lbSource)
	}
	for i := range c.opts.Instances {
		if c.opts.Mode == lbTLSFront {
			fmt.Fprintf(&b, "\tserver i%d unix@%s send-proxy-v2 check check-send-proxy inter 500ms fall 2 rise 1\n", i, c.clearSocket(i))
		} else {
			fmt.Fprintf(&b, "\tserver i%d %s:8443 send-proxy-v2 check check-send-proxy inter 500ms fall 2 rise 1\n", i, instanceAddr(i))
		}
	}
	return b.String()
}

// startHAProxy writes haproxy.cfg, starts HAProxy in the foreground and waits until every instance is up.
func (c *cluster) startHAProxy() {
	c.t.Helper()
	cfg := filepath.Join(c.dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, []byte(c.haproxyConfig()), 0o644); err != nil {
		c.t.Fatal(err)
	}
	if out, code := c.ns.output(10*time.Second, "haproxy", "-c", "-f", cfg); code != 0 {
		c.t.Fatalf("haproxy -c: %s\n%s", out, c.haproxyConfig())
	}
	c.haproxy = c.ns.start(nil, "haproxy", "-db", "-f", cfg)
	c.t.Cleanup(func() {
		if c.t.Failed() {
			c.t.Logf("haproxy output:\n%s", c.haproxy.out.String())
		}
	})
	waitFor(c.t, 10*time.Second, "HAProxy to listen", func() bool {
		conn, err := c.clientNS.dial(lbFront + ":443")
		if err == nil {
			conn.Close()
		}
		return err == nil || c.haproxy.exited()
	})
	if c.haproxy.exited() {
		c.t.Fatalf("haproxy exited: %s", c.haproxy.out.String())
	}
}

// waitBackend waits until HAProxy sees instance i up (or down): a server is up from HAProxy's start until its
// health checks fail ("Server ocgate/iN is DOWN"), and up again once one passes ("... is UP").
func (c *cluster) waitBackend(i int, up bool) {
	c.t.Helper()
	down := fmt.Sprintf("Server ocgate/i%d is DOWN", i)
	upMsg := fmt.Sprintf("Server ocgate/i%d is UP", i)
	waitFor(c.t, 20*time.Second, fmt.Sprintf("HAProxy to see instance %d up=%v", i, up), func() bool {
		out := c.haproxy.out.String()
		isUp := strings.LastIndex(out, upMsg) >= strings.LastIndex(out, down)
		return isUp == up || c.haproxy.exited()
	})
	if c.haproxy.exited() {
		c.t.Fatalf("haproxy exited: %s", c.haproxy.out.String())
	}
}

// log returns the instance's stderr (its log), over every run since the test started.
func (in *instance) log() string {
	return strings.Join(in.logs, "") + in.stderr.String()
}

// waitLog waits until the instance's log matches re, and returns the first match's submatches.
func (in *instance) waitLog(re string, d time.Duration) []string {
	in.t.Helper()
	rx := regexp.MustCompile(re)
	var m []string
	waitFor(in.t, d, fmt.Sprintf("instance %d to log %q", in.i, re), func() bool {
		m = rx.FindStringSubmatch(in.log())
		return m != nil
	})
	return m
}

// stopInst stops the instance with SIGTERM (a clean shutdown: sessions get TERMINATE) and returns its exit code.
func (in *instance) stopInst() int {
	code := in.stop()
	in.logs = append(in.logs, in.stderr.String())
	return code
}

// kill kills the instance with SIGKILL (a crash: no TERMINATE, no cleanup) and waits until it is gone.
func (in *instance) kill() {
	in.t.Helper()
	if !in.proc.exited() {
		in.proc.cmd.Process.Signal(syscall.SIGKILL)
		<-in.proc.done
	}
	// ip netns exec runs the server as a child: make sure nothing of the instance listens any more.
	waitFor(in.t, 10*time.Second, "the killed instance's port to close", func() bool {
		conn, err := in.ns.dial(net.JoinHostPort(in.addr, "8443"))
		if err == nil {
			conn.Close()
		}
		return err != nil
	})
	in.logs = append(in.logs, in.stderr.String())
}

// restart starts the instance again with the same configuration and state directory.
func (in *instance) restart() {
	in.t.Helper()
	in.server.start(in.args...)
}

// lbClient connects the stock client through the balancer as vpnUser and waits until it is configured.
func (c *cluster) lbClient(extra ...string) *client {
	c.t.Helper()
	return connect(c.t, c.front(), vpnUser, vpnPass, extra...)
}

// holder returns the running instance that connected a session with the tunnel address ip most recently (by the
// log's timestamps: without shared leases two instances may hand out the same address), or nil.
func (c *cluster) holder(ip string) *instance {
	re := regexp.MustCompile(`(?m)^time=(\S+) .*"session connected".* ip=` + regexp.QuoteMeta(ip) + `\b`)
	var best *instance
	var bestAt string
	for _, in := range c.inst {
		if in.proc.exited() {
			continue
		}
		for _, m := range re.FindAllStringSubmatch(in.stderr.String(), -1) {
			if m[1] > bestAt {
				best, bestAt = in, m[1]
			}
		}
	}
	return best
}

// balanceUDP balances UDP to lbFront:lbDTLSPort over the instances by a hash of the client's source address
// (nftables DNAT with jhash; HAProxy does not balance UDP): the DTLS affinity docs/architecture.md describes. The
// hash is not HAProxy's, so a client's DTLS may reach another instance than its TLS connection.
func (c *cluster) balanceUDP() {
	c.t.Helper()
	var m []string
	for i := range c.opts.Instances {
		to := i
		if c.opts.DTLSElsewhere {
			to = c.opts.Instances - 1
		}
		m = append(m, fmt.Sprintf("%d : %s", i, instanceAddr(to)))
	}
	rules := fmt.Sprintf("table ip oclb {\n\tchain pre {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n"+
		"\t\tip daddr %s udp dport %d dnat to jhash ip saddr mod %d map { %s }\n\t}\n}\n",
		lbFront, lbDTLSPort, c.opts.Instances, strings.Join(m, ", "))
	f := filepath.Join(c.dir, "udp-lb.nft")
	if err := os.WriteFile(f, []byte(rules), 0o644); err != nil {
		c.t.Fatal(err)
	}
	if out, code := c.ns.output(10*time.Second, "nft", "-f", f); code != 0 {
		c.t.Fatalf("nft -f %s: %s\n%s", f, out, rules)
	}
}

// redisCLI runs redis-cli against the cluster's Redis and returns its output and exit code.
func (c *cluster) redisCLI(args ...string) (string, int) {
	return c.ns.output(10*time.Second, append([]string{"redis-cli", "-u", c.redisURL()}, args...)...)
}

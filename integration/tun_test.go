package integration

// Kernel-TUN mode (datapath = "tun"): ocgate runs as root in the server namespace with run_as_user = "nobody"
// (the privileged helper keeps root for devices and scripts); each client is the stock openconnect with a real
// TUN in its own namespace, joined to the server's by a veth, configured by a small script of ours (the packaged
// vpnc-script would rewrite the host's resolv.conf).

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

var vethCounter atomic.Int32

// clientScript sets the TUN up as openconnect describes it: address, MTU, the pool's network and the split-include
// routes.
const clientScript = `#!/bin/sh
case "$reason" in
connect)
	ip link set dev "$TUNDEV" up mtu "$INTERNAL_IP4_MTU"
	ip addr add "$INTERNAL_IP4_ADDRESS/32" dev "$TUNDEV"
	# vpnc-script routes the pool's network too (the server's in-pool address, its built-in DNS, is there).
	if [ -n "$INTERNAL_IP4_NETADDR" ]; then ip route replace "$INTERNAL_IP4_NETADDR/$INTERNAL_IP4_NETMASKLEN" dev "$TUNDEV"; fi
	i=0
	while [ "$i" -lt "${CISCO_SPLIT_INC:-0}" ]; do
		eval "a=\$CISCO_SPLIT_INC_${i}_ADDR m=\$CISCO_SPLIT_INC_${i}_MASKLEN"
		ip route replace "$a/$m" dev "$TUNDEV"
		i=$((i+1))
	done
	if [ "${CISCO_SPLIT_INC:-0}" = 0 ]; then ip route replace default dev "$TUNDEV"; fi
	if [ -n "$INTERNAL_IP6_NETMASK" ]; then
		ip -6 addr add "$INTERNAL_IP6_NETMASK" dev "$TUNDEV" nodad
		i=0
		while [ "$i" -lt "${CISCO_IPV6_SPLIT_INC:-0}" ]; do
			eval "a=\$CISCO_IPV6_SPLIT_INC_${i}_ADDR m=\$CISCO_IPV6_SPLIT_INC_${i}_MASKLEN"
			ip -6 route replace "$a/$m" dev "$TUNDEV"
			i=$((i+1))
		done
	fi
	;;
esac
exit 0
`

// serverScript records each script's environment in DIR/REASON-USERNAME.env; it refuses the user "refused".
const serverScript = `#!/bin/sh
env | sort > "%s/$REASON-$USERNAME.env.tmp"
mv "%s/$REASON-$USERNAME.env.tmp" "%s/$REASON-$USERNAME.env"
if [ "$REASON" = connect ] && [ "$USERNAME" = refused ]; then
	echo "connect script: $USERNAME is not welcome" >&2
	exit 1
fi
exit 0
`

// tunRig is a server namespace running ocgate in kernel-TUN mode.
type tunRig struct {
	t      *testing.T
	ns     *netns
	dir    string
	envDir string // where the server script writes
	s      *server
	script string // the client's --script
}

// newTUNRig starts the server with config (TOML lines added to the common ones).
func newTUNRig(t *testing.T, config string) *tunRig {
	t.Helper()
	return newRig(t, true, config)
}

// newRig starts ocgate in kernel-TUN mode (as root, run_as_user nobody) or in netstack mode (unprivileged), with
// the recording script as connect and disconnect script, reachable from client namespaces over veths.
func newRig(t *testing.T, tun bool, config string, setprivArgs ...string) *tunRig {
	t.Helper()
	return newRigIn(t, newNetns(t), tun, config, setprivArgs...)
}

// newRigIn is newRig in a namespace the caller prepared (e.g. with sysctls set).
func newRigIn(t *testing.T, ns *netns, tun bool, config string, setprivArgs ...string) *tunRig {
	t.Helper()
	ns.startTarget()
	ns.must("ip", "netns", "exec", ns.name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	r := &tunRig{t: t, ns: ns, dir: newServerDir(t), envDir: tempDir(t)}
	for _, u := range []string{"bob", "carol", "refused"} {
		addUser(t, r.dir, u)
	}
	scriptPath := filepath.Join(r.envDir, "script.sh")
	d := r.envDir
	if err := os.WriteFile(scriptPath, []byte(fmt.Sprintf(serverScript, d, d, d)), 0o755); err != nil {
		t.Fatal(err)
	}
	r.script = filepath.Join(tempDir(t), "client-script.sh")
	if err := os.WriteFile(r.script, []byte(clientScript), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`listen_host = "0.0.0.0"
connect_script = %q
disconnect_script = %q
%s`, scriptPath, scriptPath, config)
	if !tun {
		chownAll(t, r.envDir) // the unprivileged server runs the script itself
		r.s = startServerAs(t, ns, r.dir, cfg, false, "", setprivArgs...)
		return r
	}
	cfg = "datapath = \"tun\"\nrun_as_user = \"nobody\"\n" + cfg
	r.s = startServerAs(t, ns, r.dir, cfg, true, "")
	if !strings.Contains(r.s.stderr.String(), "dropped privileges") {
		t.Fatalf("the server did not drop privileges:\n%s", r.s.stderr.String())
	}
	return r
}

func addUser(t *testing.T, dir, user string) {
	t.Helper()
	cmd := exec.Command(ocgateBin, "passwd", "-c", filepath.Join(dir, "users.passwd"), user)
	cmd.Stdin = strings.NewReader(vpnPass + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ocgate passwd %s: %v\n%s", user, err, out)
	}
	chownAll(t, dir)
}

// tunClient is openconnect with a real TUN in its own namespace.
type tunClient struct {
	ns   *netns
	proc *proc
	ip   string
}

// launch starts a client namespace joined to the server's by a veth and runs openconnect in it.
func (r *tunRig) launch(user string, extra ...string) *tunClient {
	r.t.Helper()
	ns := newBareNetns(r.t)
	n := vethCounter.Add(1)
	sv, cv := fmt.Sprintf("ocv%ds", n), fmt.Sprintf("ocv%dc", n)
	srvIP, cliIP := fmt.Sprintf("10.99.%d.1", n), fmt.Sprintf("10.99.%d.2", n)
	ns.must("ip", "link", "add", sv, "netns", r.ns.name, "type", "veth", "peer", "name", cv, "netns", ns.name)
	ns.must("ip", "-n", r.ns.name, "addr", "add", srvIP+"/24", "dev", sv)
	ns.must("ip", "-n", r.ns.name, "link", "set", sv, "up")
	ns.must("ip", "-n", ns.name, "addr", "add", cliIP+"/24", "dev", cv)
	ns.must("ip", "-n", ns.name, "link", "set", cv, "up")
	args := append([]string{"openconnect", "-v", "--protocol=anyconnect", "--servercert", r.s.pin, "-u", user,
		"--passwd-on-stdin", "--non-inter", "--script", r.script}, extra...)
	args = append(args, fmt.Sprintf("https://%s:%d/", srvIP, r.s.port))
	return &tunClient{ns: ns, proc: ns.start(strings.NewReader(vpnPass+"\n"), args...)}
}

// connect launches a client and waits until its TUN has the address the server gave.
func (r *tunRig) connect(user string, extra ...string) *tunClient {
	r.t.Helper()
	c := r.launch(user, extra...)
	waitFor(r.t, 30*time.Second, "openconnect to be configured", func() bool {
		return configuredRE.MatchString(c.proc.out.String()) || c.proc.exited()
	})
	if c.proc.exited() {
		r.t.Fatalf("openconnect exited before connecting: %v\n%s", c.proc.err, c.proc.out.String())
	}
	c.ip = configuredRE.FindStringSubmatch(c.proc.out.String())[1]
	r.t.Cleanup(func() {
		if r.t.Failed() {
			r.t.Logf("openconnect (%s) output:\n%s", user, c.proc.out.String())
		}
	})
	waitFor(r.t, 10*time.Second, "the client's TUN to carry "+c.ip, func() bool {
		out, _ := c.ns.output(5*time.Second, "ip", "-4", "addr", "show")
		return strings.Contains(out, "inet "+c.ip+"/32")
	})
	return c
}

// scriptEnv waits for the environment the server's REASON script saw for user.
func (r *tunRig) scriptEnv(reason, user string) map[string]string {
	r.t.Helper()
	path := filepath.Join(r.envDir, reason+"-"+user+".env")
	waitFor(r.t, 15*time.Second, "the "+reason+" script to run for "+user, func() bool {
		_, err := os.Stat(path)
		return err == nil
	})
	b, _ := os.ReadFile(path)
	env := map[string]string{}
	for _, l := range readLines(string(b)) {
		if k, v, ok := strings.Cut(l, "="); ok {
			env[k] = v
		}
	}
	return env
}

// tso is what ethtool says of the server namespace's device dev: "on", "off", or "" if it cannot tell.
func (r *tunRig) tso(dev string) string {
	out, _ := r.ns.output(5*time.Second, "ethtool", "-k", dev)
	if m := regexp.MustCompile(`(?m)^tcp-segmentation-offload: (on|off)`).FindStringSubmatch(out); m != nil {
		return m[1]
	}
	return ""
}

// devices lists the server namespace's vpns devices.
func (r *tunRig) devices() []string {
	out, _ := r.ns.output(5*time.Second, "ip", "-o", "link", "show")
	return regexp.MustCompile(`\d+: (vpns\d+):`).FindAllString(out, -1)
}

// ping reports whether dst answers an echo request within a few tries (the first packets after a connect may
// meet DTLS still coming up).
func (c *tunClient) ping(dst string) bool {
	for range 3 {
		if _, code := c.ns.output(15*time.Second, "ping", "-c", "2", "-W", "2", "-i", "0.3", dst); code == 0 {
			return true
		}
	}
	return false
}

// TestTUNTransferPingAndScripts: the client's TUN gets the pool address; 64 MiB each way with SHA-256 equality;
// ping; the connect script saw ocserv's variables; a logout runs the disconnect script with the byte counts and
// removes the device.
func TestTUNTransferPingAndScripts(t *testing.T) {
	t.Parallel()
	r := newTUNRig(t, `route = ["10.77.0.0/24"]`)
	c := r.connect(vpnUser)
	if !dtlsUp.MatchString(c.proc.out.String()) {
		t.Errorf("DTLS did not come up:\n%s", c.proc.out.String())
	}
	if !strings.HasPrefix(c.ip, "10.250.77.") {
		t.Fatalf("client address %s outside the default pool", c.ip)
	}
	if !c.ping("10.77.0.1") {
		t.Fatal("no ping reply from 10.77.0.1 through the tunnel")
	}

	const n = 64 << 20
	checkDownload(t, c.ns, "", "http://10.77.0.1:8080", n, 21)
	checkUpload(t, c.ns, "", "http://10.77.0.1:8080", n, 22)

	env := r.scriptEnv("connect", vpnUser)
	dev := env["DEVICE"]
	// With DTLS up the device keeps its segmentation offloads (tunnel.offloads).
	waitFor(t, 10*time.Second, "TSO on "+dev+" with DTLS", func() bool { return r.tso(dev) == "on" })
	want := map[string]string{
		"REASON": "connect", "USERNAME": vpnUser, "IP_REMOTE": c.ip, "IP_LOCAL": "10.250.77.1",
		"OCSERV_ROUTES": "10.77.0.0/255.255.255.0 ", "OCSERV_ROUTES4": "10.77.0.0/255.255.255.0 ",
		"VHOST": "default", "DEVICE_PLATFORM": "linux-64",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("connect script: %s=%q, want %q", k, env[k], v)
		}
	}
	if !regexp.MustCompile(`^vpns\d+$`).MatchString(dev) {
		t.Errorf("connect script: DEVICE=%q, want vpnsN", dev)
	}
	if !strings.HasPrefix(env["IP_REAL"], "10.99.") || !strings.HasPrefix(env["IP_REAL_LOCAL"], "10.99.") {
		t.Errorf("connect script: IP_REAL=%q IP_REAL_LOCAL=%q, want the veth addresses", env["IP_REAL"], env["IP_REAL_LOCAL"])
	}
	for _, k := range []string{"ID", "USER_AGENT", "HOSTNAME", "GROUPNAME"} {
		if _, ok := env[k]; !ok {
			t.Errorf("connect script: %s not set", k)
		}
	}
	if devs := r.devices(); len(devs) != 1 {
		t.Errorf("server devices %v, want one", devs)
	}

	c.proc.stop(10 * time.Second) // SIGTERM: openconnect logs out
	denv := r.scriptEnv("disconnect", vpnUser)
	in, _ := strconv.ParseInt(denv["STATS_BYTES_IN"], 10, 64)
	outB, _ := strconv.ParseInt(denv["STATS_BYTES_OUT"], 10, 64)
	if in < n || outB < n || denv["STATS_DURATION"] == "" || denv["DEVICE"] != dev || denv["REASON"] != "disconnect" {
		t.Errorf("disconnect script: STATS_BYTES_IN=%s STATS_BYTES_OUT=%s STATS_DURATION=%q DEVICE=%q REASON=%q; want >= %d each way on %s",
			denv["STATS_BYTES_IN"], denv["STATS_BYTES_OUT"], denv["STATS_DURATION"], denv["DEVICE"], denv["REASON"], n, dev)
	}
	waitFor(t, 10*time.Second, "the device to be removed", func() bool { return len(r.devices()) == 0 })
}

// TestTUNConnectScriptRefuses: a connect script exiting 1 refuses the session (the client is told its cookie
// is not acceptable and exits); no device is left behind and other users are unaffected.
func TestTUNConnectScriptRefuses(t *testing.T) {
	t.Parallel()
	r := newTUNRig(t, `route = ["10.77.0.0/24"]`)
	c := r.launch("refused")
	select {
	case <-c.proc.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("openconnect still running for a refused user:\n%s", c.proc.out.String())
	}
	out := c.proc.out.String()
	if c.proc.cmd.ProcessState.ExitCode() == 0 || configuredRE.MatchString(out) || !strings.Contains(out, "401") {
		t.Fatalf("refused user: exit %d, want non-zero with a 401 and no address:\n%s", c.proc.cmd.ProcessState.ExitCode(), out)
	}
	if env := r.scriptEnv("connect", "refused"); env["USERNAME"] != "refused" {
		t.Fatalf("connect script env: %v", env)
	}
	waitFor(t, 10*time.Second, "the refused session's device to go", func() bool { return len(r.devices()) == 0 })
	if !strings.Contains(r.s.stderr.String(), "connect script failed") {
		t.Errorf("server log does not say why:\n%s", r.s.stderr.String())
	}
	if _, err := os.Stat(filepath.Join(r.envDir, "disconnect-refused.env")); err == nil {
		t.Errorf("the disconnect script ran for a session the connect script refused")
	}
	ok := r.connect(vpnUser)
	if !ok.ping("10.77.0.1") {
		t.Fatal("another user cannot use the tunnel after a refusal")
	}
}

// TestTUNClientToClient: two clients get two devices and reach each other through the server (the kernel
// forwards between vpns devices).
func TestTUNClientToClient(t *testing.T) {
	t.Parallel()
	r := newTUNRig(t, `route = ["10.77.0.0/24", "10.250.77.0/24"]`)
	a := r.connect(vpnUser)
	b := r.connect("bob")
	if a.ip == b.ip {
		t.Fatalf("both clients got %s", a.ip)
	}
	if devs := r.devices(); len(devs) != 2 {
		t.Fatalf("server devices %v, want two", devs)
	}
	p := a.ns.start(nil, targetBin, "-listen", a.ip+":8080")
	waitFor(t, 10*time.Second, "a service on the first client", func() bool {
		return strings.Contains(p.out.String(), "ready") || p.exited()
	})
	out, code := b.ns.output(30*time.Second, "curl", "-sS", "--max-time", "20", "http://"+a.ip+":8080/hello")
	if code != 0 || !strings.Contains(out, "hello from "+a.ip) {
		t.Fatalf("client to client: exit %d: %s", code, out)
	}
	if !b.ping(a.ip) || !a.ping(b.ip) {
		t.Fatal("the clients cannot ping each other")
	}
}

// TestTUNRestrictToRoutesAndIroute: restrict_user_to_routes drops what a client sends outside its routes (even
// when the client routes it into the tunnel itself); a per-user iroute makes a network behind the client
// reachable from the server.
func TestTUNRestrictToRoutesAndIroute(t *testing.T) {
	t.Parallel()
	perUser := tempDir(t)
	if err := os.WriteFile(filepath.Join(perUser, vpnUser), []byte("iroute = [\"10.66.0.0/24\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := newTUNRig(t, fmt.Sprintf("route = [\"10.77.0.0/24\"]\nrestrict_user_to_routes = true\nconfig_per_user = %q", perUser))
	c := r.connect(vpnUser)
	if !c.ping("10.77.0.1") {
		t.Fatal("no ping reply from a routed destination")
	}
	// A client that routes more than it was given: the server must drop it.
	c.ns.must("ip", "netns", "exec", c.ns.name, "ip", "route", "add", "10.88.0.1/32", "dev", "tun0")
	if _, code := c.ns.output(15*time.Second, "ping", "-c", "2", "-W", "2", "-i", "0.3", "10.88.0.1"); code == 0 {
		t.Fatal("restrict_user_to_routes: 10.88.0.1 (outside the routes) answered")
	}
	env := r.scriptEnv("connect", vpnUser)
	if env["OCSERV_RESTRICT_TO_ROUTES"] != "1" {
		t.Errorf("connect script: OCSERV_RESTRICT_TO_ROUTES=%q, want 1", env["OCSERV_RESTRICT_TO_ROUTES"])
	}

	// iroute: 10.66.0.1 lives behind the client; the server reaches it through the client's device.
	// (The server's pings come from its in-pool address, which this client does not route by itself.)
	c.ns.must("ip", "netns", "exec", c.ns.name, "ip", "addr", "add", "10.66.0.1/32", "dev", "lo")
	c.ns.must("ip", "netns", "exec", c.ns.name, "ip", "route", "add", "10.250.77.1/32", "dev", "tun0")
	routes, _ := r.ns.output(5*time.Second, "ip", "route", "show", "10.66.0.0/24")
	if !strings.Contains(routes, "dev "+env["DEVICE"]) {
		t.Fatalf("no iroute on the server: %q", routes)
	}
	if _, code := r.ns.output(15*time.Second, "ping", "-c", "2", "-W", "2", "-i", "0.3", "10.66.0.1"); code != 0 {
		t.Fatal("the network behind the client (iroute) does not answer")
	}
	c.proc.stop(10 * time.Second)
	waitFor(t, 10*time.Second, "the device to close", func() bool {
		return strings.Contains(r.s.stderr.String(), "dropped_not_routed=")
	})
	if m := regexp.MustCompile(`dropped_not_routed=(\d+)`).FindStringSubmatch(r.s.stderr.String()); m == nil || m[1] == "0" {
		t.Errorf("the server did not count the dropped packets: %v", m)
	}
}

// TestTUNReconnectKeepsDevice: a client that loses its connection (killed, no logout) comes back with its
// cookie and gets the same address and the same device; the connect script ran once.
func TestTUNReconnectKeepsDevice(t *testing.T) {
	t.Parallel()
	r := newTUNRig(t, `route = ["10.77.0.0/24"]`)
	c := r.connect(vpnUser, "--no-dtls")
	dev := r.scriptEnv("connect", vpnUser)["DEVICE"]
	// On TLS only, the device hands over MTU-sized packets: its TSO is off (tunnel.offloads).
	waitFor(t, 10*time.Second, "TSO off on "+dev+" without DTLS", func() bool { return r.tso(dev) == "off" })
	// openconnect reconnects by itself with its cookie after the server drops the TCP connection; force that by
	// killing the connection with ss.
	r.ns.must("ip", "netns", "exec", r.ns.name, "ss", "-K", "src", "10.99.0.0/16", "sport", "= :8443")
	waitFor(t, 30*time.Second, "the client to reconnect", func() bool {
		return strings.Count(c.proc.out.String(), "Got CONNECT response: HTTP/1.1 200 CONNECTED") >= 2 || c.proc.exited()
	})
	if c.proc.exited() {
		t.Fatalf("openconnect exited instead of reconnecting:\n%s", c.proc.out.String())
	}
	if !c.ping("10.77.0.1") {
		t.Fatal("no traffic after the reconnect")
	}
	if devs := r.devices(); len(devs) != 1 || !strings.Contains(devs[0], dev) {
		t.Fatalf("devices after the reconnect %v, want just %s", devs, dev)
	}
	if n := strings.Count(r.s.stderr.String(), `msg="session connected"`); n != 2 {
		t.Errorf("%d tunnels, want 2", n)
	}
}

// TestTUNIPv6: with ipv6_network, the session's device carries IPv6 too: the client gets an IPv6 address,
// reaches an IPv6 target on the server's host (HTTP and ping) through the kernel, and the scripts see it.
func TestTUNIPv6(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.must("ip", "-n", ns.name, "addr", "add", "fd99::1/128", "dev", "lo")
	p := ns.start(nil, targetBin, "-listen", "[fd99::1]:8080")
	waitFor(t, 10*time.Second, "the IPv6 target", func() bool { return strings.Contains(p.out.String(), "ready") || p.exited() })
	r := newRigIn(t, ns, true, "ipv6_network = \"fd00:78::/64\"\nroute = [\"10.77.0.0/24\", \"fd99::/64\"]")
	c := r.connect(vpnUser)
	env := r.scriptEnv("connect", vpnUser)
	ip6 := env["IPV6_REMOTE"]
	if !strings.HasPrefix(ip6, "fd00:78::") || env["IPV6_LOCAL"] != "fd00:78::1" {
		t.Fatalf("connect script: IPV6_REMOTE=%q IPV6_LOCAL=%q", ip6, env["IPV6_LOCAL"])
	}
	waitFor(t, 10*time.Second, "the client's TUN to carry "+ip6, func() bool {
		o, _ := c.ns.output(5*time.Second, "ip", "-6", "addr", "show", "dev", "tun0")
		return strings.Contains(o, ip6+"/128")
	})
	if o, _ := r.ns.output(5*time.Second, "ip", "-6", "addr", "show", "dev", env["DEVICE"]); !strings.Contains(o, "peer "+ip6) {
		t.Fatalf("server device %s has no IPv6 peer %s:\n%s", env["DEVICE"], ip6, o)
	}
	o, code := c.ns.output(30*time.Second, "curl", "-sS", "--max-time", "10", "-g", "http://[fd99::1]:8080/hello")
	if code != 0 || !strings.Contains(o, "hello from [fd99::1]:8080") {
		routes, _ := r.ns.output(5*time.Second, "sh", "-c", "ip -6 route; ip -6 addr; ip -s link show "+env["DEVICE"]+"; sysctl net.ipv6.conf.all.forwarding")
		croutes, _ := c.ns.output(5*time.Second, "sh", "-c", "ip -6 route; ip -6 addr; ip -s link show tun0")
		t.Fatalf("HTTP over IPv6 through the device: exit %d %q\nserver:\n%s\nclient:\n%s", code, o, routes, croutes)
	}
	if !c.ping("fd99::1") {
		t.Fatal("no ICMPv6 echo reply from fd99::1")
	}
}

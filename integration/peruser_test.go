package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// datapathModes are the two datapaths a test runs in: kernel TUN (tun, as root through the privileged helper) and
// netstack.
var datapathModes = []struct {
	name string
	tun  bool
}{{"tun", true}, {"netstack", false}}

// TestPerUserOcservKeys: ocserv's per-user keys as the stock client sees them, in both datapaths. alice's file sets
// ipv4_dns, nbns, split_dns, hostname and no_udp, and an iroute: the client prints the matching X-CSTP headers, gets
// no DTLS offer, and route_add_cmd ran with ocserv's substitutions at the connect (in tun mode as root, through the
// privileged helper), route_del_cmd at the logout. carol's idle_timeout ends her idle tunnel.
func TestPerUserOcservKeys(t *testing.T) {
	for _, mode := range datapathModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			perUser := userFiles(t, map[string]string{
				vpnUser: "ipv4_dns = [\"10.77.0.53\"]\nnbns = [\"10.77.0.137\"]\nsplit_dns = [\"corp.test\"]\n" +
					"hostname = \"alice-pc\"\nno_udp = true\niroute = [\"10.66.0.0/24\"]\n",
				"carol": "idle_timeout = 3\n",
			})
			routeLog := filepath.Join(tempDir(t), "routes.log")
			if !mode.tun {
				chownAll(t, filepath.Dir(routeLog)) // the unprivileged server runs the commands itself
			}
			r := newRig(t, mode.tun, fmt.Sprintf(`route = ["10.77.0.0/24"]
config_per_user = %q
route_add_cmd = "echo add %%{R} %%{RI} dev=%%{D} %%{U} >> %s"
route_del_cmd = "echo del %%{RI} dev=%%{D} >> %s"
`, perUser, routeLog, routeLog))
			c := r.connect(vpnUser)
			out := c.proc.out.String()
			for _, h := range []string{"X-CSTP-DNS: 10.77.0.53", "X-CSTP-NBNS: 10.77.0.137", "X-CSTP-Split-DNS: corp.test",
				"X-CSTP-Hostname: alice-pc"} {
				if !strings.Contains(out, h) {
					t.Errorf("the client did not receive %q", h)
				}
			}
			if strings.Contains(out, "X-DTLS-") || dtlsUp.MatchString(out) {
				t.Errorf("no_udp: the server offered DTLS")
			}
			dev := r.scriptEnv("connect", vpnUser)["DEVICE"]
			read := func() string { b, _ := os.ReadFile(routeLog); return string(b) }
			add := fmt.Sprintf("add 10.66.0.0/255.255.255.0 10.66.0.0/24 dev=%s %s\n", dev, vpnUser) // %{U} quoted for the shell
			waitFor(t, 10*time.Second, "route_add_cmd to write "+add, func() bool { return strings.Contains(read(), add) })
			c.proc.stop(10 * time.Second)
			waitFor(t, 15*time.Second, "route_del_cmd to run", func() bool {
				return strings.Contains(read(), fmt.Sprintf("del 10.66.0.0/24 dev=%s\n", dev))
			})

			// carol: idle_timeout = 3 (data only: DPD and keepalives do not count).
			c2 := r.connect("carol", "--no-dtls")
			if !strings.Contains(c2.proc.out.String(), "X-CSTP-Idle-Timeout: 3") {
				t.Errorf("carol's client did not receive X-CSTP-Idle-Timeout: 3")
			}
			idle := regexp.MustCompile(`session disconnected.*user=carol.*reason="idle timeout"`)
			waitFor(t, 20*time.Second, "carol's idle tunnel to end", func() bool { return idle.MatchString(r.s.stderr.String()) })
		})
	}
}

// TestPerUserPools: ipv4_network (with ipv4_netmask) in a per-user file gives the user an address of its own pool,
// whose first address is the server's; a second network with explicit_ipv4 gives carol her fixed address there.
// Both move data through the tunnel, in both datapaths.
func TestPerUserPools(t *testing.T) {
	for _, mode := range datapathModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			perUser := userFiles(t, map[string]string{
				"bob":   "ipv4_network = \"10.88.0.0\"\nipv4_netmask = \"255.255.255.0\"\n",
				"carol": "ipv4_network = \"10.89.0.0/24\"\nexplicit_ipv4 = \"10.89.0.9\"\n",
			})
			r := newRig(t, mode.tun, fmt.Sprintf("route = [\"10.77.0.0/24\"]\nconfig_per_user = %q\n", perUser))
			for _, u := range []struct{ user, ip, gateway string }{
				{"bob", "10.88.0.", "10.88.0.1"}, {"carol", "10.89.0.9", "10.89.0.1"},
			} {
				c := r.connect(u.user)
				if !strings.HasPrefix(c.ip, u.ip) || c.ip == u.gateway {
					t.Errorf("%s got %s, want an address of %s", u.user, c.ip, u.ip)
				}
				if !strings.Contains(c.proc.out.String(), "X-CSTP-Netmask: 255.255.255.0") {
					t.Errorf("%s: no X-CSTP-Netmask: 255.255.255.0", u.user)
				}
				env := r.scriptEnv("connect", u.user)
				if env["IP_LOCAL"] != u.gateway || env["IP_REMOTE"] != c.ip {
					t.Errorf("%s: connect script saw IP_LOCAL=%s IP_REMOTE=%s, want %s and %s", u.user,
						env["IP_LOCAL"], env["IP_REMOTE"], u.gateway, c.ip)
				}
				checkDownload(t, c.ns, "", "http://10.77.0.1:8080", 1<<20, 7)
				checkUpload(t, c.ns, "", "http://10.77.0.1:8080", 1<<20, 8)
			}
		})
	}
}

// userFiles writes a config_per_user directory, files by user name, readable by the unprivileged server.
func userFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := tempDir(t)
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	chownAll(t, dir)
	return dir
}

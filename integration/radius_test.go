package integration

// RADIUS against Debian's FreeRADIUS, started by the test on loopback inside the test's namespace with a
// configuration directory of its own: password login with the stock client, an Access-Challenge answered on the
// client's stdin, the RADIUS-assigned addresses (Framed-IP-Address, Framed-IPv6-Address), a reject, and
// accounting Start and Stop in FreeRADIUS's detail file with byte counts at least what the test moved.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	radiusSecret   = "it-radius-secret"
	radiusAuthPort = 18120
	radiusAcctPort = 18130
)

// freeradiusConf is a minimal radiusd.conf: PAP over a users file, an Access-Challenge for carol, accounting to a
// detail file. %[1]s is the directory.
const freeradiusConf = `prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = %[1]s
sbindir = /usr/sbin
logdir = %[1]s
raddbdir = %[1]s
radacctdir = %[1]s
name = freeradius
confdir = %[1]s
modconfdir = %[1]s
run_dir = %[1]s
db_dir = %[1]s
libdir = /usr/lib/freeradius
pidfile = %[1]s/radiusd.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {
	destination = stdout
	auth = yes
}
security {
	allow_core_dumps = no
	allow_vulnerable_openssl = yes
}
client localhost {
	ipaddr = 127.0.0.1
	secret = ` + radiusSecret + `
	require_message_authenticator = yes
}
modules {
	pap {
	}
	always handled {
		rcode = handled
	}
	always reject {
		rcode = reject
	}
	always ok {
		rcode = ok
	}
	files {
		filename = %[1]s/users
	}
	detail {
		filename = %[1]s/detail
		permissions = 0600
		header = "%%t"
	}
}
server default {
listen {
	type = auth
	ipaddr = 127.0.0.1
	port = %[2]d
}
listen {
	type = acct
	ipaddr = 127.0.0.1
	port = %[3]d
}
authorize {
	if (&User-Name == "carol") {
		if (!&State) {
			if (&User-Password == "pw") {
				update reply {
					&Reply-Message := "Enter the code from your token"
					&State := 0x6f63676174652d31
				}
				update control {
					&Response-Packet-Type := Access-Challenge
				}
				handled
			}
			reject
		}
		if (&State == 0x6f63676174652d31 && &User-Password == "123456") {
			update control {
				&Auth-Type := Accept
			}
			ok
		}
		else {
			reject
		}
	}
	else {
		files
		pap
	}
}
authenticate {
	Auth-Type PAP {
		pap
	}
}
preacct {
}
accounting {
	detail
}
post-auth {
}
}
`

// startFreeRADIUS writes a configuration directory and runs freeradius -X in ns; it returns the directory.
func startFreeRADIUS(t *testing.T, ns *netns, users string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"radiusd.conf": fmt.Sprintf(freeradiusConf, dir, radiusAuthPort, radiusAcctPort),
		"dictionary":   "$INCLUDE /usr/share/freeradius/dictionary\n",
		"users":        users,
	}
	for name, s := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	p := ns.start(nil, "freeradius", "-X", "-d", dir)
	t.Cleanup(func() {
		p.stop(5 * time.Second)
		if t.Failed() {
			t.Logf("freeradius output:\n%s", p.out.String())
		}
	})
	waitFor(t, 30*time.Second, "freeradius to be ready", func() bool {
		return strings.Contains(p.out.String(), "Ready to process requests") || p.exited()
	})
	if p.exited() {
		t.Fatalf("freeradius exited:\n%s", p.out.String())
	}
	return dir
}

// radcliFiles writes a radcli configuration and servers file into the server's directory.
func radcliFiles(t *testing.T, dir string) {
	t.Helper()
	conf := fmt.Sprintf("nas-identifier ocgate-it\nauthserver 127.0.0.1:%d\nacctserver 127.0.0.1:%d\n"+
		"servers radius.servers\ndictionary radius.dictionary\nradius_timeout 2\nradius_retries 2\n",
		radiusAuthPort, radiusAcctPort)
	for name, s := range map[string]string{
		"radiusclient.conf": conf, "radius.servers": "127.0.0.1 " + radiusSecret + "\n", "radius.dictionary": "",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRadius(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	ns.startTarget()
	rdir := startFreeRADIUS(t, ns, `alice Cleartext-Password := "pw"
	Framed-IP-Address = 10.250.77.77,
	Framed-IPv6-Address = fd00:77::77,
	Framed-Route = "10.77.0.0/24 0.0.0.0 1",
	Acct-Interim-Interval = 600
`)
	dir := newServerDir(t)
	radcliFiles(t, dir)
	s := startServer(t, ns, dir, `auth = ["radius[config=radiusclient.conf,groupconfig=true]"]
acct = "radius[config=radiusclient.conf]"
ipv6_network = "fd00:77::/64"`)

	t.Run("password login gets the RADIUS addresses, accounting start and stop", func(t *testing.T) {
		c := connect(t, s, "alice", "pw")
		if c.ip != "10.250.77.77" {
			t.Fatalf("assigned %s, want Framed-IP-Address 10.250.77.77", c.ip)
		}
		if out := c.proc.out.String(); !strings.Contains(out, "X-CSTP-Address-IP6: fd00:77::77/128") {
			t.Fatalf("the client was not given Framed-IPv6-Address fd00:77::77:\n%s", out)
		}
		const down, up = 3 << 20, 2 << 20
		download(t, c, down, 3)
		upload(t, c, up, 4)
		if code := c.proc.stop(10 * time.Second); code < 0 {
			t.Logf("openconnect exit %d", code)
		}
		detail := filepath.Join(rdir, "detail")
		var text string
		waitFor(t, 30*time.Second, "the accounting Stop in the detail file", func() bool {
			b, _ := os.ReadFile(detail)
			text = string(b)
			return strings.Contains(text, "Acct-Status-Type = Stop")
		})
		if !strings.Contains(text, "Acct-Status-Type = Start") {
			t.Errorf("no accounting Start in the detail file:\n%s", text)
		}
		stop := text[strings.LastIndex(text, "Acct-Status-Type = Stop"):]
		in, out := detailInt(t, stop, "Acct-Input-Octets"), detailInt(t, stop, "Acct-Output-Octets")
		if in < up || out < down {
			t.Errorf("Stop reports input %d, output %d octets; the test moved %d up, %d down", in, out, up, down)
		}
		for _, attr := range []string{"Acct-Session-Time", "Acct-Terminate-Cause = User-Request", `User-Name = "alice"`,
			"Framed-IP-Address = 10.250.77.77", "Framed-IPv6-Address = fd00:77::77", `NAS-Identifier = "ocgate-it"`} {
			if !strings.Contains(stop, attr) {
				t.Errorf("the Stop record lacks %s:\n%s", attr, stop)
			}
		}
	})
	t.Run("challenge answered on stdin", func(t *testing.T) {
		c := launchWith(t, s, "pw\n123456\n", "-u", "carol", "--passwd-on-stdin")
		c.waitConfigured(t)
		if !strings.Contains(c.proc.out.String(), "Enter the code from your token") {
			t.Errorf("the client did not show the Reply-Message:\n%s", c.proc.out.String())
		}
		c.proc.stop(10 * time.Second)
	})
	t.Run("wrong challenge answer refused", func(t *testing.T) {
		refused(t, launchWith(t, s, "pw\n999999\n", "-u", "carol", "--passwd-on-stdin", "--non-inter"))
	})
	t.Run("reject refused", func(t *testing.T) {
		refused(t, launch(t, ns, s.pin, "alice", "wrong", s.url()))
		waitFor(t, 10*time.Second, "the reject in the server log", func() bool {
			return strings.Contains(s.stderr.String(), "rejected by the RADIUS server")
		})
	})
	if strings.Contains(s.stderr.String(), radiusSecret) {
		t.Errorf("the shared secret appears in the server log")
	}
}

// detailInt reads "NAME = N" from a detail record.
func detailInt(t *testing.T, record, name string) int {
	t.Helper()
	m := regexp.MustCompile(name + ` = (\d+)`).FindStringSubmatch(record)
	if m == nil {
		t.Fatalf("no %s in:\n%s", name, record)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestRadiusAccountingDown: an accounting server that does not answer refuses the session at its start, as ocserv
// does, even though the login itself (a password file here) succeeded.
func TestRadiusAccountingDown(t *testing.T) {
	t.Parallel()
	ns := newNetns(t)
	dir := newServerDir(t)
	conf := "acctserver 127.0.0.1:18199\nservers radius.servers\nradius_timeout 1\nradius_retries 1\n"
	os.WriteFile(filepath.Join(dir, "radiusclient.conf"), []byte(conf), 0o600)
	os.WriteFile(filepath.Join(dir, "radius.servers"), []byte("127.0.0.1 "+radiusSecret+"\n"), 0o600)
	s := startServer(t, ns, dir, `acct = "radius[config=radiusclient.conf]"`)
	refused(t, launch(t, ns, s.pin, vpnUser, vpnPass, s.url()))
	waitFor(t, 10*time.Second, "the refusal in the server log", func() bool {
		return strings.Contains(s.stderr.String(), "accounting start failed; session refused")
	})
}

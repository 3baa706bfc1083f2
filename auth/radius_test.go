package auth

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2866"
	"layeh.com/radius/rfc2869"
)

const testSecret = "s3cret-never-logged"

// fakeRadius serves handler on a loopback UDP port and returns its address.
func fakeRadius(t *testing.T, handler radius.HandlerFunc) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &radius.PacketServer{Handler: handler, SecretSource: radius.StaticSecretSource([]byte(testSecret))}
	go srv.Serve(pc)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return pc.LocalAddr().String()
}

// silentServer is a UDP port that never answers.
func silentServer(t *testing.T) string {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc.LocalAddr().String()
}

// validMA reports whether an Access-Request carries a correct Message-Authenticator.
func validMA(p *radius.Packet) bool {
	got, err := rfc2869.MessageAuthenticator_Lookup(p)
	if err != nil {
		return false
	}
	cp := *p
	cp.Attributes = append(radius.Attributes(nil), p.Attributes...)
	rfc2869.MessageAuthenticator_Set(&cp, make([]byte, 16))
	wire, err := cp.MarshalBinary()
	if err != nil {
		return false
	}
	h := hmac.New(md5.New, []byte(testSecret))
	h.Write(wire)
	return hmac.Equal(h.Sum(nil), got)
}

// challengeHandler accepts alice/pw after the answer "42" to a challenge, with attributes; rejects the rest.
func challengeHandler(t *testing.T) radius.HandlerFunc {
	return func(w radius.ResponseWriter, r *radius.Request) {
		if !validMA(r.Packet) {
			t.Errorf("Access-Request without a valid Message-Authenticator")
			return
		}
		if rfc2866.AcctSessionID_GetString(r.Packet) == "" || rfc2865.CallingStationID_GetString(r.Packet) != "192.0.2.7" {
			t.Errorf("Access-Request lacks Acct-Session-Id or Calling-Station-Id")
		}
		user, pw := rfc2865.UserName_GetString(r.Packet), rfc2865.UserPassword_GetString(r.Packet)
		state := rfc2865.State_GetString(r.Packet)
		switch {
		case user == "alice" && pw == "pw" && state == "":
			resp := r.Response(radius.CodeAccessChallenge)
			rfc2865.ReplyMessage_SetString(resp, "What is the answer?")
			rfc2865.State_SetString(resp, "st-1")
			w.Write(resp)
		case user == "alice" && pw == "42" && state == "st-1":
			resp := r.Response(radius.CodeAccessAccept)
			rfc2865.FramedIPAddress_Set(resp, net.IPv4(10, 9, 0, 77))
			rfc2865.FramedRoute_AddString(resp, "10.50.0.0/16 0.0.0.0 1")
			rfc2865.FramedRoute_AddString(resp, "10.60.0.0 255.255.0.0")
			rfc2865.SessionTimeout_Set(resp, 3600)
			rfc2865.IdleTimeout_Set(resp, 600)
			rfc2869.AcctInterimInterval_Set(resp, 60)
			rfc2865.Class_AddString(resp, "OU=staff;admins;")
			w.Write(resp)
		default:
			w.Write(r.Response(radius.CodeAccessReject))
		}
	}
}

func radiusModule(t *testing.T, servers ...string) *Module {
	t.Helper()
	var rs []RadiusServer
	for _, s := range servers {
		rs = append(rs, RadiusServer{Addr: s, Secret: []byte(testSecret)})
	}
	rm, err := NewRadiusMethod(&RadiusConfig{AuthServers: rs, Timeout: 100 * time.Millisecond, Retries: 2}, "vpn-test", true)
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewModule(ModuleConfig{Chains: []Chain{{Radius: rm}}})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func step(m *Module, id string, answers map[string]string) Reply {
	return m.Step(context.Background(), Request{LoginID: id, Remote: "192.0.2.7", Answers: answers})
}

func TestRadiusLogin(t *testing.T) {
	addr := fakeRadius(t, challengeHandler(t))
	t.Run("challenge answered, attributes granted", func(t *testing.T) {
		m := radiusModule(t, silentServer(t), addr) // the first server never answers: failover
		r := step(m, "", map[string]string{"username": "alice", "password": "pw"})
		if r.Verdict != Continue || r.Form.ID != "challenge" || r.Form.Message != "What is the answer?" {
			t.Fatalf("after the password: %+v %+v, want the challenge form", r, r.Form)
		}
		r = step(m, r.LoginID, map[string]string{"secondary_password": "42"})
		if r.Verdict != Success {
			t.Fatalf("after the answer: %+v, want Success", r)
		}
		g := r.Identity.Grants
		want := Grants{IPv4: netip.MustParseAddr("10.9.0.77"),
			Routes:         []netip.Prefix{netip.MustParsePrefix("10.50.0.0/16"), netip.MustParsePrefix("10.60.0.0/16")},
			SessionTimeout: time.Hour, IdleTimeout: 10 * time.Minute, InterimInterval: time.Minute}
		if g.IPv4 != want.IPv4 || !equalPrefixes(g.Routes, want.Routes) || g.SessionTimeout != want.SessionTimeout ||
			g.IdleTimeout != want.IdleTimeout || g.InterimInterval != want.InterimInterval || len(g.AcctSessionID) != 16 {
			t.Errorf("grants = %+v, want %+v", g, want)
		}
		if strings.Join(r.Identity.Groups, ",") != "staff,admins" {
			t.Errorf("groups = %q, want staff, admins (groupconfig)", r.Identity.Groups)
		}
	})
	t.Run("wrong challenge answer is a failure and back to the password", func(t *testing.T) {
		m := radiusModule(t, addr)
		r := step(m, "", map[string]string{"username": "alice", "password": "pw"})
		r = step(m, r.LoginID, map[string]string{"secondary_password": "41"})
		if r.Verdict != Failure || r.Form.ID != "main" {
			t.Fatalf("%+v, want Failure with the password form", r)
		}
	})
	t.Run("reject", func(t *testing.T) {
		m := radiusModule(t, addr)
		r := step(m, "", map[string]string{"username": "bob", "password": "pw"})
		if r.Verdict != Failure || r.Reason != "rejected by the RADIUS server" {
			t.Fatalf("%+v, want Failure", r)
		}
	})
	t.Run("no server answers", func(t *testing.T) {
		m := radiusModule(t, silentServer(t), silentServer(t))
		start := time.Now()
		r := step(m, "", map[string]string{"username": "alice", "password": "pw"})
		if r.Verdict != Failure || !strings.Contains(r.Reason, "no server answered") {
			t.Fatalf("%+v, want Failure: no server answered", r)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("took %v; two servers × 2 tries × 100 ms should not", d)
		}
		if strings.Contains(r.Reason, testSecret) {
			t.Errorf("the reason shows the secret: %s", r.Reason)
		}
	})
}

func equalPrefixes(a, b []netip.Prefix) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestRadiusAccounting(t *testing.T) {
	got := make(chan *radius.Packet, 4)
	addr := fakeRadius(t, func(w radius.ResponseWriter, r *radius.Request) {
		got <- r.Packet
		w.Write(r.Response(radius.CodeAccountingResponse))
	})
	a, err := NewRadiusAccounting(&RadiusConfig{Timeout: 100 * time.Millisecond, Retries: 1,
		AcctServers: []RadiusServer{{Addr: silentServer(t), Secret: []byte(testSecret)}, {Addr: addr, Secret: []byte(testSecret)}}})
	if err != nil {
		t.Fatal(err)
	}
	rec := AcctRecord{Status: AcctStop, SessionID: "abc", User: "alice", Remote: netip.MustParseAddr("192.0.2.7"),
		IPv4: netip.MustParseAddr("10.9.0.77"), RxBytes: 5<<32 + 7, TxBytes: 9, Duration: 90 * time.Second,
		Cause: CauseUserRequest, Class: [][]byte{[]byte("c1")}}
	if err := a.Send(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	p := <-got
	checks := []struct {
		name      string
		got, want any
	}{
		{"status", rfc2866.AcctStatusType_Get(p), rfc2866.AcctStatusType_Value_Stop},
		{"session id", rfc2866.AcctSessionID_GetString(p), "abc"},
		{"input octets", rfc2866.AcctInputOctets_Get(p), rfc2866.AcctInputOctets(7)},
		{"input gigawords", rfc2869.AcctInputGigawords_Get(p), rfc2869.AcctInputGigawords(5)},
		{"output octets", rfc2866.AcctOutputOctets_Get(p), rfc2866.AcctOutputOctets(9)},
		{"session time", rfc2866.AcctSessionTime_Get(p), rfc2866.AcctSessionTime(90)},
		{"cause", rfc2866.AcctTerminateCause_Get(p), rfc2866.AcctTerminateCause_Value_UserRequest},
		{"class", rfc2865.Class_GetString(p), "c1"},
		{"framed ip", rfc2865.FramedIPAddress_Get(p).String(), "10.9.0.77"},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if c.got != c.want {
				t.Errorf("got %v, want %v", c.got, c.want)
			}
		})
	}
	t.Run("no server answers", func(t *testing.T) {
		a, _ := NewRadiusAccounting(&RadiusConfig{Timeout: 50 * time.Millisecond, Retries: 1,
			AcctServers: []RadiusServer{{Addr: silentServer(t), Secret: []byte(testSecret)}}})
		if err := a.Send(context.Background(), rec); !errors.Is(err, errRadiusUnanswered) {
			t.Fatalf("err = %v, want errRadiusUnanswered", err)
		}
	})
}

func TestLoadRadiusConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("servers", "# host secret\nradius1 sec1\n127.0.0.1:1645 sec2\n")
	write("dictionary", "")
	conf := write("radiusclient.conf", "nas-identifier vpn1\nauthserver radius1, 127.0.0.1:1645\n"+
		"acctserver radius1:1813:inline\nservers servers\ndictionary dictionary\nradius_timeout 3\nradius_retries 2\nbindaddr *\n")
	c, err := LoadRadiusConfig(conf)
	if err != nil {
		t.Fatal(err)
	}
	if c.NASIdentifier != "vpn1" || c.Timeout != 3*time.Second || c.Retries != 2 || len(c.AuthServers) != 2 ||
		c.AuthServers[0].Addr != "radius1:1812" || string(c.AuthServers[0].Secret) != "sec1" ||
		string(c.AuthServers[1].Secret) != "sec2" || string(c.AcctServers[0].Secret) != "inline" {
		t.Errorf("parsed %+v", c)
	}
	t.Run("missing secret", func(t *testing.T) {
		bad := write("bad.conf", "authserver other\nservers servers\ndictionary dictionary\n")
		if _, err := LoadRadiusConfig(bad); err == nil || !strings.Contains(err.Error(), "no secret") {
			t.Errorf("err = %v, want no secret", err)
		}
	})
}

package auth

// RADIUS authentication (ocserv's radius[config=FILE,groupconfig=true,nas-identifier=NAME]):
//
//	password form ──▶ Access-Request (User-Name, User-Password (PAP), NAS-IP-Address or NAS-Identifier,
//	                  Calling-Station-Id, Acct-Session-Id, Message-Authenticator) ──▶ each server in turn
//	                  until one answers (radius_retries tries of radius_timeout each)
//	   Access-Accept    ──▶ the login's identity, with what the server assigned (Grants)
//	   Access-Reject    ──▶ Failure, the password form again
//	   Access-Challenge ──▶ a "challenge" form showing Reply-Message; its answer goes in a new Access-Request
//	                        with the server's State echoed, and may be challenged again
//
// Shared secrets stay in RadiusServer values and are never logged.

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2866"
	"layeh.com/radius/rfc2869"
	"layeh.com/radius/rfc3162"
	"layeh.com/radius/rfc6911"
)

// Grants are what an authentication server assigned to a session (RADIUS reply attributes). The zero value
// assigns nothing.
type Grants struct {
	IPv4            netip.Addr     // Framed-IP-Address: the session's address
	IPv6            netip.Prefix   // Framed-IPv6-Address (a /128) or Framed-IPv6-Prefix
	Routes          []netip.Prefix // Framed-Route, Framed-IPv6-Route: routes pushed to the client
	SessionTimeout  time.Duration  // Session-Timeout
	IdleTimeout     time.Duration  // Idle-Timeout
	InterimInterval time.Duration  // Acct-Interim-Interval
	Class           [][]byte       // Class attributes, echoed in accounting requests (RFC 2865 §5.25)
	AcctSessionID   string         // the Acct-Session-Id the login was sent with; accounting reuses it
}

// radiusClient sends requests to a list of servers with failover.
type radiusClient struct {
	servers []RadiusServer
	timeout time.Duration // per try
	retries int           // tries per server
}

// errRadiusUnanswered is a request no server answered.
var errRadiusUnanswered = errors.New("radius: no server answered")

// exchange sends the packet built by build (for each server's secret) to the servers in turn and returns the first
// authentic answer.
func (c *radiusClient) exchange(ctx context.Context, build func(secret []byte) (*radius.Packet, error)) (*radius.Packet, error) {
	if len(c.servers) == 0 {
		return nil, errNoRadiusServer
	}
	var errs []error
	for _, srv := range c.servers {
		p, err := build(srv.Secret)
		if err != nil {
			return nil, err
		}
		cl := radius.Client{Retry: c.timeout, MaxPacketErrors: 10}
		tctx, cancel := context.WithTimeout(ctx, c.timeout*time.Duration(c.retries))
		resp, err := cl.Exchange(tctx, p, srv.Addr)
		cancel()
		if err == nil {
			if resp.Code == radius.CodeAccessAccept || resp.Code == radius.CodeAccessReject ||
				resp.Code == radius.CodeAccessChallenge {
				if err := checkMessageAuthenticator(resp, p.Authenticator, srv.Secret); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", srv.Addr, err))
					continue
				}
			}
			return resp, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", srv.Addr, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("%w: %w", errRadiusUnanswered, errors.Join(errs...))
}

// signRequest adds a Message-Authenticator (RFC 3579 §3.2) to an Access-Request: HMAC-MD5 of the packet with the
// attribute zeroed, keyed with the secret. The packet's Request Authenticator is already set (radius.New), so the
// encoding signed is the one sent.
func signRequest(p *radius.Packet) error {
	rfc2869.MessageAuthenticator_Set(p, make([]byte, md5.Size))
	wire, err := p.Encode()
	if err != nil {
		return err
	}
	h := hmac.New(md5.New, p.Secret)
	h.Write(wire)
	return rfc2869.MessageAuthenticator_Set(p, h.Sum(nil))
}

// checkMessageAuthenticator verifies a response's Message-Authenticator when it has one: the HMAC over the packet
// with the request's authenticator in place of its own and the attribute zeroed.
func checkMessageAuthenticator(resp *radius.Packet, reqAuth [16]byte, secret []byte) error {
	got, err := rfc2869.MessageAuthenticator_Lookup(resp)
	if err != nil {
		return nil // absent: the Response Authenticator, already checked, covers the packet
	}
	cp := *resp
	cp.Attributes = append(radius.Attributes(nil), resp.Attributes...)
	cp.Authenticator = reqAuth
	rfc2869.MessageAuthenticator_Set(&cp, make([]byte, md5.Size))
	wire, err := cp.MarshalBinary()
	if err != nil {
		return err
	}
	h := hmac.New(md5.New, secret)
	h.Write(wire)
	if !hmac.Equal(h.Sum(nil), got) {
		return errors.New("wrong Message-Authenticator")
	}
	return nil
}

// RadiusMethod checks passwords against RADIUS servers (the radius auth method).
type RadiusMethod struct {
	client        radiusClient
	nasIdentifier string // nas-identifier=, else the radcli file's
	groupConfig   bool   // groupconfig=true: Class "OU=g1;g2" names the user's groups
}

// NewRadiusMethod returns the radius method of cfg; nasID overrides the file's nas-identifier.
func NewRadiusMethod(cfg *RadiusConfig, nasID string, groupConfig bool) (*RadiusMethod, error) {
	if len(cfg.AuthServers) == 0 {
		return nil, errors.New("radius: the configuration names no authserver")
	}
	if nasID == "" {
		nasID = cfg.NASIdentifier
	}
	return &RadiusMethod{
		client:        radiusClient{servers: cfg.AuthServers, timeout: cfg.Timeout, retries: cfg.Retries},
		nasIdentifier: nasID, groupConfig: groupConfig,
	}, nil
}

// radiusAnswer is the outcome of one Access-Request.
type radiusAnswer struct {
	code     radius.Code
	message  string // Reply-Message
	state    []byte // Access-Challenge: the State to echo
	identity Identity
}

// ask sends one Access-Request for user with password (the password or the answer to a challenge).
func (m *RadiusMethod) ask(ctx context.Context, user, password string, state []byte, remote, acctID string) (radiusAnswer, error) {
	resp, err := m.client.exchange(ctx, func(secret []byte) (*radius.Packet, error) {
		p := radius.New(radius.CodeAccessRequest, secret)
		if err := rfc2865.UserName_SetString(p, user); err != nil {
			return nil, err
		}
		if err := rfc2865.UserPassword_SetString(p, password); err != nil {
			return nil, err
		}
		rfc2865.ServiceType_Set(p, rfc2865.ServiceType_Value_FramedUser)
		rfc2865.FramedProtocol_Set(p, rfc2865.FramedProtocol_Value_PPP)
		rfc2865.NASPortType_Set(p, rfc2865.NASPortType_Value_Virtual)
		addNASAttrs(p, m.nasIdentifier)
		if remote != "" {
			rfc2865.CallingStationID_SetString(p, remote)
		}
		if acctID != "" {
			rfc2866.AcctSessionID_SetString(p, acctID)
		}
		if state != nil {
			rfc2865.State_Set(p, state)
		}
		return p, signRequest(p)
	})
	if err != nil {
		return radiusAnswer{}, err
	}
	a := radiusAnswer{code: resp.Code, state: rfc2865.State_Get(resp)}
	var msgs []string
	replies, _ := rfc2865.ReplyMessage_GetStrings(resp)
	for _, v := range replies {
		msgs = append(msgs, strings.TrimSpace(v))
	}
	a.message = strings.Join(msgs, " ")
	if resp.Code == radius.CodeAccessAccept {
		a.identity = m.identity(resp, user, acctID)
	}
	return a, nil
}

// addNASAttrs names the NAS: NAS-Identifier when one is configured, else NAS-IP-Address of the host (RFC 2865
// wants one of the two).
func addNASAttrs(p *radius.Packet, nasID string) {
	if nasID != "" {
		rfc2865.NASIdentifier_SetString(p, nasID)
		return
	}
	rfc2865.NASIPAddress_Set(p, hostIPv4())
}

// hostIPv4 is the host's first non-loopback IPv4 address, else 127.0.0.1.
func hostIPv4() net.IP {
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			return n.IP.To4()
		}
	}
	return net.IPv4(127, 0, 0, 1).To4()
}

// identity reads an Access-Accept.
func (m *RadiusMethod) identity(resp *radius.Packet, user, acctID string) Identity {
	id := Identity{User: user}
	g := &id.Grants
	g.AcctSessionID = acctID
	if ip, err := rfc2865.FramedIPAddress_Lookup(resp); err == nil {
		if a, ok := netip.AddrFromSlice(ip.To4()); ok && !ip.Equal(net.IPv4(255, 255, 255, 254)) &&
			!ip.Equal(net.IPv4bcast) { // 255.255.255.254/255: "the NAS chooses"
			g.IPv4 = a
		}
	}
	if ip, err := rfc6911.FramedIPv6Address_Lookup(resp); err == nil {
		if a, ok := netip.AddrFromSlice(ip); ok && a.Is6() {
			g.IPv6 = netip.PrefixFrom(a, 128)
		}
	} else if pfx, err := rfc3162.FramedIPv6Prefix_Lookup(resp); err == nil {
		if p, err := netip.ParsePrefix(pfx.String()); err == nil {
			g.IPv6 = p
		}
	}
	routes, _ := rfc2865.FramedRoute_GetStrings(resp)
	routes6, _ := rfc3162.FramedIPv6Route_GetStrings(resp)
	for _, r := range append(routes, routes6...) {
		if p, ok := parseFramedRoute(r); ok {
			g.Routes = append(g.Routes, p)
		}
	}
	if v, err := rfc2865.SessionTimeout_Lookup(resp); err == nil {
		g.SessionTimeout = time.Duration(v) * time.Second
	}
	if v, err := rfc2865.IdleTimeout_Lookup(resp); err == nil {
		g.IdleTimeout = time.Duration(v) * time.Second
	}
	if v, err := rfc2869.AcctInterimInterval_Lookup(resp); err == nil {
		g.InterimInterval = time.Duration(v) * time.Second
	}
	classes, _ := rfc2865.Class_Gets(resp)
	for _, c := range classes {
		g.Class = append(g.Class, c)
		if m.groupConfig {
			id.Groups = append(id.Groups, classGroups(string(c))...)
		}
	}
	return id
}

// parseFramedRoute reads the destination of a Framed-Route: "10.1.0.0/16 0.0.0.0 1", "10.1.0.0 255.255.0.0",
// "2001:db8::/32 :: 1".
func parseFramedRoute(s string) (netip.Prefix, bool) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return netip.Prefix{}, false
	}
	if p, err := netip.ParsePrefix(f[0]); err == nil {
		return p.Masked(), true
	}
	a, err := netip.ParseAddr(f[0])
	if err != nil {
		return netip.Prefix{}, false
	}
	if len(f) > 1 && a.Is4() {
		if m := net.ParseIP(f[1]).To4(); m != nil {
			if ones, bits := net.IPMask(m).Size(); bits == 32 {
				return netip.PrefixFrom(a, ones).Masked(), true
			}
		}
	}
	return netip.PrefixFrom(a, a.BitLen()), true
}

// classGroups reads groups from a Class attribute as ocserv does: "OU=group1;group2" (tolerating a trailing ';').
// Any other Class names no group.
func classGroups(c string) []string {
	rest, ok := strings.CutPrefix(c, "OU=")
	if !ok {
		return nil
	}
	var out []string
	for g := range strings.SplitSeq(rest, ";") {
		if g = strings.TrimSpace(g); g != "" {
			out = append(out, g)
		}
	}
	return out
}

package protocol

// When ocserv's connect, disconnect and host-update scripts run, and what they see.
//
// ocserv runs them per tunnel connection (each worker has its own TUN). Here a device belongs to the session, which
// outlives its connections (cookie_timeout), but the scripts still follow the connections, so that rules keyed on
// the client's real address (IP_REAL) follow a roaming client:
//
//	connect      each CONNECT, after the session's device exists and before the client gets 200 CONNECTED;
//	             a non-zero exit refuses the session (the client sees "401 Cookie is not acceptable", as with ocserv)
//	host-update  after connect, when the client announced a host name (X-CSTP-Hostname)
//	disconnect   before the connect of a reconnect or a takeover (with the IP_REAL the previous connect saw), and
//	             when the session ends (logout, cookie expiry, session timeout, shutdown), with its byte counts;
//	             not after a connect script that refused the session. A connection that is lost without a
//	             reconnect gets its disconnect when the session ends (cookie_timeout later), not at once as in ocserv.
//
//	route-add    route_add_cmd, once per iroute, when the session's device exists (its first CONNECT), before
//	             connect; a failure is logged and the session goes on (ocserv's apply_iroutes)
//	route-del    route_del_cmd, once per iroute, when a session whose route-add commands ran ends
//
// The environment is ocserv's (src/main-user.c): routes in its "network/dotted-mask" form for IPv4, each entry
// followed by a space.

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ScriptRunner runs the script configured for reason ("connect", "disconnect", "host-update") with env
// (NAME=value, ocserv's names; REASON is added by the runner). It returns nil when no script is configured, and an
// error when the script fails or exits non-zero.
type ScriptRunner interface {
	RunScript(ctx context.Context, reason string, env []string) error
}

// scriptInfo is what the environment is built from, captured when the script is due.
type scriptInfo struct {
	sess        *Session
	device      string
	local       netip.Addr // the server's in-pool address
	local6      netip.Addr // and its IPv6 one (the session's IPv6 pool's gateway)
	bits6       int        // the length of the client's IPv6 prefix
	addr        netip.Addr // the client's tunnel address
	addr6       netip.Addr // and its IPv6 address, if any
	remote      netip.AddrPort
	localReal   netip.AddrPort // the server end of the client's TCP connection
	hostname    string
	deviceType  string
	platform    string
	rx, tx      uint64
	connectedAt time.Time
}

func (s *Server) scriptEnv(in scriptInfo, reason string) []string {
	sess := in.sess
	env := []string{
		"ID=" + strconv.FormatUint(sess.ID, 10),
		"VHOST=default",
		"USERNAME=" + sess.User,
		"GROUPNAME=" + firstOr(sess.Groups, ""),
		"DEVICE=" + in.device,
		"USER_AGENT=" + sess.UserAgent,
		"DEVICE_TYPE=" + in.deviceType,
		"DEVICE_PLATFORM=" + in.platform,
		"HOSTNAME=" + in.hostname,
		"REMOTE_HOSTNAME=" + in.hostname,
	}
	if in.remote.IsValid() {
		env = append(env, "IP_REAL="+in.remote.Addr().Unmap().String())
	}
	if in.localReal.IsValid() {
		env = append(env, "IP_REAL_LOCAL="+in.localReal.Addr().Unmap().String())
	}
	if in.local.IsValid() {
		env = append(env, "IP_LOCAL="+in.local.String())
	}
	if in.addr.IsValid() {
		env = append(env, "IP_REMOTE="+in.addr.String())
	}
	if in.addr6.IsValid() {
		env = append(env, "IPV6_LOCAL="+in.local6.String(), "IPV6_REMOTE="+in.addr6.String(),
			"IPV6_PREFIX="+strconv.Itoa(in.bits6))
	}
	pc := sess.pcfg
	env = appendPrefixes(env, "OCSERV_ROUTES", pc.routes)
	env = appendPrefixes(env, "OCSERV_NO_ROUTES", pc.noRoutes)
	var dns4, dns6, dnsAll strings.Builder
	for _, d := range pc.dns {
		dnsAll.WriteString(d.String() + " ")
		if d.Is4() {
			dns4.WriteString(d.String() + " ")
		} else {
			dns6.WriteString(d.String() + " ")
		}
	}
	env = appendNonEmpty(env, "OCSERV_DNS", dnsAll.String())
	env = appendNonEmpty(env, "OCSERV_DNS4", dns4.String())
	env = appendNonEmpty(env, "OCSERV_DNS6", dns6.String())
	if pc.restrict {
		env = append(env, "OCSERV_RESTRICT_TO_ROUTES=1")
	}
	env = appendPortsEnv(env, sess.ucfg)
	if reason == "disconnect" {
		env = append(env,
			"STATS_BYTES_IN="+strconv.FormatUint(in.rx, 10),
			"STATS_BYTES_OUT="+strconv.FormatUint(in.tx, 10))
		if !in.connectedAt.IsZero() {
			env = append(env, "STATS_DURATION="+strconv.FormatInt(int64(time.Since(in.connectedAt)/time.Second), 10))
		}
	}
	return env
}

// appendPrefixes adds NAME, NAME4 and NAME6 as ocserv exports them.
func appendPrefixes(env []string, name string, ps []netip.Prefix) []string {
	var all, v4, v6 strings.Builder
	for _, p := range ps {
		var s string
		if p.Addr().Is4() {
			s = dottedRoute(p)
			v4.WriteString(s + " ")
		} else {
			s = p.Masked().String()
			v6.WriteString(s + " ")
		}
		all.WriteString(s + " ")
	}
	env = appendNonEmpty(env, name+"4", v4.String())
	env = appendNonEmpty(env, name+"6", v6.String())
	return appendNonEmpty(env, name, all.String())
}

func appendNonEmpty(env []string, name, v string) []string {
	if v == "" {
		return env
	}
	return append(env, name+"="+v)
}

func firstOr(ss []string, def string) string {
	if len(ss) > 0 {
		return ss[0]
	}
	return def
}

// runRouteCmds runs route_add_cmd (reason "route-add") or route_del_cmd ("route-del") for each of the session's
// iroutes. The runner fills in the command from ROUTE, DEVICE, USERNAME and GROUPNAME.
func (s *Server) runRouteCmds(sess *Session, reason string) {
	if s.scripts == nil {
		return
	}
	sess.mu.Lock()
	dev := sess.device
	sess.mu.Unlock()
	for _, r := range sess.pcfg.iroutes {
		env := []string{"ROUTE=" + r.Masked().String(), "DEVICE=" + dev, "USERNAME=" + sess.User,
			"GROUPNAME=" + firstOr(sess.Groups, "")}
		if err := s.scripts.RunScript(context.Background(), reason, env); err != nil {
			s.log.Warn(reason+" command failed", "id", sess.ID, "user", sess.User, "route", r, "device", dev, "err", err)
		}
	}
}

// runScript runs one script and logs its failure. It returns the error.
func (s *Server) runScript(in scriptInfo, reason string) error {
	if s.scripts == nil {
		return nil
	}
	err := s.scripts.RunScript(context.Background(), reason, s.scriptEnv(in, reason))
	if err != nil {
		s.log.Warn(reason+" script failed", "id", in.sess.ID, "user", in.sess.User, "device", in.device, "err", err)
	}
	return err
}

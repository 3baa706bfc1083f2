package ctl

// occtl's output. The JSON objects keep occtl's key names, order and value types (ocserv 1.1.6's output is the
// reference: ID and counters are numbers, MTU, DPD, RX and TX are decimal strings, "_"-prefixed keys are human
// forms, "raw_" keys are numbers); ocgate's own facts are added under new keys (Datapath, Channel). The human
// text is aligned like occtl's tables.

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"ocgate/auth"
	"ocgate/protocol"
	"ocgate/protocol/cluster"
)

// kv is one member of an ordered JSON object.
type kv struct {
	k string
	v any
}

// object is a JSON object that keeps its keys' order (occtl's order).
type object []kv

// MarshalJSON writes the members in order.
func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, m := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(m.k)
		v, err := json.Marshal(m.v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.k, err)
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

func (o object) get(k string) any {
	for _, m := range o {
		if m.k == k {
			return m.v
		}
	}
	return nil
}

// occtl's time formats.
const dateFormat = "2006-01-02 15:04"

// since renders an interval the way occtl does ("    2s", " 3m:04s", " 5h:06m", " 7days").
func since(d time.Duration) string {
	s := int64(d / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%5ds", s)
	case s < 3600:
		return fmt.Sprintf("%2dm:%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%2dh:%02dm", s/3600, (s%3600)/60)
	}
	return fmt.Sprintf("%2ddays", s/86400)
}

// humanBytes renders a byte count like occtl: "512 bytes", "20.7 KB", "1.1 MB".
func humanBytes(n float64) string {
	switch {
	case n < 1000:
		return fmt.Sprintf("%.0f bytes", n)
	case n < 1000*1000:
		return fmt.Sprintf("%.1f KB", n/1000)
	case n < 1000*1000*1000:
		return fmt.Sprintf("%.1f MB", n/1000/1000)
	}
	return fmt.Sprintf("%.1f GB", n/1000/1000/1000)
}

// dottedRoute renders an IPv4 route as occtl does (10.77.0.0/255.255.255.0); IPv6 stays in CIDR form.
func dottedRoute(p netip.Prefix) string {
	if p.Bits() == 0 {
		return "default"
	}
	if !p.Addr().Is4() {
		return p.Masked().String()
	}
	m := ^uint32(0) << (32 - p.Bits())
	return fmt.Sprintf("%s/%d.%d.%d.%d", p.Masked().Addr(), byte(m>>24), byte(m>>16), byte(m>>8), byte(m))
}

func routes(ps []netip.Prefix) []string {
	out := []string{}
	for _, p := range ps {
		out = append(out, dottedRoute(p))
	}
	return out
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

func secs(d time.Duration) string { return strconv.Itoa(int(d / time.Second)) }

func group(in protocol.SessionInfo) string {
	if len(in.Groups) > 0 {
		return in.Groups[0]
	}
	return ""
}

func state(in protocol.SessionInfo) string {
	if in.Connected {
		return "connected"
	}
	return "disconnected" // waiting for the client to come back with its cookie
}

// userObject is one element of `show users` (and `show user`, `show id`).
func userObject(in protocol.SessionInfo, datapath string, now time.Time) object {
	conn := in.ConnectedAt
	if conn.IsZero() {
		conn = in.Created
	}
	elapsed := max(now.Sub(conn).Seconds(), 1)
	mtu := ""
	if in.MTU > 0 {
		mtu = strconv.Itoa(in.MTU)
	}
	dns := []string{}
	for _, d := range in.DNS {
		dns = append(dns, d.String())
	}
	ports := []string{}
	if in.RestrictToPorts != "" {
		ports = append(ports, in.RestrictToPorts)
	}
	restricted := "False"
	if in.RestrictToRoutes {
		restricted = "True"
	}
	channel := strings.ToLower(in.Channel)
	if channel == "cstp" {
		channel = "tls"
	}
	return object{
		{"ID", in.ID},
		{"Username", in.User},
		{"Groupname", group(in)},
		{"State", state(in)},
		{"vhost", "default"},
		{"Device", in.Device},
		{"MTU", mtu},
		{"Remote IP", addrString(in.Remote.Addr())},
		{"Location", "unknown"},
		{"Local Device IP", addrString(in.LocalReal.Addr())},
		{"IPv4", addrString(in.Addr)},
		{"P-t-P IPv4", addrString(in.Gateway)},
		{"IPv6", addrString(in.Addr6)},
		{"P-t-P IPv6", addrString(in.Gateway6)},
		{"User-Agent", in.UserAgent},
		{"RX", strconv.FormatUint(in.RxBytes, 10)},
		{"TX", strconv.FormatUint(in.TxBytes, 10)},
		{"_RX", humanBytes(float64(in.RxBytes))},
		{"_TX", humanBytes(float64(in.TxBytes))},
		{"Average RX", humanBytes(float64(in.RxBytes)/elapsed) + "/sec"},
		{"Average TX", humanBytes(float64(in.TxBytes)/elapsed) + "/sec"},
		{"DPD", secs(in.DPD)},
		{"KeepAlive", secs(in.Keepalive)},
		{"Hostname", in.Hostname},
		{"Connected at", conn.Local().Format(dateFormat)},
		{"_Connected at", since(now.Sub(conn))},
		{"raw_connected_at", conn.Unix()},
		{"Full session", in.SafeID},
		{"Session", in.SafeID[:min(6, len(in.SafeID))]},
		{"TLS ciphersuite", in.TLSCipher},
		{"DTLS cipher", in.DTLSCipher},
		{"DNS", dns},
		{"NBNS", []string{}},
		{"Split-DNS-Domains", []string{}},
		{"Routes", routes(in.Routes)},
		{"No-routes", routes(in.NoRoutes)},
		{"iRoutes", routes(in.IRoutes)},
		{"Restricted to routes", restricted},
		{"Restricted to ports", ports},
		{"Datapath", datapath},
		{"Channel", channel},
	}
}

// usersText is occtl's `show users` table.
func usersText(users []object) string {
	var b bytes.Buffer
	w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "id\tuser\tvhost\tip\tvpn-ip\tdevice\tsince\tdtls-cipher\tstatus\t")
	for _, u := range users {
		dev := u.get("Device").(string)
		if dev == "" {
			dev = "-"
		}
		cipher := u.get("DTLS cipher").(string)
		if cipher == "" {
			cipher = "(no-dtls)"
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", u.get("ID"), u.get("Username"), u.get("vhost"),
			u.get("Remote IP"), dashIfEmpty(u.get("IPv4").(string)), dev, strings.TrimSpace(u.get("_Connected at").(string)),
			cipher, u.get("State"))
	}
	w.Flush()
	return b.String()
}

// clusterUsers are the elements of `show users --all-instances`: each session of the shared state, with the
// instance that owns it, sorted by instance and user.
func clusterUsers(recs []cluster.Record) []object {
	slices.SortFunc(recs, func(a, b cluster.Record) int {
		return cmp.Or(cmp.Compare(a.Instance, b.Instance), cmp.Compare(a.User, b.User), cmp.Compare(a.SID, b.SID))
	})
	out := []object{}
	for _, r := range recs {
		groups := r.Groups
		if groups == nil {
			groups = []string{}
		}
		out = append(out, object{{"Instance", r.Instance}, {"Username", r.User}, {"Groupname", groups},
			{"Remote IP", r.Remote}, {"IPv4", addrString(r.IPv4)}, {"IPv6", addrString(r.IPv6)},
			{"Session", r.SID}, {"raw_created", r.Created.Unix()}})
	}
	return out
}

func clusterUsersText(users []object) string {
	var b bytes.Buffer
	w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "instance\tuser\tip\tvpn-ip\tvpn-ipv6\tsession\t")
	for _, u := range users {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t\n", u.get("Instance"), u.get("Username"),
			dashIfEmpty(u.get("Remote IP").(string)), dashIfEmpty(u.get("IPv4").(string)),
			dashIfEmpty(u.get("IPv6").(string)), u.get("Session"))
	}
	w.Flush()
	return b.String()
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// detailText renders objects as occtl's `show user` / `show status` do: one "key: value" line per member; the
// "raw_" members (for machines) are left out, and a member with a "_" twin shows both forms.
func detailText(objs []object) string {
	var b strings.Builder
	for i, o := range objs {
		if i > 0 {
			b.WriteByte('\n')
		}
		for _, m := range o {
			if strings.HasPrefix(m.k, "raw_") || strings.HasPrefix(m.k, "_") {
				continue
			}
			v := valueText(m.v)
			if h := o.get("_" + m.k); h != nil {
				v += " (" + strings.TrimSpace(valueText(h)) + ")"
			}
			indent := "\t"
			if m.k == "ID" || m.k == "Status" {
				indent = ""
			}
			fmt.Fprintf(&b, "%s%s: %s\n", indent, m.k, v)
		}
	}
	return b.String()
}

func valueText(v any) string {
	switch x := v.(type) {
	case []string:
		return strings.Join(x, ", ")
	case string:
		return x
	}
	return fmt.Sprint(v)
}

// statusObject is `show status`.
func statusObject(st protocol.Status, si ServerInfo, now time.Time) object {
	up := st.Start
	return object{
		{"Status", "online"},
		{"Server PID", si.PID},
		{"Sec-mod PID", 0},
		{"Sec-mod instance count", 0},
		{"Up since", up.Local().Format(dateFormat)},
		{"_Up since", since(now.Sub(up))},
		{"raw_up_since", up.Unix()},
		{"uptime", int64(now.Sub(up) / time.Second)},
		{"Active sessions", st.ActiveSessions},
		{"Total sessions", st.SessionsClosed},
		{"Total authentication failures", st.AuthFailures},
		{"IPs in ban list", st.BannedIPs},
		{"Last stats reset", up.Local().Format(dateFormat)},
		{"_Last stats reset", since(now.Sub(up))},
		{"raw_last_stats_reset", up.Unix()},
		{"Sessions handled", st.SessionsClosed},
		{"Timed out sessions", st.TimedOut},
		{"Timed out (idle) sessions", st.IdleTimedOut},
		{"Closed due to error sessions", st.ErrorClosed},
		{"Authentication failures", st.AuthFailures},
		{"Average auth time", since(st.AvgAuthTime)},
		{"raw_avg_auth_time", int64(st.AvgAuthTime / time.Second)},
		{"Max auth time", since(st.MaxAuthTime)},
		{"raw_max_auth_time", int64(st.MaxAuthTime / time.Second)},
		{"Average session time", since(st.AvgSessionTime)},
		{"raw_avg_session_time", int64(st.AvgSessionTime / time.Second)},
		{"Max session time", since(st.MaxSessionTime)},
		{"raw_max_session_time", int64(st.MaxSessionTime / time.Second)},
		{"Min MTU", st.MinMTU},
		{"Max MTU", st.MaxMTU},
		{"RX", humanBytes(float64(st.RxBytes))},
		{"raw_rx", st.RxBytes},
		{"TX", humanBytes(float64(st.TxBytes))},
		{"raw_tx", st.TxBytes},
		{"Datapath", si.Datapath},
		{"Version", si.Version},
		{"Valid cookies", st.Sessions},
		{"DTLS sessions", st.DTLSSessions},
		{"Authentication successes", st.AuthSuccesses},
		{"Shared state", dashIfEmpty(st.SharedState)},
	}
}

// banObject is one element of `show ip bans` and `show ip ban points`.
func banObject(b auth.BanInfo, now time.Time) object {
	o := object{{"IP", b.Addr.String()}, {"Score", b.Score}}
	if !b.BannedUntil.IsZero() {
		o = append(o, kv{"Banned until", b.BannedUntil.Local().Format(dateFormat)},
			kv{"_Banned until", since(b.BannedUntil.Sub(now))}, kv{"raw_banned_until", b.BannedUntil.Unix()})
	}
	return o
}

func bansText(bans []object, banned bool) string {
	var b bytes.Buffer
	w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.AlignRight)
	if banned {
		fmt.Fprintln(w, "IP\tscore\tbanned-for\t")
	} else {
		fmt.Fprintln(w, "IP\tscore\t")
	}
	for _, o := range bans {
		if banned {
			fmt.Fprintf(w, "%s\t%d\t%s\t\n", o.get("IP"), o.get("Score"), strings.TrimSpace(o.get("_Banned until").(string)))
		} else {
			fmt.Fprintf(w, "%s\t%d\t\n", o.get("IP"), o.get("Score"))
		}
	}
	w.Flush()
	return b.String()
}

// sessionObject is one element of `show sessions` and `show session`: a cookie and who holds it.
func sessionObject(in protocol.SessionInfo, now time.Time) object {
	st := "inactive"
	if in.Connected {
		st = "active"
	}
	return object{
		{"Session", in.SafeID[:min(6, len(in.SafeID))]},
		{"Full session", in.SafeID},
		{"Created", in.Created.Local().Format(dateFormat)},
		{"_Created", since(now.Sub(in.Created))},
		{"raw_created", in.Created.Unix()},
		{"State", st},
		{"Username", in.User},
		{"Groupname", group(in)},
		{"vhost", "default"},
		{"User-Agent", in.UserAgent},
		{"Remote IP", addrString(in.Remote.Addr())},
		{"Location", "unknown"},
		{"Session is open", boolText(in.Connected)},
		{"TLS auth ok", "True"},
		{"In use", boolText(in.Connected)},
		{"ID", in.ID},
	}
}

func boolText(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

func sessionsText(ss []object) string {
	var b bytes.Buffer
	w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "session\tuser\tvhost\tcreated\tstate\tremote IP\t")
	for _, o := range ss {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t\n", o.get("Session"), o.get("Username"), o.get("vhost"),
			strings.TrimSpace(o.get("_Created").(string)), o.get("State"), o.get("Remote IP"))
	}
	w.Flush()
	return b.String()
}

// iroutesObject is one element of `show iroutes`.
func iroutesObject(in protocol.SessionInfo) object {
	return object{
		{"ID", in.ID}, {"Username", in.User}, {"vhost", "default"}, {"Device", in.Device},
		{"IP", addrString(in.Addr)}, {"iRoutes", routes(in.IRoutes)},
	}
}

func iroutesText(rs []object) string {
	var b bytes.Buffer
	w := tabwriter.NewWriter(&b, 0, 0, 1, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "id\tuser\tvhost\tdevice\tvpn-ip\tiroute\t")
	for _, o := range rs {
		for _, r := range o.get("iRoutes").([]string) {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t\n", o.get("ID"), o.get("Username"), o.get("vhost"),
				dashIfEmpty(o.get("Device").(string)), dashIfEmpty(o.get("IP").(string)), r)
		}
	}
	w.Flush()
	return b.String()
}

// eventObject is one line of `show events`: the session as in `show users`, with what happened.
func eventObject(ev protocol.Event, datapath string) object {
	o := object{{"Event", ev.Type}, {"Reason", ev.Reason}, {"raw_time", ev.Time.Unix()}}
	return append(o, userObject(ev.Session, datapath, ev.Time)...)
}

func eventText(ev protocol.Event) string {
	in := ev.Session
	what := map[string]string{"connect": "connected", "disconnect": "disconnected", "end": "session ended"}[ev.Type]
	s := fmt.Sprintf("[%s] %d user '%s' of group '%s' %s from %s, vpn-ip %s", ev.Time.Local().Format("15:04:05"),
		in.ID, in.User, group(in), what, addrString(in.Remote.Addr()), dashIfEmpty(addrString(in.Addr)))
	if ev.Reason != "" {
		s += " (" + ev.Reason + ")"
	}
	return s + "\n"
}

func reloadObject(r ReloadReport) object {
	return object{{"Status", "reloaded"}, {"Applied", nonNil(r.Applied)}, {"Needs restart", nonNil(r.NeedsRestart)}}
}

func reloadText(r ReloadReport) string {
	var b strings.Builder
	if len(r.Applied) == 0 && len(r.NeedsRestart) == 0 {
		return "configuration reloaded: nothing changed\n"
	}
	b.WriteString("configuration reloaded\n")
	for _, k := range r.Applied {
		fmt.Fprintf(&b, "\tchanged: %s (applies to new sessions)\n", k)
	}
	for _, k := range r.NeedsRestart {
		fmt.Fprintf(&b, "\tchanged: %s (needs a restart)\n", k)
	}
	return b.String()
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

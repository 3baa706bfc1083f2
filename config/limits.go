package config

// limits handles restrict_user_to_ports and the netstack's per-session and server-wide limits (after datapath);
// with datapath = "tun" a netstack limit set to other than its default is ignored with a warning.
func (p *parser) limits(r *raw, c *Config) {
	p.ports("restrict_user_to_ports", &c.RestrictUserToPorts, r.RestrictToPorts)
	p.integer("max_flows_per_session", &c.MaxFlowsPerSession, r.MaxFlows, 1, 1<<20)
	p.integer("max_half_open_per_session", &c.MaxHalfOpenPerSession, r.MaxHalfOpen, 1, 1<<20)
	p.integer("max_dials_in_flight", &c.MaxDialsInFlight, r.MaxDials, 1, 1<<20)
	p.seconds("tcp_keepalive", &c.TCPKeepalive, r.TCPKeepalive)
	p.seconds("udp_idle_timeout", &c.UDPIdleTimeout, r.UDPIdleTimeout)
	if r.UDPIdleTimeout != nil && *r.UDPIdleTimeout == 0 {
		p.errf("udp_idle_timeout", "must be at least 1 second")
	}
	if c.Datapath != "tun" {
		return
	}
	d := Default()
	for _, k := range []struct {
		key string
		set bool
	}{
		{"max_flows_per_session", c.MaxFlowsPerSession != d.MaxFlowsPerSession},
		{"max_half_open_per_session", c.MaxHalfOpenPerSession != d.MaxHalfOpenPerSession},
		{"max_dials_in_flight", c.MaxDialsInFlight != d.MaxDialsInFlight},
		{"tcp_keepalive", c.TCPKeepalive != d.TCPKeepalive},
		{"udp_idle_timeout", c.UDPIdleTimeout != d.UDPIdleTimeout},
	} {
		if k.set {
			p.warnf(k.key, "ignored with datapath = \"tun\" (the kernel carries the flows)")
		}
	}
}

package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"

	"ocgate/protocol/client"
)

// PingReport is the ping mode's result.
type PingReport struct {
	Target      string      `json:"target"` // "icmp IP" or "udp IP:PORT"; "pushed DNS" when per session
	Sessions    int         `json:"sessions"`
	Sent        uint64      `json:"sent"`
	Received    uint64      `json:"received"`
	Duplicates  uint64      `json:"duplicates"`
	LossPercent float64     `json:"loss_percent"`
	RTT         Percentiles `json:"rtt_ms"`
}

// parseTarget reads --target: IP (ICMP echo) or IP:PORT (UDP).
func parseTarget(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if !ap.Addr().Is4() {
			return ap, errors.New("--target: IPv4 only")
		}
		return ap, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.AddrPort{}, fmt.Errorf("--target %q: want an IPv4 address or IPv4:PORT", s)
	}
	return netip.AddrPortFrom(a, 0), nil
}

// runPing sends --rate packets per second per session for --duration (count = rate × duration, at most 10⁶ per
// session) and matches the replies. Each packet's payload is: session index (4 bytes), sequence (4), send time (8),
// zero padding to --size.
func runPing(ctx context.Context, c config, sessions []*client.Session, errs *errorCounter, progress io.Writer) *PingReport {
	rep := &PingReport{Target: c.Target, Sessions: len(sessions)}
	var fixed netip.AddrPort
	if c.Target != "" {
		fixed, _ = parseTarget(c.Target)
		rep.Target = "icmp " + fixed.Addr().String()
		if fixed.Port() != 0 {
			rep.Target = "udp " + fixed.String()
		}
	} else {
		rep.Target = "icmp to each session's first pushed DNS server"
	}
	count := min(max(int(c.Rate*c.Duration.Seconds()), 1), 1_000_000)
	interval := time.Duration(float64(time.Second) / c.Rate)
	start := time.Now()
	rctx, cancel := context.WithDeadline(ctx, start.Add(c.Duration+2*time.Second))
	defer cancel()
	var sent, received, dups atomic.Uint64
	var mu sync.Mutex
	var rtts []time.Duration
	var wg sync.WaitGroup
	stop := startProgress(progress, func() string {
		return fmt.Sprintf("ping: %d sent, %d answered", sent.Load(), received.Load())
	})
	for idx, s := range sessions {
		dst := fixed
		if !dst.IsValid() {
			if len(s.DNS) == 0 || !s.DNS[0].Is4() {
				errs.add("ping: no target (no IPv4 DNS server pushed; give --target)")
				continue
			}
			dst = netip.AddrPortFrom(s.DNS[0], 0)
		}
		if !s.Addr.IsValid() {
			errs.add("ping: session has no IPv4 address")
			continue
		}
		src := netip.AddrPortFrom(s.Addr, uint16(10000+idx%50000))
		seen := make([]bool, count)
		wg.Add(2)
		go func() { // sender
			defer wg.Done()
			jitter := time.Duration(rand.Int64N(int64(interval) + 1))
			payload := make([]byte, c.Size)
			for seq := range count {
				if d := time.Until(start.Add(jitter + time.Duration(seq)*interval)); d > 0 {
					sleepCtx(rctx, d)
				}
				if rctx.Err() != nil || s.Err() != nil {
					return
				}
				binary.BigEndian.PutUint32(payload[0:], uint32(idx))
				binary.BigEndian.PutUint32(payload[4:], uint32(seq))
				binary.BigEndian.PutUint64(payload[8:], uint64(time.Now().UnixNano()))
				var pkt []byte
				if dst.Port() == 0 {
					pkt = client.ICMPEcho(src.Addr(), dst.Addr(), uint16(idx), uint16(seq), payload)
				} else {
					pkt = client.UDP(src, dst, payload)
				}
				if err := s.WritePacket(pkt); err != nil {
					errs.add("ping: write: " + cause(err))
					return
				}
				sent.Add(1)
			}
		}()
		go func() { // receiver
			defer wg.Done()
			buf := make([]byte, 65536)
			var mine []time.Duration
			defer func() {
				mu.Lock()
				rtts = append(rtts, mine...)
				mu.Unlock()
			}()
			for got := 0; got < count; {
				n, err := s.ReadPacket(rctx, buf)
				if err != nil {
					return
				}
				now := time.Now()
				var p []byte
				if dst.Port() == 0 {
					from, id, _, payload, ok := client.ParseICMPEchoReply(buf[:n])
					if !ok || from != dst.Addr() || id != uint16(idx) {
						continue
					}
					p = payload
				} else {
					from, to, payload, ok := client.ParseUDP(buf[:n])
					if !ok || from != dst || to != src {
						continue
					}
					p = payload
				}
				if len(p) < 16 || binary.BigEndian.Uint32(p) != uint32(idx) {
					continue
				}
				seq := int(binary.BigEndian.Uint32(p[4:]))
				if seq >= count {
					continue
				}
				if seen[seq] {
					dups.Add(1)
					continue
				}
				seen[seq] = true
				got++
				received.Add(1)
				mine = append(mine, now.Sub(time.Unix(0, int64(binary.BigEndian.Uint64(p[8:])))))
			}
		}()
	}
	wg.Wait()
	stop()
	rep.Sent, rep.Received, rep.Duplicates = sent.Load(), received.Load(), dups.Load()
	if rep.Sent > 0 {
		rep.LossPercent = 100 * float64(rep.Sent-min(rep.Received, rep.Sent)) / float64(rep.Sent)
	}
	rep.RTT = percentiles(rtts)
	return rep
}

// BulkReport is the bulk mode's result: TCP payload bytes counted by the loadgen in the measured window.
type BulkReport struct {
	Target           string  `json:"target"`
	Dir              string  `json:"dir"`
	Sessions         int     `json:"sessions"`
	Conns            int     `json:"connections"`
	Seconds          float64 `json:"window_seconds"`
	DownBytes        uint64  `json:"down_bytes"`
	UpBytes          uint64  `json:"up_bytes"`
	DownMiBps        float64 `json:"down_mib_per_s"`
	UpMiBps          float64 `json:"up_mib_per_s"`
	TotalMiBps       float64 `json:"total_mib_per_s"`
	TotalBytesAll    uint64  `json:"total_bytes_including_warmup"`
	ServerCPUSeconds float64 `json:"server_cpu_seconds"`
	ServerCPUPerGiB  float64 `json:"server_cpu_seconds_per_gib,omitempty"`
	MinDown          float64 `json:"session_down_mib_per_s_min"`
	MaxDown          float64 `json:"session_down_mib_per_s_max"`
	MinUp            float64 `json:"session_up_mib_per_s_min"`
	MaxUp            float64 `json:"session_up_mib_per_s_max"`
	serverCPU        float64
}

type flow struct {
	sess int
	down bool
	conn *gonet.TCPConn
	n    atomic.Uint64
}

// runBulk runs TCP through a gVisor stack on every session to the --serve target: warmup, then the measured
// window of --duration.
func runBulk(ctx context.Context, c config, sessions []*client.Session, errs *errorCounter, progress io.Writer, srv *procSampler) *BulkReport {
	target := netip.MustParseAddrPort(c.BulkTarget)
	rep := &BulkReport{Target: target.String(), Dir: c.BulkDir, Sessions: len(sessions)}
	nets := make([]*client.Net, len(sessions))
	var flows []*flow
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, c.Concurrency)
	for i, s := range sessions {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			n, err := client.NewNet(s)
			if err != nil {
				errs.add("bulk: stack: " + cause(err))
				return
			}
			nets[i] = n
			for _, down := range []bool{true, false} {
				if down && c.BulkDir == "up" || !down && c.BulkDir == "down" {
					continue
				}
				dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				conn, err := n.DialTCP(dctx, target)
				cancel()
				if err != nil {
					errs.add("bulk: dial: " + cause(err))
					continue
				}
				cmd := []byte{'U'}
				if down {
					cmd[0] = 'D'
				}
				conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := conn.Write(cmd); err != nil {
					errs.add("bulk: dial: " + cause(err))
					conn.Close()
					continue
				}
				conn.SetWriteDeadline(time.Time{})
				mu.Lock()
				flows = append(flows, &flow{sess: i, down: down, conn: conn})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	rep.Conns = len(flows)
	if len(flows) == 0 {
		for _, n := range nets {
			if n != nil {
				n.Close()
			}
		}
		return rep
	}
	var stopped atomic.Bool
	end := time.Now().Add(c.Warmup + c.Duration + 10*time.Second) // hard bound for every loop below
	for _, f := range flows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.conn.SetDeadline(end)
			buf := make([]byte, 64<<10)
			for !stopped.Load() {
				var n int
				var err error
				if f.down {
					n, err = f.conn.Read(buf)
				} else {
					n, err = f.conn.Write(buf)
				}
				f.n.Add(uint64(n))
				if err != nil {
					if !stopped.Load() {
						errs.add("bulk: " + cause(err))
					}
					return
				}
			}
		}()
	}
	snap := func() (down, up uint64, per map[int][2]uint64) {
		per = map[int][2]uint64{}
		for _, f := range flows {
			v := f.n.Load()
			p := per[f.sess]
			if f.down {
				down += v
				p[0] += v
			} else {
				up += v
				p[1] += v
			}
			per[f.sess] = p
		}
		return
	}
	stopProgress := startProgress(progress, func() string {
		d, u, _ := snap()
		return fmt.Sprintf("bulk: %d connections, %.1f MiB down, %.1f MiB up so far", len(flows), float64(d)/(1<<20), float64(u)/(1<<20))
	})
	sleepCtx(ctx, c.Warmup)
	d0, u0, p0 := snap()
	cpu0, t0 := srv.cpu(), time.Now()
	sleepCtx(ctx, c.Duration)
	d1, u1, p1 := snap()
	cpu1, t1 := srv.cpu(), time.Now()
	stopProgress()
	stopped.Store(true)
	for _, f := range flows {
		f.conn.SetDeadline(time.Now())
	}
	wg.Wait()
	for _, f := range flows {
		f.conn.Close()
	}
	for _, n := range nets {
		if n != nil {
			n.Close()
		}
	}
	secs := t1.Sub(t0).Seconds()
	rep.Seconds = secs
	rep.DownBytes, rep.UpBytes = d1-d0, u1-u0
	rep.TotalBytesAll = d1 + u1
	mib := func(b uint64) float64 { return float64(b) / (1 << 20) / secs }
	if secs > 0 {
		rep.DownMiBps, rep.UpMiBps = mib(rep.DownBytes), mib(rep.UpBytes)
		rep.TotalMiBps = rep.DownMiBps + rep.UpMiBps
		first := true
		for sess, v := range p1 {
			dn, up := mib(v[0]-p0[sess][0]), mib(v[1]-p0[sess][1])
			if first {
				rep.MinDown, rep.MaxDown, rep.MinUp, rep.MaxUp = dn, dn, up, up
				first = false
			}
			rep.MinDown, rep.MaxDown = min(rep.MinDown, dn), max(rep.MaxDown, dn)
			rep.MinUp, rep.MaxUp = min(rep.MinUp, up), max(rep.MaxUp, up)
		}
	}
	if srv != nil {
		rep.serverCPU = cpu1 - cpu0
		rep.ServerCPUSeconds = rep.serverCPU
		if gib := float64(rep.DownBytes+rep.UpBytes) / (1 << 30); gib > 0 {
			rep.ServerCPUPerGiB = rep.serverCPU / gib
		}
	}
	return rep
}

// target is the bulk/echo service of --serve.
type target struct {
	ln     net.Listener
	pc     net.PacketConn
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// serveTarget listens on addr (TCP and UDP). TCP: the first byte 'D' makes it send zeros until the connection
// ends, 'U' makes it read and discard; a connection lives at most an hour. UDP: every datagram is echoed.
func serveTarget(ctx context.Context, addr string) (*target, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		ln.Close()
		return nil, err
	}
	t := &target{ln: ln, pc: pc, conns: map[net.Conn]struct{}{}}
	t.wg.Add(2)
	go func() {
		defer t.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return
			}
			t.mu.Lock()
			if t.closed {
				t.mu.Unlock()
				c.Close()
				return
			}
			t.conns[c] = struct{}{}
			t.mu.Unlock()
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				defer func() {
					t.mu.Lock()
					delete(t.conns, c)
					t.mu.Unlock()
					c.Close()
				}()
				c.SetDeadline(time.Now().Add(time.Hour))
				cmd := make([]byte, 1)
				if _, err := io.ReadFull(c, cmd); err != nil {
					return
				}
				switch cmd[0] {
				case 'D':
					buf := make([]byte, 64<<10)
					for {
						if _, err := c.Write(buf); err != nil {
							return
						}
					}
				case 'U':
					io.Copy(io.Discard, c)
				}
			}()
		}
	}()
	go func() {
		defer t.wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
	context.AfterFunc(ctx, func() { t.Close() })
	return t, nil
}

func (t *target) TCPAddr() string { return t.ln.Addr().String() }
func (t *target) UDPAddr() string { return t.pc.LocalAddr().String() }

// Close stops the listeners and ends every connection.
func (t *target) Close() {
	t.ln.Close()
	t.pc.Close()
	t.mu.Lock()
	t.closed = true
	for c := range t.conns {
		c.Close()
	}
	t.mu.Unlock()
	t.wg.Wait()
}

// FlowsReport is what --mode flows measured: many concurrent TCP connections through the sessions.
type FlowsReport struct {
	Requested     int     `json:"requested"`
	Open          int     `json:"open"`
	Seconds       float64 `json:"seconds"`
	PerSecond     float64 `json:"flows_per_second"`
	RSSDeltaKiB   int64   `json:"server_rss_delta_kib"`
	RSSPerFlowKiB float64 `json:"server_rss_per_flow_kib"`
}

// runFlows opens --flows TCP connections per session to the target ('U': it reads and discards, so they stay
// idle), all at once, holds them for --duration and reports the setup rate and the server's RSS per flow.
func runFlows(ctx context.Context, c config, sessions []*client.Session, errs *errorCounter, progress io.Writer, srv *procSampler) *FlowsReport {
	target := netip.MustParseAddrPort(c.BulkTarget)
	rep := &FlowsReport{Requested: c.Flows * len(sessions)}
	var before int64
	if srv != nil {
		if s, err := srv.sample(); err == nil {
			before = int64(s.rssKiB)
		}
	}
	var mu sync.Mutex
	var conns []net.Conn
	var nets []*client.Net
	defer func() {
		for _, cn := range conns {
			cn.Close()
		}
		for _, n := range nets {
			n.Close()
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, max(c.Concurrency, 1))
	for _, s := range sessions {
		n, err := client.NewNet(s)
		if err != nil {
			errs.add("flows: stack: " + cause(err))
			continue
		}
		nets = append(nets, n)
		for range c.Flows {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				conn, err := n.DialTCP(dctx, target)
				cancel()
				if err != nil {
					errs.add("flows: dial: " + cause(err))
					return
				}
				conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := conn.Write([]byte{'U'}); err != nil {
					errs.add("flows: " + cause(err))
					conn.Close()
					return
				}
				mu.Lock()
				conns = append(conns, conn)
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	rep.Seconds = time.Since(start).Seconds()
	rep.Open = len(conns)
	if rep.Seconds > 0 {
		rep.PerSecond = float64(rep.Open) / rep.Seconds
	}
	stop := startProgress(progress, func() string { return fmt.Sprintf("holding %d flows", rep.Open) })
	sleepCtx(ctx, c.Duration)
	stop()
	if srv != nil && rep.Open > 0 {
		if s, err := srv.sample(); err == nil {
			rep.RSSDeltaKiB = int64(s.rssKiB) - before
			rep.RSSPerFlowKiB = float64(rep.RSSDeltaKiB) / float64(rep.Open)
		}
	}
	return rep
}

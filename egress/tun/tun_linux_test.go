//go:build linux

package tun

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"ocgate/egress/egresstest"
	"ocgate/protocol/datapath"
)

// inNewNetns runs f on a thread moved into a new network namespace, so that the devices a test creates never
// touch the host's. It needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN); other users skip.
func inNewNetns(t testing.TB, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace and TUN devices")
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine, and its namespace with it
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		f()
	}()
	<-done
}

// attachOne makes a datapath with devices named prefix0... and attaches one session at peer; ok is false (and the
// test marked failed) when either fails. The caller closes the datapath.
func attachOne(t testing.TB, prefix string, local, peer netip.Addr, deliver func([]byte)) (dp *Datapath, port datapath.Port, ok bool) {
	t.Helper()
	dp, err := New(Config{Prefix: prefix, Local: local})
	if err != nil {
		t.Error(err)
		return nil, nil, false
	}
	port, err = dp.Attach(&datapath.Session{ID: 1, User: "u", Addrs: []netip.Addr{peer}, MTU: 1400, Deliver: deliver})
	if err != nil {
		dp.Close()
		t.Error(err)
		return nil, nil, false
	}
	return dp, port, true
}

// TestTUNPacketPath: a session's device carries packets both ways, the write path allocates nothing per packet,
// foreign sources are dropped, and closing the port removes the device.
func TestTUNPacketPath(t *testing.T) {
	inNewNetns(t, func() {
		local, peer := netip.MustParseAddr("10.250.77.1"), netip.MustParseAddr("10.250.77.9")
		var delivered atomic.Int64
		dp, port, ok := attachOne(t, "tst", local, peer, func(pkt []byte) {
			if len(pkt) >= 20 && netip.AddrFrom4([4]byte(pkt[16:20])) == peer {
				delivered.Add(1)
			}
		})
		if !ok {
			return
		}
		defer dp.Close()
		name := port.(datapath.Device).DeviceName()
		if name != "tst0" {
			t.Errorf("device %q, want tst0", name)
		}

		// Host → client: a UDP datagram to the peer leaves through the device and reaches Deliver.
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: local.AsSlice()})
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		to := netip.AddrPortFrom(peer, 9)
		payload := make([]byte, 1000)
		for range 100 {
			c.WriteToUDPAddrPort(payload, to)
		}
		deadline := time.Now().Add(5 * time.Second)
		for delivered.Load() < 100 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := delivered.Load(); n != 100 {
			t.Errorf("delivered %d of 100 datagrams", n)
		}
		// The read path in steady state: allocations across 2000 more datagrams (the sender's included), sent in
		// bursts of 100 that the device queue (500) holds.
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i := range 20 {
			for range 100 {
				c.WriteToUDPAddrPort(payload, to)
			}
			want := int64(100 * (i + 2))
			for end := time.Now().Add(2 * time.Second); delivered.Load() < want && time.Now().Before(end); {
				time.Sleep(time.Millisecond)
			}
		}
		runtime.ReadMemStats(&after)
		got := delivered.Load() - 100
		if perPkt := float64(after.Mallocs-before.Mallocs) / float64(max(got, 1)); got < 1000 || perPkt > 0.05 && !raceEnabled {
			t.Errorf("read path: %d datagrams delivered, %.3f allocations per datagram; want most delivered and ~0", got, perPkt)
		}

		// Client → host: a UDP datagram from the peer arrives at the socket; none allocates.
		pkt := egresstest.UDP(peer, local, 40000, uint16(c.LocalAddr().(*net.UDPAddr).Port), []byte("hello"))
		if err := port.Send(pkt); err != nil {
			t.Error(err)
			return
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 100)
		n, from, err := c.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != "hello" || from.Addr() != peer {
			t.Errorf("read %q from %s, %v; want hello from %s", buf[:n], from, err, peer)
		}
		if a := testing.AllocsPerRun(1000, func() { port.Send(pkt) }); a != 0 && !raceEnabled {
			t.Errorf("Send allocates %.1f times per packet, want 0", a)
		}
		spoofed := egresstest.UDP(netip.MustParseAddr("10.250.77.10"), local, 1, 2, []byte("x"))
		port.Send(spoofed)
		if d := port.(*tunPort).dropSource.Load(); d != 1 {
			t.Errorf("spoofed packets dropped: %d, want 1", d)
		}

		port.Close()
		if _, err := net.InterfaceByName(name); err == nil {
			t.Errorf("%s still exists after Close", name)
		}
	})
}

// TestTUNOffloads: the carrier (TLS, then DTLS) switches the device's TCP segmentation offload off and on again
// (what the kernel reports through ethtool), and is a no-op once the port is closed.
func TestTUNOffloads(t *testing.T) {
	inNewNetns(t, func() {
		dp, port, ok := attachOne(t, "tso", netip.MustParseAddr("10.250.78.1"), netip.MustParseAddr("10.250.78.9"),
			func([]byte) {})
		if !ok {
			return
		}
		defer dp.Close()
		name := port.(datapath.Device).DeviceName()
		ca := port.(datapath.CarrierAware)
		for i, want := range []bool{true, false, false, true} {
			if i > 0 {
				ca.Carrier(map[bool]datapath.Carrier{true: datapath.CarrierDTLS, false: datapath.CarrierTLS}[want])
			}
			if got, err := tsoEnabled(name); err != nil || got != want {
				t.Errorf("step %d: TSO on %s = %v (%v), want %v", i, name, got, err, want)
			}
		}
		port.Close()
		ca.Carrier(datapath.CarrierTLS)
	})
}

// tsoEnabled asks the kernel whether TCP segmentation offload is on for the interface (ETHTOOL_GTSO).
func tsoEnabled(name string) (bool, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	val := &struct{ cmd, data uint32 }{cmd: unix.ETHTOOL_GTSO} // on the heap: its address goes in as an integer
	var ifr [40]byte
	copy(ifr[:unix.IFNAMSIZ-1], name)
	*(*uintptr)(unsafe.Pointer(&ifr[unix.IFNAMSIZ])) = uintptr(unsafe.Pointer(val))
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
		return false, e
	}
	return val.data != 0, nil
}

// TestTUNMergedWrite: on a real device, a burst of one flow's TCP segments from the client reaches the host's
// stack as fewer, bigger packets (the kernel accepted the merged writes) carrying every byte in order; a raw
// socket sees what the stack received.
// TestTUNMergedWrite: a bulk upload's segments reach the device merged. Sent one by one (Send), writeLoop wakes at
// the first and later ones merge while it writes; sent as bursts (SendBurst, EndBurst: a recvmmsg batch of DTLS
// records), each burst is one write.
func TestTUNMergedWrite(t *testing.T) {
	const n, mss, burst = 200, 1000, 32
	for _, bc := range []struct {
		name       string
		burst      bool
		maxPackets int
	}{{"send", false, n/2 - 1}, {"burst", true, (n + burst - 1) / burst}} {
		t.Run(bc.name, func(t *testing.T) { testMergedWrite(t, n, mss, burst, bc.burst, bc.maxPackets) })
	}
}

func testMergedWrite(t *testing.T, n, mss, burst int, bursts bool, maxPackets int) {
	inNewNetns(t, func() {
		local, peer := netip.MustParseAddr("10.250.79.1"), netip.MustParseAddr("10.250.79.9")
		dp, port, ok := attachOne(t, "mrg", local, peer, func([]byte) {})
		if !ok {
			return
		}
		defer dp.Close()
		raw, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP)
		if err != nil {
			t.Error(err)
			return
		}
		defer unix.Close(raw)
		unix.SetsockoptInt(raw, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
		unix.SetsockoptTimeval(raw, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 5})

		segs := stream(netip.AddrPortFrom(peer, 40000), netip.AddrPortFrom(local, 9), n, mss)
		bp := port.(datapath.Burster)
		for i, s := range segs {
			send := port.Send
			if bursts {
				send = bp.SendBurst
			}
			if err := send(s.build()); err != nil {
				t.Error(err)
				return
			}
			if bursts && (i%burst == burst-1 || i == len(segs)-1) {
				bp.EndBurst()
			}
		}
		got, packets := make([]byte, 0, n*mss), 0
		buf := make([]byte, 70000)
		for len(got) < n*mss {
			m, _, err := unix.Recvfrom(raw, buf, 0)
			if err != nil {
				t.Errorf("after %d packets, %d bytes: %v", packets, len(got), err)
				return
			}
			pkt := buf[:m]
			if len(pkt) < 52 || binary.BigEndian.Uint16(pkt[22:]) != 9 {
				continue // not ours
			}
			if seq := binary.BigEndian.Uint32(pkt[24:]); seq != segs[0].seq+uint32(len(got)) {
				t.Errorf("packet %d: sequence %d, want %d", packets, seq, segs[0].seq+uint32(len(got)))
				return
			}
			got = append(got, pkt[20+32:]...)
			packets++
		}
		for i, s := range segs {
			if want := s.build()[52:]; !bytes.Equal(got[i*mss:(i+1)*mss], want) {
				t.Errorf("payload of segment %d differs", i)
				return
			}
		}
		if packets > maxPackets {
			t.Errorf("%d segments arrived as %d packets: at most %d expected", n, packets, maxPackets)
		}
		t.Logf("%d segments arrived as %d packets", n, packets)
	})
}

// BenchmarkTUNSend: the client-to-device path on a real device, towards a blackhole route (the kernel forwards
// and drops: no reply traffic), as CPU time per packet of the whole process (getrusage: the writer goroutine
// and the kernel's work in the writes included) and per GiB. bulk: one flow's 1400-byte segments, merged or
// (nomerge) written one by one; acks: pure ACKs, which nothing merges.
func BenchmarkTUNSend(b *testing.B) {
	for _, bc := range []struct {
		name  string
		merge bool
		mss   int
	}{{"bulk", true, 1400}, {"bulk-nomerge", false, 1400}, {"acks", true, 0}} {
		b.Run(bc.name, func(b *testing.B) {
			inNewNetns(b, func() {
				local, peer := netip.MustParseAddr("10.250.80.1"), netip.MustParseAddr("10.250.80.9")
				dp, port, ok := attachOne(b, "bch", local, peer, func([]byte) {})
				if !ok {
					return
				}
				defer dp.Close()
				if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0); err != nil {
					b.Error(err)
					return
				}
				_, blackhole, _ := net.ParseCIDR("10.250.81.0/24")
				if err := netlink.RouteAdd(&netlink.Route{Dst: blackhole, Type: unix.RTN_BLACKHOLE}); err != nil {
					b.Error(err)
					return
				}
				p := port.(*tunPort)
				if !bc.merge {
					p.wmu.Lock()
					p.nogro, p.fill.gro = true, false
					p.wmu.Unlock()
				}
				dst := netip.AddrPortFrom(netip.MustParseAddr("10.250.81.1"), 5201)
				var pkts [][]byte
				for _, s := range stream(netip.AddrPortFrom(peer, 40000), dst, 64, max(bc.mss, 1)) {
					if bc.mss == 0 {
						s.payload, s.ack = 0, s.seq // a pure ACK, its number going up
					}
					pkts = append(pkts, s.build())
				}
				var before, after unix.Rusage
				unix.Getrusage(unix.RUSAGE_SELF, &before)
				b.ResetTimer()
				for i := range b.N {
					port.Send(pkts[i%len(pkts)])
				}
				b.StopTimer()
				unix.Getrusage(unix.RUSAGE_SELF, &after)
				cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
				b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
				if bc.mss > 0 {
					b.ReportMetric(cpu.Seconds()/(float64(b.N)*float64(bc.mss)/(1<<30)), "cpu-s/GiB")
				}
			})
		})
	}
}

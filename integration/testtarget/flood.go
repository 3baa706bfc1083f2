package main

// Floods for the abuse tests, each bounded in count and time, run by the test inside a client's namespace so that
// they go through the tunnel:
//
//	-dnsflood ADDR:PORT -flows F -count N -for D   N DNS queries from F source ports, as fast as they go, for at
//	                                               most D; prints "sent S answered A"
//	-silent ADDR:PORT                              a UDP "DNS server" that reads and never answers (dns_upstream)
//	-udpflows ADDR:PORT -count N -for D            N UDP flows (one socket each) to ADDR, one datagram each, held
//	                                               open for D; prints "opened N"

import (
	"encoding/binary"
	"fmt"
	"log"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

func dnsFlood(addr string, flows, count int, d time.Duration) {
	q := []byte{0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 6, 't', 'a', 'r', 'g', 'e', 't', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1}
	var sent, answered atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for f := range flows {
		c, err := net.Dial("udp", addr)
		if err != nil {
			log.Fatal(err)
		}
		defer c.Close()
		wg.Add(1)
		go func() { // reader
			defer wg.Done()
			buf := make([]byte, 1500)
			for {
				c.SetReadDeadline(deadline.Add(time.Second))
				if _, err := c.Read(buf); err != nil {
					return
				}
				answered.Add(1)
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := append([]byte(nil), q...)
			for i := f; i < count && time.Now().Before(deadline); i += flows {
				binary.BigEndian.PutUint16(msg, uint16(i))
				if _, err := c.Write(msg); err == nil {
					sent.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("sent %d answered %d\n", sent.Load(), answered.Load())
}

func silent(addr string) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ready")
	buf := make([]byte, 65536)
	for {
		if _, _, err := pc.ReadFrom(buf); err != nil {
			return
		}
	}
}

func udpFlows(addr string, count int, d time.Duration) {
	var conns []net.Conn
	for range count {
		c, err := net.Dial("udp", addr)
		if err != nil {
			log.Fatal(err)
		}
		c.Write([]byte("flow"))
		conns = append(conns, c)
	}
	fmt.Printf("opened %d\n", len(conns))
	time.Sleep(d) // the flows' lifetime, not synchronisation: the test waits on the server's log
	for _, c := range conns {
		c.Close()
	}
}

// Command testtarget is the service the end-to-end tests reach through the tunnel. It listens on every address
// given (inside the test's network namespace) with HTTP on TCP and an echo on UDP:
//
//	GET /bytes?n=N&seed=S   N bytes of the deterministic stream S (see integration/internal/stream);
//	                        &rate=R paces them at R bytes per second; &text=1 serves the compressible text
//	                        stream S instead of random bytes
//	PUT /sink               reads the body, answers "SHA256HEX COUNT"
//	GET /hello              "hello from ADDR"
//	GET /stats              number of TCP connections accepted on this address before this request's own
//
// With -dnsflood or -silent it floods a DNS server or plays a silent one instead (flood.go).
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"ocgate/integration/internal/stream"
)

func main() {
	listen := flag.String("listen", "", "comma-separated addr:port list")
	flood := flag.String("dnsflood", "", "flood this DNS server (flood.go) instead of serving")
	flows := flag.Int("flows", 64, "-dnsflood: source ports")
	count := flag.Int("count", 100000, "-dnsflood: queries at most")
	dur := flag.Duration("for", 5*time.Second, "-dnsflood: for at most this long")
	quiet := flag.String("silent", "", "a UDP server on this address that never answers (flood.go)")
	udpflows := flag.String("udpflows", "", "open -count UDP flows to this address for -for (flood.go)")
	flag.Parse()
	switch {
	case *udpflows != "":
		udpFlows(*udpflows, *count, *dur)
		return
	case *flood != "":
		dnsFlood(*flood, *flows, *count, *dur)
		return
	case *quiet != "":
		silent(*quiet)
		return
	}
	for _, addr := range strings.Split(*listen, ",") {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatal(err)
		}
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			log.Fatal(err)
		}
		go echo(pc)
		var accepted atomic.Int64
		mux := http.NewServeMux()
		mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
			n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
			seed, _ := strconv.ParseUint(r.URL.Query().Get("seed"), 10, 64)
			rate, _ := strconv.ParseInt(r.URL.Query().Get("rate"), 10, 64)
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			write := stream.Write
			if r.URL.Query().Get("text") == "1" {
				write = stream.WriteText
			}
			if rate <= 0 {
				write(w, n, seed)
				return
			}
			write(&pacedWriter{w: w, rate: rate, start: time.Now()}, n, seed)
		})
		mux.HandleFunc("PUT /sink", func(w http.ResponseWriter, r *http.Request) {
			h := sha256.New()
			n, err := io.Copy(h, r.Body)
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			fmt.Fprintf(w, "%s %d\n", hex.EncodeToString(h.Sum(nil)), n)
		})
		a := addr
		mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "hello from %s\n", a) })
		mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, accepted.Load()-1) })
		go http.Serve(countingListener{ln, &accepted}, mux)
	}
	fmt.Println("ready")
	select {}
}

// pacedWriter delays writes so that no more than rate bytes per second leave.
type pacedWriter struct {
	w     io.Writer
	rate  int64
	start time.Time
	sent  int64
}

func (p *pacedWriter) Write(b []byte) (int, error) {
	for len(b) > 0 {
		chunk := b[:min(len(b), 16<<10)]
		if ahead := time.Duration(p.sent*int64(time.Second)/p.rate) - time.Since(p.start); ahead > 0 {
			time.Sleep(ahead)
		}
		n, err := p.w.Write(chunk)
		p.sent += int64(n)
		if err != nil {
			return 0, err
		}
		if f, ok := p.w.(http.Flusher); ok {
			f.Flush()
		}
		b = b[n:]
	}
	return len(b), nil
}

type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func echo(pc net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo(buf[:n], from)
	}
}

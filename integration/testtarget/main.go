// Command testtarget is the service the end-to-end tests reach through the tunnel. It listens on every address
// given (inside the test's network namespace) with HTTP on TCP and an echo on UDP:
//
//	GET /bytes?n=N&seed=S   N bytes of the deterministic stream S (see integration/internal/stream)
//	PUT /sink               reads the body, answers "SHA256HEX COUNT"
//	GET /hello              "hello from ADDR"
//	GET /stats              number of TCP connections accepted on this address before this request's
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

	"ocgate/integration/internal/stream"
)

func main() {
	listen := flag.String("listen", "", "comma-separated addr:port list")
	flag.Parse()
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
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			stream.Write(w, n, seed)
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

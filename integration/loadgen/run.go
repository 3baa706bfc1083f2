package main

import (
	"context"
	"crypto/tls"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"

	"ocgate/protocol/client"
)

// Report is what a run measured. Durations are in milliseconds, sizes in KiB unless named otherwise.
type Report struct {
	URL         string  `json:"url"`
	Mode        string  `json:"mode"`
	DTLS        bool    `json:"dtls"`
	Concurrency int     `json:"concurrency"`
	Requested   int     `json:"sessions_requested"`
	Established int     `json:"sessions_established"`
	EstablishS  float64 `json:"establish_seconds"`
	PerSecond   float64 `json:"sessions_per_second"`

	Latency Percentiles            `json:"connect_latency_ms"` // TCP connect → CONNECT 200 (→ DTLS)
	Stages  map[string]Percentiles `json:"stage_latency_ms"`   // time from TCP start to the end of each step
	Ciphers map[string]int         `json:"dtls_cipher_suites,omitempty"`
	Errors  map[string]int         `json:"errors"`
	Lost    int                    `json:"sessions_lost_during_run"` // ended before the loadgen closed them

	Client client.Stats  `json:"client_counters"` // summed over the sessions, before closing
	Server *ServerReport `json:"server,omitempty"`
	Ping   *PingReport   `json:"ping,omitempty"`
	Bulk   *BulkReport   `json:"bulk,omitempty"`
	Flows  *FlowsReport  `json:"flows,omitempty"`

	LoadgenCPUSeconds float64 `json:"loadgen_cpu_seconds"`
}

// Percentiles of a set of durations, in milliseconds.
type Percentiles struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

func percentiles(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(d)
	slices.Sort(s)
	ms := func(x time.Duration) float64 { return float64(x.Microseconds()) / 1000 }
	at := func(q float64) float64 {
		i := int(q*float64(len(s))+0.5) - 1
		return ms(s[min(max(i, 0), len(s)-1)])
	}
	var sum time.Duration
	for _, x := range s {
		sum += x
	}
	return Percentiles{N: len(s), P50: at(0.5), P90: at(0.9), P99: at(0.99), Max: ms(s[len(s)-1]), Mean: ms(sum / time.Duration(len(s)))}
}

// ServerReport is sampled from /proc.
type ServerReport struct {
	PIDs          []int   `json:"pids"`
	Processes     int     `json:"processes_after"`
	RSSBeforeKiB  uint64  `json:"rss_before_kib"`
	RSSAfterKiB   uint64  `json:"rss_after_kib"` // after establishing (+ settle)
	RSSEndKiB     uint64  `json:"rss_end_kib"`   // after the traffic phase, before closing
	RSSPerSession float64 `json:"rss_per_session_kib"`
	PSSBeforeKiB  uint64  `json:"pss_before_kib,omitempty"`
	PSSAfterKiB   uint64  `json:"pss_after_kib,omitempty"`
	PSSPerSession float64 `json:"pss_per_session_kib,omitempty"`
	CPUEstablish  float64 `json:"cpu_seconds_establish"` // user+system while the sessions were being established
	CPUPerSession float64 `json:"cpu_ms_per_session"`    // the same per established session, in ms
	CPUSeconds    float64 `json:"cpu_seconds_traffic"`   // user+system during the traffic phase (bulk: the measured window)
	Error         string  `json:"error,omitempty"`
}

type result struct {
	s   *client.Session
	err error
}

type errorCounter struct {
	mu sync.Mutex
	m  map[string]int
}

func (e *errorCounter) add(kind string) {
	e.mu.Lock()
	e.m[kind]++
	e.mu.Unlock()
}

func (c *config) validate() error {
	switch {
	case c.URL == "":
		return errors.New("--url is required")
	case c.N < 1 || c.N > 65535:
		return errors.New("-n must be 1..65535")
	case c.Concurrency < 1 || c.Concurrency > 4096:
		return errors.New("--concurrency must be 1..4096")
	case c.Duration < 0 || c.Duration > 24*time.Hour:
		return errors.New("--duration must be 0..24h")
	case c.Timeout <= 0 || c.Timeout > 10*time.Minute:
		return errors.New("--timeout must be in (0, 10m]")
	case c.Settle < 0 || c.Settle > time.Hour || c.Warmup < 0 || c.Warmup > time.Hour:
		return errors.New("--settle and --warmup must be 0..1h")
	}
	switch c.Mode {
	case "idle":
	case "ping":
		if c.Rate <= 0 || c.Rate > 10000 {
			return errors.New("--rate must be in (0, 10000]")
		}
		if c.Size < 16 || c.Size > 1400 {
			return errors.New("--size must be 16..1400")
		}
		if c.Target != "" {
			if _, err := parseTarget(c.Target); err != nil {
				return err
			}
		}
	case "bulk":
		if _, err := netip.ParseAddrPort(c.BulkTarget); err != nil {
			return fmt.Errorf("--bulk-target: want IP:PORT: %v", err)
		}
		if c.BulkDir != "down" && c.BulkDir != "up" && c.BulkDir != "both" {
			return errors.New("--bulk-dir must be down, up or both")
		}
		if c.Duration <= 0 {
			return errors.New("bulk needs --duration > 0")
		}
	case "flows":
		if _, err := netip.ParseAddrPort(c.BulkTarget); err != nil {
			return fmt.Errorf("--bulk-target: want IP:PORT: %v", err)
		}
		if c.Flows <= 0 || c.Flows > 100000 {
			return errors.New("--flows must be 1..100000")
		}
	default:
		return fmt.Errorf("--mode %q: want idle, ping, bulk or flows", c.Mode)
	}
	return nil
}

// authOptions adds the client certificate (--certificate, --sslkey) and the one-time password (--token-secret)
// to o.
func (c *config) authOptions(o *client.Options) error {
	if c.Cert != "" {
		key := c.Key
		if key == "" {
			key = c.Cert
		}
		cert, err := tls.LoadX509KeyPair(c.Cert, key)
		if err != nil {
			return fmt.Errorf("--certificate: %w", err)
		}
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	if c.TokenSecret != "" {
		secret := c.TokenSecret
		if h, ok := strings.CutPrefix(secret, "0x"); ok {
			raw, err := hex.DecodeString(h)
			if err != nil {
				return fmt.Errorf("--token-secret: %w", err)
			}
			secret = base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(raw)
		}
		opts := totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1}
		if _, err := totp.GenerateCodeCustom(secret, time.Now(), opts); err != nil {
			return fmt.Errorf("--token-secret: %w", err)
		}
		o.Token = func() (string, error) { return totp.GenerateCodeCustom(secret, time.Now(), opts) }
	}
	return nil
}

// run establishes the sessions, runs the traffic phase, closes everything and reports.
func run(ctx context.Context, c config, progress io.Writer) (*Report, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	opts := client.Options{URL: c.URL, User: c.User, Password: c.Password, Group: c.Group, Pin: c.Pin,
		InsecureSkipVerify: c.Insecure, DTLS: c.DTLS, RequireDTLS: c.DTLS, PionRecords: c.PionRecords}
	if err := c.authOptions(&opts); err != nil {
		return nil, err
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	rep := &Report{URL: c.URL, Mode: c.Mode, DTLS: c.DTLS, Concurrency: c.Concurrency, Requested: c.N,
		Stages: map[string]Percentiles{}, Errors: map[string]int{}}
	errs := &errorCounter{m: rep.Errors}
	cpu0 := selfCPU()
	var srv *procSampler
	if len(c.ServerPIDs) > 0 {
		srv = &procSampler{pids: c.ServerPIDs, tree: c.ServerTree}
		rep.Server = &ServerReport{PIDs: c.ServerPIDs}
		s, err := srv.sample()
		if err != nil {
			return nil, fmt.Errorf("--server-pid: %w", err)
		}
		rep.Server.RSSBeforeKiB, rep.Server.PSSBeforeKiB = s.rssKiB, s.pssKiB
	}

	// Establish.
	cpuEst := srv.cpu()
	results := make([]result, c.N)
	jobs := make(chan int)
	var done sync.WaitGroup
	var mu sync.Mutex
	established := 0
	start := time.Now()
	for w := 0; w < min(c.Concurrency, c.N); w++ {
		done.Add(1)
		go func() {
			defer done.Done()
			for i := range jobs {
				o := opts
				o.Hostname = fmt.Sprintf("loadgen-%d", i)
				if strings.Contains(c.User, "%d") {
					o.User = fmt.Sprintf(c.User, i)
				}
				dctx, cancel := context.WithTimeout(ctx, c.Timeout)
				s, err := client.Dial(dctx, o)
				cancel()
				results[i] = result{s, err}
				if err != nil {
					errs.add(errorKind(err))
				} else {
					mu.Lock()
					established++
					mu.Unlock()
				}
			}
		}()
	}
	stopProgress := startProgress(progress, func() string {
		mu.Lock()
		defer mu.Unlock()
		return fmt.Sprintf("established %d/%d, %d failed", established, c.N, countErrors(errs))
	})
	for i := 0; i < c.N && ctx.Err() == nil; i++ {
		jobs <- i
	}
	close(jobs)
	done.Wait()
	elapsed := time.Since(start)
	stopProgress()
	if srv != nil {
		rep.Server.CPUEstablish = srv.cpu() - cpuEst
	}
	var sessions []*client.Session
	var total []time.Duration
	stages := map[string][]time.Duration{}
	rep.Ciphers = map[string]int{}
	for _, r := range results {
		if r.s == nil {
			continue
		}
		sessions = append(sessions, r.s)
		t := r.s.Timing
		total = append(total, t.Total)
		stages["tcp"] = append(stages["tcp"], t.TCP)
		stages["tls"] = append(stages["tls"], t.TLS)
		stages["auth"] = append(stages["auth"], t.Auth)
		stages["connect"] = append(stages["connect"], t.Connect)
		if t.DTLS > 0 {
			stages["dtls"] = append(stages["dtls"], t.DTLS)
			rep.Ciphers[r.s.DTLSUsed]++
		}
	}
	rep.Established = len(sessions)
	if srv != nil && len(sessions) > 0 {
		rep.Server.CPUPerSession = 1000 * rep.Server.CPUEstablish / float64(len(sessions))
	}
	rep.EstablishS = elapsed.Seconds()
	if elapsed > 0 {
		rep.PerSecond = float64(len(sessions)) / elapsed.Seconds()
	}
	rep.Latency = percentiles(total)
	for k, v := range stages {
		rep.Stages[k] = percentiles(v)
	}
	defer func() { closeAll(sessions, c.Concurrency, errs) }()
	if ctx.Err() != nil || len(sessions) == 0 {
		return rep, nil
	}

	if srv != nil {
		sleepCtx(ctx, c.Settle)
		s, err := srv.sample()
		if err != nil {
			rep.Server.Error = err.Error()
		}
		rep.Server.RSSAfterKiB, rep.Server.PSSAfterKiB, rep.Server.Processes = s.rssKiB, s.pssKiB, s.procs
		if n := len(sessions); n > 0 {
			rep.Server.RSSPerSession = (float64(s.rssKiB) - float64(rep.Server.RSSBeforeKiB)) / float64(n)
			if s.pssKiB > 0 {
				rep.Server.PSSPerSession = (float64(s.pssKiB) - float64(rep.Server.PSSBeforeKiB)) / float64(n)
			}
		}
	}

	// Traffic.
	cpuStart := srv.cpu()
	switch c.Mode {
	case "idle":
		stop := startProgress(progress, func() string { return fmt.Sprintf("holding %d idle sessions", liveCount(sessions)) })
		sleepCtx(ctx, c.Duration)
		stop()
	case "ping":
		rep.Ping = runPing(ctx, c, sessions, errs, progress)
	case "bulk":
		rep.Bulk = runBulk(ctx, c, sessions, errs, progress, srv)
	case "flows":
		rep.Flows = runFlows(ctx, c, sessions, errs, progress, srv)
	}
	if srv != nil {
		if rep.Bulk != nil {
			rep.Server.CPUSeconds = rep.Bulk.serverCPU
		} else {
			rep.Server.CPUSeconds = srv.cpu() - cpuStart
		}
		if s, err := srv.sample(); err == nil {
			rep.Server.RSSEndKiB = s.rssKiB
		}
	}
	for _, s := range sessions {
		st := s.Stats()
		c := &rep.Client
		c.TxPackets += st.TxPackets
		c.TxBytes += st.TxBytes
		c.RxPackets += st.RxPackets
		c.RxBytes += st.RxBytes
		c.DTLSTx += st.DTLSTx
		c.DTLSRx += st.DTLSRx
		c.RxDropped += st.RxDropped
		c.DPDAnswered += st.DPDAnswered
		c.DTLSFallbacks += st.DTLSFallbacks
		c.CSTPWriteErrors += st.CSTPWriteErrors
		c.ServerDPDSeenOnDTLS += st.ServerDPDSeenOnDTLS
		c.ServerDPDSeenOnCSTP += st.ServerDPDSeenOnCSTP
		c.UnknownFramesIgnored += st.UnknownFramesIgnored
		if err := s.Err(); err != nil {
			rep.Lost++
			errs.add("session ended: " + errorKind(err))
		}
	}
	closeAll(sessions, c.Concurrency, errs)
	sessions = nil
	rep.LoadgenCPUSeconds = selfCPU() - cpu0
	return rep, nil
}

func countErrors(e *errorCounter) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, v := range e.m {
		n += v
	}
	return n
}

func liveCount(ss []*client.Session) int {
	n := 0
	for _, s := range ss {
		if s.Err() == nil {
			n++
		}
	}
	return n
}

// closeAll logs every session out (DISCONNECT 0xb0) with bounded parallelism.
func closeAll(ss []*client.Session, par int, errs *errorCounter) {
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for _, s := range ss {
		if s.Err() != nil {
			s.Close()
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := s.Close(); err != nil {
				errs.add("close: " + errorKind(err))
			}
		}()
	}
	wg.Wait()
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// startProgress prints status() to w every 2 s until the returned func is called.
func startProgress(w io.Writer, status func() string) func() {
	if w == io.Discard {
		return func() {}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				fmt.Fprintf(w, "loadgen: %5.1fs %s\n", time.Since(start).Seconds(), status())
			}
		}
	}()
	return func() { close(stop); wg.Wait() }
}

// errorKind turns an error into a short, low-cardinality label: the stage, then the cause.
func errorKind(err error) string {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Stage + ": " + cause(ce.Err)
	}
	return cause(err)
}

func cause(err error) string {
	var se *client.StatusError
	var de *client.DisconnectError
	var ne net.Error
	switch {
	case errors.Is(err, client.ErrAuthFailed):
		return err.Error() // the server's status line or message: a handful of distinct texts
	case errors.As(err, &se):
		return se.Status
	case errors.As(err, &de):
		return strings.TrimPrefix(de.Error(), "server sent ")
	case errors.Is(err, client.ErrClosed):
		return "closed"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "interrupted"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, syscall.EPIPE):
		return "broken pipe"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too many open files"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "no free local port"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "EOF"
	}
	s := err.Error()
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return s
}

func (r *Report) print(w io.Writer) {
	dtls := "CSTP only"
	if r.DTLS {
		dtls = "DTLS required"
	}
	fmt.Fprintf(w, "target        %s  mode %s, %s, concurrency %d\n", r.URL, r.Mode, dtls, r.Concurrency)
	fmt.Fprintf(w, "sessions      %d of %d established in %.2f s: %.1f sessions/s\n", r.Established, r.Requested, r.EstablishS, r.PerSecond)
	l := r.Latency
	what := "TCP connect → CONNECT 200"
	if r.DTLS {
		what += " → DTLS up"
	}
	fmt.Fprintf(w, "latency       p50 %.1f ms  p90 %.1f ms  p99 %.1f ms  max %.1f ms  (%s)\n", l.P50, l.P90, l.P99, l.Max, what)
	var parts []string
	for _, k := range []string{"tcp", "tls", "auth", "connect", "dtls"} {
		if p, ok := r.Stages[k]; ok && p.N > 0 {
			parts = append(parts, fmt.Sprintf("%s %.1f/%.1f", k, p.P50, p.P99))
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "  steps done  p50/p99 ms since TCP start: %s\n", strings.Join(parts, ", "))
	}
	if len(r.Ciphers) > 0 {
		var cs []string
		for k, v := range r.Ciphers {
			cs = append(cs, fmt.Sprintf("%s ×%d", k, v))
		}
		sort.Strings(cs)
		fmt.Fprintf(w, "  DTLS suites %s\n", strings.Join(cs, ", "))
	}
	if s := r.Server; s != nil {
		fmt.Fprintf(w, "server RSS    %.1f MiB before, %.1f MiB with the sessions, %.1f MiB at the end: %.1f KiB per session (pids %v, %d processes)\n",
			float64(s.RSSBeforeKiB)/1024, float64(s.RSSAfterKiB)/1024, float64(s.RSSEndKiB)/1024, s.RSSPerSession, s.PIDs, s.Processes)
		if s.PSSAfterKiB > 0 {
			fmt.Fprintf(w, "server PSS    %.1f → %.1f MiB: %.1f KiB per session\n", float64(s.PSSBeforeKiB)/1024, float64(s.PSSAfterKiB)/1024, s.PSSPerSession)
		}
		fmt.Fprintf(w, "server CPU    %.2f s establishing (%.1f ms per session), %.2f s during the traffic phase\n",
			s.CPUEstablish, s.CPUPerSession, s.CPUSeconds)
		if s.Error != "" {
			fmt.Fprintf(w, "server        sampling error: %s\n", s.Error)
		}
	}
	if p := r.Ping; p != nil {
		fmt.Fprintf(w, "ping          %s, %d sent, %d answered (%.2f%% lost), RTT p50 %.2f ms p99 %.2f ms max %.2f ms\n",
			p.Target, p.Sent, p.Received, p.LossPercent, p.RTT.P50, p.RTT.P99, p.RTT.Max)
	}
	if f := r.Flows; f != nil {
		fmt.Fprintf(w, "flows         %d of %d TCP connections open in %.2f s: %.0f flows/s; server RSS +%d KiB = %.1f KiB per flow\n",
			f.Open, f.Requested, f.Seconds, f.PerSecond, f.RSSDeltaKiB, f.RSSPerFlowKiB)
	}
	if b := r.Bulk; b != nil {
		fmt.Fprintf(w, "bulk          %s to %s, %d sessions, %d connections, %.2f s window\n", b.Dir, b.Target, b.Sessions, b.Conns, b.Seconds)
		fmt.Fprintf(w, "  throughput  down %.1f MiB/s, up %.1f MiB/s, total %.1f MiB/s = %.0f Mbit/s (TCP payload, aggregate)\n",
			b.DownMiBps, b.UpMiBps, b.TotalMiBps, b.TotalMiBps*8*1.048576)
		if b.ServerCPUPerGiB > 0 {
			fmt.Fprintf(w, "  server CPU  %.2f s in the window: %.2f CPU-s per GiB\n", b.serverCPU, b.ServerCPUPerGiB)
		}
		fmt.Fprintf(w, "  per session down/up MiB/s: min %.1f/%.1f max %.1f/%.1f\n", b.MinDown, b.MinUp, b.MaxDown, b.MaxUp)
	}
	c := r.Client
	fmt.Fprintf(w, "client        %d packets sent (%d over DTLS), %d received (%d over DTLS), %d dropped; %d server DPD answered (CSTP %d, DTLS %d), %d DTLS fallbacks\n",
		c.TxPackets, c.DTLSTx, c.RxPackets, c.DTLSRx, c.RxDropped, c.DPDAnswered, c.ServerDPDSeenOnCSTP, c.ServerDPDSeenOnDTLS, c.DTLSFallbacks)
	fmt.Fprintf(w, "loadgen CPU   %.2f s\n", r.LoadgenCPUSeconds)
	if len(r.Errors) == 0 && r.Lost == 0 {
		fmt.Fprintln(w, "errors        none")
		return
	}
	var ks []string
	for k := range r.Errors {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	fmt.Fprintln(w, "errors")
	for _, k := range ks {
		fmt.Fprintf(w, "  %6d  %s\n", r.Errors[k], k)
	}
}

package netlab

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
)

// The probe protocol, over UDP: a request is an 8-byte big-endian
// sequence number; the answer repeats it and appends the answering host's
// name.

// Serve answers every request arriving on c until ctx is done, then closes
// c. It answers from the address the request was sent to (a virtual IP
// rather than the host's own), as a client that checks the source expects.
func Serve(ctx context.Context, c net.PacketConn, name string) error {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	p := ipv4.NewPacketConn(c)
	withDst := p.SetControlMessage(ipv4.FlagDst, true) == nil
	buf := make([]byte, 64)
	for {
		n, cm, src, err := p.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("probe responder %s: %w", name, err)
		}
		if n != 8 {
			continue
		}
		answer := append(buf[:8:8], name...)
		var wcm *ipv4.ControlMessage
		if withDst && cm != nil && cm.Dst != nil {
			wcm = &ipv4.ControlMessage{Src: cm.Dst}
		}
		// An answer that cannot be sent (the address just went away) is
		// a lost answer, as on a real network.
		_, _ = p.WriteTo(answer, wcm, src)
	}
}

// Respond listens on a UDP address (e.g. "0.0.0.0:7000", answering on
// every address the host holds, virtual IPs included) and answers probe
// requests with name until ctx is done. A binary that runs it as a
// (hidden) subcommand taking ADDR NAME can be started in a host with
// StartResponder.
func Respond(ctx context.Context, addr, name string) error {
	c, err := net.ListenPacket("udp4", addr)
	if err != nil {
		return fmt.Errorf("probe responder %s: %w", name, err)
	}
	fmt.Fprintf(os.Stdout, "probe responder %s listening on %s\n", name, c.LocalAddr())
	return Serve(ctx, c, name)
}

// StartResponder starts a responder process in host: argv followed by addr
// and the host's name, e.g. argv = lifeboat's path and its hidden
// subcommand. It returns once the responder answers inside the host.
func (l *Lab) StartResponder(host, addr string, argv ...string) (*Proc, error) {
	if len(argv) == 0 {
		return nil, errors.New("start responder: no command")
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("start responder in %s: %w", host, err)
	}
	p, err := l.Start(host, argv[0], append(argv[1:], addr, host)...)
	if err != nil {
		return nil, err
	}
	local := net.JoinHostPort("127.0.0.1", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		got, err := l.Ask(ctx, host, local)
		cancel()
		if err == nil && got == host {
			return p, nil
		}
		if !p.Running() || time.Now().After(deadline) {
			out, _ := os.ReadFile(p.Log)
			_ = p.Kill()
			return nil, fmt.Errorf("start responder in %s: not answering on %s (last: %q, %v): %s", host, local, got, err, strings.TrimSpace(string(out)))
		}
	}
}

// Ask sends one probe request from a host to a UDP address and returns
// the name in the answer. ctx bounds the wait (one second if it has no
// deadline).
func (l *Lab) Ask(ctx context.Context, from, target string) (string, error) {
	to, err := net.ResolveUDPAddr("udp4", target)
	if err != nil {
		return "", fmt.Errorf("ask %s from %s: %w", target, from, err)
	}
	c, err := l.ListenPacket(from, "udp4", ":0")
	if err != nil {
		return "", err
	}
	defer c.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Second)
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Now()) })
	defer stop()
	_ = c.SetReadDeadline(deadline)
	req := make([]byte, 8)
	_, _ = rand.Read(req)
	if _, err := c.WriteTo(req, to); err != nil {
		return "", fmt.Errorf("ask %s from %s: %w", target, from, err)
	}
	buf := make([]byte, 512)
	for {
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return "", fmt.Errorf("ask %s from %s: no answer: %w", target, from, err)
		}
		if n >= 8 && string(buf[:8]) == string(req) {
			return string(buf[8:n]), nil
		}
	}
}

// ProbeOptions tune a Prober.
type ProbeOptions struct {
	// Interval between requests (default 10ms).
	Interval time.Duration
}

// Prober sends a request every Interval to one target and records each
// request and its answer.
type Prober struct {
	conn     net.PacketConn
	target   net.Addr
	interval time.Duration
	stop     chan struct{}
	sent     chan struct{} // closed when the sender has stopped
	recvd    chan struct{} // closed when the receiver has stopped
	stopOnce sync.Once

	mu      sync.Mutex
	samples []Sample
	changed chan struct{} // closed and replaced on every new request or answer
}

// StartProber probes target (VIP:port) from a host. The socket is made in
// the host's namespace; timing runs in this process on the monotonic
// clock.
func (l *Lab) StartProber(host, target string, opts ProbeOptions) (*Prober, error) {
	c, err := l.ListenPacket(host, "udp4", ":0")
	if err != nil {
		return nil, err
	}
	p, err := NewProber(c, target, opts)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("probe %s from %s: %w", target, host, err)
	}
	return p, nil
}

// NewProber starts probing target over c, which it owns from now on. c
// must not be connected: an unconnected socket ignores ICMP errors, which
// would otherwise fail reads while a target is unreachable.
func NewProber(c net.PacketConn, target string, opts ProbeOptions) (*Prober, error) {
	to, err := net.ResolveUDPAddr("udp4", target)
	if err != nil {
		return nil, err
	}
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Millisecond
	}
	p := &Prober{conn: c, target: to, interval: opts.Interval, stop: make(chan struct{}),
		sent: make(chan struct{}), recvd: make(chan struct{}), changed: make(chan struct{})}
	go p.send()
	go p.receive()
	return p, nil
}

func (p *Prober) send() {
	defer close(p.sent)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	req := make([]byte, 8)
	for {
		p.mu.Lock()
		seq := uint64(len(p.samples))
		now := time.Now()
		p.samples = append(p.samples, Sample{Seq: seq, Sent: now})
		p.notifyLocked()
		p.mu.Unlock()
		binary.BigEndian.PutUint64(req, seq)
		// A send error (no route while a link is down) is a lost request.
		_, _ = p.conn.WriteTo(req, p.target)
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

func (p *Prober) receive() {
	defer close(p.recvd)
	buf := make([]byte, 512)
	for {
		n, _, err := p.conn.ReadFrom(buf)
		now := time.Now()
		if err != nil {
			return // closed by Stop
		}
		if n < 8 {
			continue
		}
		seq := binary.BigEndian.Uint64(buf[:8])
		p.mu.Lock()
		if seq < uint64(len(p.samples)) && !p.samples[seq].OK() {
			p.samples[seq].Answered = now
			p.samples[seq].From = string(buf[8:n])
			p.notifyLocked()
		}
		p.mu.Unlock()
	}
}

func (p *Prober) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Samples returns a copy of the samples so far, in the order sent.
func (p *Prober) Samples() []Sample {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Sample(nil), p.samples...)
}

// Wait waits until cond holds for the samples so far (called with the
// prober's lock held: cond must not keep the slice or block).
func (p *Prober) Wait(ctx context.Context, cond func([]Sample) bool) error {
	for {
		p.mu.Lock()
		ok, ch := cond(p.samples), p.changed
		p.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// WaitAnswer waits for the first answer from host (any host if "") to a
// request sent at or after after, and returns that sample.
func (p *Prober) WaitAnswer(ctx context.Context, host string, after time.Time) (Sample, error) {
	var got Sample
	err := p.Wait(ctx, func(s []Sample) bool {
		for i := sort.Search(len(s), func(i int) bool { return !s[i].Sent.Before(after) }); i < len(s); i++ {
			if s[i].OK() && (host == "" || s[i].From == host) {
				got = s[i]
				return true
			}
		}
		return false
	})
	if err != nil {
		return got, fmt.Errorf("wait for an answer from %q: %w", host, err)
	}
	return got, nil
}

// Stop stops sending, waits up to ten intervals (at least 100ms) for
// the answer to the last request, closes the socket and returns every
// sample.
func (p *Prober) Stop() []Sample {
	p.stopOnce.Do(func() {
		close(p.stop)
		<-p.sent
		ctx, cancel := context.WithTimeout(context.Background(), max(10*p.interval, 100*time.Millisecond))
		_ = p.Wait(ctx, func(s []Sample) bool { return len(s) > 0 && s[len(s)-1].OK() })
		cancel()
		p.conn.Close()
		<-p.recvd
	})
	return p.Samples()
}

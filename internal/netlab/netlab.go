// Package netlab builds small networks of Linux network namespaces for
// tests and benchmarks: nodes and a client on one LAN behind a bridge, and
// optionally a router that sends a virtual IP to whichever node a cloud
// route table names. It injects faults (a node losing its link, a cut
// between two hosts, frozen or killed processes), runs processes inside
// hosts, measures client-observed outages with a UDP prober, and runs
// keepalived for comparison.
//
// Everything lives in namespaces the lab creates: the bridge too, so the
// host's own network is never touched, and every address is reachable only
// from inside the lab. Close removes the namespaces and kills every process
// the lab started. Building a lab needs root; New reports ErrUnavailable
// when it cannot, so tests can skip.
package netlab

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// ErrUnavailable is wrapped by New's error when this machine cannot build
// a lab (not root, iproute2 missing, namespaces not permitted).
var ErrUnavailable = errors.New("network lab unavailable")

// Host names every lab has. Nodes are "node1".."nodeN".
const (
	Client = "client"
	Router = "router"
)

// Options describe the lab to build.
type Options struct {
	// Nodes is the number of nodes (default 3, at most 50).
	Nodes int
	// Router adds the AWS route-table layout: a router with one leg on the
	// node LAN and one on a client subnet, the client on that subnet with
	// its default route through the router, and the nodes' default route
	// through the router too. Without it the client sits on the node LAN.
	Router bool
	// Dir holds process logs and configs (default: a new temporary
	// directory, removed by Close).
	Dir string
	// Firewall chooses how Cut drops traffic: "nft", "iptables", or ""
	// for nft when installed, else iptables.
	Firewall string
	// Logger, if set, gets one line per change the lab makes.
	Logger *slog.Logger
}

// Lab is a running set of namespaces. Its methods are safe for concurrent
// use.
type Lab struct {
	opts   Options
	prefix string // namespace name prefix, unique per process and lab
	net    byte   // third octet of every lab subnet
	dir    string
	ownDir bool
	log    *slog.Logger

	hosts []string            // in creation order: nodes, then client and router
	ips   map[string][]string // host -> its own addresses (first is primary)

	mu      sync.Mutex
	procs   map[int]*Proc      // started processes by PID
	cuts    map[[2]string]bool // sorted host pairs currently cut
	fwReady map[string]bool    // hosts whose firewall table exists
	closed  bool
	logSeq  map[string]int // per host and command, for log file names
}

var labSeq atomic.Int32

// New builds a lab. On error nothing is left behind.
func New(opts Options) (*Lab, error) {
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Nodes < 1 || opts.Nodes > 50 {
		return nil, fmt.Errorf("build network lab: %d nodes (want 1 to 50)", opts.Nodes)
	}
	switch opts.Firewall {
	case "", "nft", "iptables":
	default:
		return nil, fmt.Errorf("build network lab: firewall %q (want nft, iptables or empty)", opts.Firewall)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("network namespaces need root: %w", ErrUnavailable)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return nil, fmt.Errorf("ip not installed (apt-get install iproute2): %w", ErrUnavailable)
	}
	seq := labSeq.Add(1)
	pid := os.Getpid()
	l := &Lab{
		opts:    opts,
		prefix:  fmt.Sprintf("nl%d-%d-", pid, seq),
		net:     byte((pid+int(seq)*17)%250 + 3),
		log:     opts.Logger,
		ips:     map[string][]string{},
		procs:   map[int]*Proc{},
		cuts:    map[[2]string]bool{},
		fwReady: map[string]bool{},
		logSeq:  map[string]int{},
	}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	l.dir = opts.Dir
	if l.dir == "" {
		d, err := os.MkdirTemp("", "netlab-")
		if err != nil {
			return nil, fmt.Errorf("build network lab: %w", err)
		}
		l.dir, l.ownDir = d, true
	} else if err := os.MkdirAll(l.dir, 0o700); err != nil {
		return nil, fmt.Errorf("build network lab: %w", err)
	}
	if err := ipCmd("netns", "add", l.bridgeNS()); err != nil {
		l.removeDir()
		return nil, fmt.Errorf("cannot create network namespaces here: %v: %w", err, ErrUnavailable)
	}
	if err := l.build(); err != nil {
		l.Close()
		return nil, fmt.Errorf("build network lab: %w", err)
	}
	l.log.Info("network lab ready", "prefix", l.prefix, "nodes", opts.Nodes, "router", opts.Router, "dir", l.dir)
	return l, nil
}

// Addresses: nodes 10.213.N.i, the client 10.213.N.200 (flat) or
// 10.214.N.2 (router layout), the router 10.213.N.254 and 10.214.N.1,
// virtual IPs 10.213.N.100+i (flat) or 10.215.N.i (router layout). They
// exist only inside the lab's namespaces, so two labs never clash; N
// differs between labs all the same (from the PID and a counter) so that
// their logs tell them apart.
func (l *Lab) lanIP(last int) string    { return fmt.Sprintf("10.213.%d.%d", l.net, last) }
func (l *Lab) clientIP(last int) string { return fmt.Sprintf("10.214.%d.%d", l.net, last) }

func (l *Lab) build() error {
	br := l.bridgeNS()
	if err := l.ipSeq(
		[]string{"-n", br, "link", "set", "lo", "up"},
		[]string{"-n", br, "link", "add", "br0", "type", "bridge"},
		[]string{"-n", br, "link", "set", "br0", "up"},
	); err != nil {
		return err
	}
	for i := 1; i <= l.opts.Nodes; i++ {
		n := fmt.Sprintf("node%d", i)
		if err := l.addHost(n, leg{"eth0", "br0", l.lanIP(i)}); err != nil {
			return err
		}
	}
	if !l.opts.Router {
		return l.addHost(Client, leg{"eth0", "br0", l.lanIP(200)})
	}
	if err := l.ipSeq(
		[]string{"-n", br, "link", "add", "br1", "type", "bridge"},
		[]string{"-n", br, "link", "set", "br1", "up"},
	); err != nil {
		return err
	}
	if err := l.addHost(Router, leg{"eth0", "br0", l.lanIP(254)}, leg{"eth1", "br1", l.clientIP(1)}); err != nil {
		return err
	}
	if err := inNetns(l.NS(Router), func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644)
	}); err != nil {
		return fmt.Errorf("enable forwarding on the router: %w", err)
	}
	if err := l.addHost(Client, leg{"eth0", "br1", l.clientIP(2)}); err != nil {
		return err
	}
	for _, h := range l.hosts {
		gw := l.lanIP(254)
		if h == Client {
			gw = l.clientIP(1)
		} else if h == Router {
			continue
		}
		if err := ipCmd("-n", l.NS(h), "route", "add", "default", "via", gw); err != nil {
			return err
		}
	}
	return nil
}

// leg is one interface of a host: its name inside the host, the bridge it
// is plugged into and its address (/24).
type leg struct{ dev, bridge, ip string }

func (l *Lab) addHost(h string, legs ...leg) error {
	ns := l.NS(h)
	if err := ipCmd("netns", "add", ns); err != nil {
		return err
	}
	l.hosts = append(l.hosts, h)
	if err := ipCmd("-n", ns, "link", "set", "lo", "up"); err != nil {
		return err
	}
	for _, g := range legs {
		peer := bridgePort(h, g.dev)
		if err := l.ipSeq(
			[]string{"-n", l.bridgeNS(), "link", "add", peer, "type", "veth", "peer", "name", g.dev, "netns", ns},
			[]string{"-n", l.bridgeNS(), "link", "set", peer, "master", g.bridge, "up"},
			[]string{"-n", ns, "addr", "add", g.ip + "/24", "dev", g.dev},
			[]string{"-n", ns, "link", "set", g.dev, "up"},
		); err != nil {
			return err
		}
		l.ips[h] = append(l.ips[h], g.ip)
	}
	return nil
}

// bridgePort names the bridge-side end of a host's interface: "vnode1-0"
// for node1's eth0 (at most 15 bytes).
func bridgePort(host, dev string) string {
	return "v" + host + "-" + strings.TrimPrefix(dev, "eth")
}

// Close kills every process the lab started (SIGKILL to each one's process
// group), removes every namespace and, when the lab made it, its
// directory. It reports the first failure but always does everything.
func (l *Lab) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	procs := make([]*Proc, 0, len(l.procs))
	for _, p := range l.procs {
		procs = append(procs, p)
	}
	l.mu.Unlock()
	var first error
	for _, p := range procs {
		if err := p.Kill(); err != nil && first == nil {
			first = err
		}
	}
	for _, h := range slices.Backward(l.hosts) {
		if err := ipCmd("netns", "del", l.NS(h)); err != nil && first == nil {
			first = err
		}
	}
	if err := ipCmd("netns", "del", l.bridgeNS()); err != nil && first == nil {
		first = err
	}
	l.removeDir()
	l.log.Info("network lab removed", "prefix", l.prefix)
	return first
}

func (l *Lab) removeDir() {
	if l.ownDir {
		_ = os.RemoveAll(l.dir)
	}
}

// Dir is where the lab keeps logs and configs.
func (l *Lab) Dir() string { return l.dir }

// Nodes returns the node names in order.
func (l *Lab) Nodes() []string {
	out := make([]string, l.opts.Nodes)
	for i := range out {
		out[i] = fmt.Sprintf("node%d", i+1)
	}
	return out
}

// Hosts returns every host: the nodes, the client and (router layout) the
// router.
func (l *Lab) Hosts() []string { return slices.Clone(l.hosts) }

// IP returns a host's primary address (the router's LAN leg), "" for an
// unknown host.
func (l *Lab) IP(host string) string {
	if ips := l.ips[host]; len(ips) > 0 {
		return ips[0]
	}
	return ""
}

// NodeIPs returns the nodes' addresses in order (demo.Options.IPs).
func (l *Lab) NodeIPs() []string {
	var out []string
	for _, n := range l.Nodes() {
		out = append(out, l.IP(n))
	}
	return out
}

// VIP returns the i-th (from 1) free address for a virtual IP: on the node
// LAN (10.213.N.100+i) in the flat layout, on a subnet no host is on
// (10.215.N.i) in the router layout, where only the router's route leads
// to it.
func (l *Lab) VIP(i int) string {
	if l.opts.Router {
		return fmt.Sprintf("10.215.%d.%d", l.net, i)
	}
	return l.lanIP(100 + i)
}

// VIPPrefix returns VIP(i) with the prefix length to add it with: /24 on
// the LAN, /32 in the router layout.
func (l *Lab) VIPPrefix(i int) string {
	if l.opts.Router {
		return l.VIP(i) + "/32"
	}
	return l.VIP(i) + "/24"
}

// NS returns the namespace name of a host.
func (l *Lab) NS(host string) string { return l.prefix + host }

func (l *Lab) bridgeNS() string { return l.prefix + "bridge" }

// Wrap returns the command prefix that runs a command in a host's
// namespace (demo.Options.Wrap).
func (l *Lab) Wrap(host string) []string { return []string{"ip", "netns", "exec", l.NS(host)} }

func (l *Lab) known(host string) error {
	if _, ok := l.ips[host]; !ok {
		return fmt.Errorf("no host %q in the lab (have %s)", host, strings.Join(l.hosts, ", "))
	}
	return nil
}

// ipCmd runs ip with args.
func ipCmd(args ...string) error {
	return run(nil, "ip", args...)
}

// run runs a command with stdin, reporting its output on failure.
func run(stdin []byte, name string, args ...string) error {
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func (l *Lab) ipSeq(cmds ...[]string) error {
	for _, c := range cmds {
		if err := ipCmd(c...); err != nil {
			return err
		}
	}
	return nil
}

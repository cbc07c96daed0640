package ip

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
	"github.com/lifeboat-ha/lifeboat/internal/spec"
)

func TestRegistered(t *testing.T) {
	reg, _ := kit.NewRegistry(Kit{})
	k, ok := reg.Lookup(Type)
	if !ok {
		t.Fatal(`the "ip" kit is not registered`)
	}
	if k.Type() != "ip" {
		t.Fatalf("Type() = %q", k.Type())
	}
}

func TestValidateAccepts(t *testing.T) {
	for _, p := range []map[string]string{
		{"address": "10.1.2.100/24", "interface": "eth0"},
		{"address": "10.1.2.100/32", "interface": "ens5"},
		{"address": "fd00::100/64", "interface": "eth0"},
		{"address": "2001:db8::1/128", "interface": "bond0.100"},
		{"address": "10.1.2.100/24", "interface": "eth0", "peers": "10.1.2.1, 10.1.2.2,10.1.2.1",
			"peer_timeout": "2s", "announce_count": "0", "duplicate_check": "false"},
		{"address": "192.168.0.1/31", "interface": "eth0"}, // RFC 3021: both addresses are hosts
	} {
		if ps := (Kit{}).Validate(p); len(ps) != 0 {
			t.Errorf("Validate(%v) = %v, want no problems", p, ps)
		}
	}
}

func TestParseDefaultsAndValues(t *testing.T) {
	cfg, ps := parse(map[string]string{"address": "10.1.2.100/24", "interface": "eth0"})
	if len(ps) != 0 {
		t.Fatal(ps)
	}
	if cfg.announceCount != 3 || cfg.peerTimeout != time.Second || !cfg.duplicateCheck || cfg.peers != nil || cfg.hostRoute() || cfg.v6() {
		t.Fatalf("defaults = %+v", cfg)
	}
	cfg, _ = parse(map[string]string{"address": "fd00::100/128", "interface": "eth0", "peers": "fd00::1, fd00::2 ,fd00::1",
		"announce_count": "5", "peer_timeout": "250ms", "duplicate_check": "false"})
	want := []netip.Addr{netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd00::2")}
	if !slices.Equal(cfg.peers, want) || cfg.announceCount != 5 || cfg.peerTimeout != 250*time.Millisecond ||
		cfg.duplicateCheck || !cfg.hostRoute() || !cfg.v6() {
		t.Fatalf("parsed = %+v", cfg)
	}
}

func TestValidateReportsEachProblem(t *testing.T) {
	base := func(kv ...string) map[string]string {
		p := map[string]string{"address": "10.1.2.100/24", "interface": "eth0"}
		for i := 0; i+1 < len(kv); i += 2 {
			p[kv[i]] = kv[i+1]
		}
		return p
	}
	for _, tc := range []struct {
		params map[string]string
		field  string
		msg    string
	}{
		{map[string]string{"interface": "eth0"}, "address", "is required"},
		{map[string]string{"address": "10.1.2.100/24"}, "interface", "is required"},
		{base("address", ""), "address", "is empty"},
		{base("address", "10.1.2.100"), "address", `"10.1.2.100" has no prefix length`},
		{base("address", "10.1.2.300/24"), "address", "is not in CIDR form"},
		{base("address", "10.1.2.100/33"), "address", "is not in CIDR form"},
		{base("address", "10.1.2.0/24"), "address", "10.1.2.0 is the network address of 10.1.2.0/24"},
		{base("address", "10.1.2.255/24"), "address", "10.1.2.255 is the broadcast address of 10.1.2.0/24"},
		{base("address", "fd00::/64"), "address", "subnet-router anycast"},
		{base("address", "127.0.0.5/8"), "address", "is a loopback address"},
		{base("address", "0.0.0.0/0"), "address", "is an unspecified address"},
		{base("address", "224.0.0.5/32"), "address", "multicast"},
		{base("address", "fe80::5/64"), "address", "link-local"},
		{base("address", "169.254.1.1/16"), "address", "link-local"},
		{base("address", "::ffff:10.1.2.100/120"), "address", "write IPv4 addresses in dotted form (10.1.2.100/24)"},
		{base("interface", ""), "interface", "is empty"},
		{base("interface", "eth0:1"), "interface", "is an address label, not an interface: name the interface itself (eth0)"},
		{base("interface", "a-very-long-interface"), "interface", "longer than 15 characters"},
		{base("interface", "eth 0"), "interface", "not an interface name"},
		{base("interface", "../x"), "interface", "not an interface name"},
		{base("peers", ""), "peers", "is empty"},
		{base("peers", "10.1.2.1,,10.1.2.2"), "peers", "empty entry"},
		{base("peers", "gateway"), "peers", `"gateway" is not an IP address`},
		{base("peers", "fe80::1%eth0"), "peers", "has a zone"},
		{base("peers", "fd00::1"), "peers", "fd00::1 is IPv6 but the address is IPv4"},
		{base("peers", "10.1.2.100"), "peers", "is the virtual IP itself"},
		{base("peers", "224.0.0.1"), "peers", "224.0.0.1 is a multicast address"},
		{base("peers", "255.255.255.255"), "peers", "255.255.255.255 is the broadcast address"},
		{base("address", "255.255.255.255/32"), "address", "is the broadcast address"},
		{base("peers", "0.0.0.0"), "peers", "unspecified"},
		{base("announce_count", "three"), "announce_count", "not a whole number from 0 to 20"},
		{base("announce_count", "21"), "announce_count", "not a whole number"},
		{base("announce_count", "-1"), "announce_count", "not a whole number"},
		{base("peer_timeout", "1"), "peer_timeout", "invalid duration"},
		{base("peer_timeout", "1ms"), "peer_timeout", "out of range"},
		{base("peer_timeout", "2m"), "peer_timeout", "out of range"},
		{base("duplicate_check", "yes"), "duplicate_check", "must be true or false"},
		{base("netmask", "24"), "netmask", "unknown parameter: the valid parameters are address, interface"},
	} {
		ps := (Kit{}).Validate(tc.params)
		found := false
		for _, p := range ps {
			if p.Field == tc.field && strings.Contains(p.Message, tc.msg) {
				found = true
			}
		}
		if !found {
			t.Errorf("Validate(%v) = %v\nwant a problem on %s containing %q", tc.params, ps, tc.field, tc.msg)
		}
	}
}

func TestValidateReportsAllProblemsAtOnce(t *testing.T) {
	ps := (Kit{}).Validate(map[string]string{
		"address": "nonsense", "interface": "eth0:1", "peers": "x,y", "announce_count": "many", "colour": "blue",
	})
	var fields []string
	for _, p := range ps {
		fields = append(fields, p.Field)
	}
	want := []string{"address", "announce_count", "colour", "interface", "peers", "peers"}
	slices.Sort(fields)
	if !slices.Equal(fields, want) {
		t.Fatalf("problems on %v, want %v: %v", fields, want, ps)
	}
}

func TestValidateHierarchyPrefixesFields(t *testing.T) {
	h := &spec.Hierarchy{Name: "web", Nodes: []string{"node1", "node2"}, Resources: []spec.Resource{
		{Name: "vip", Type: "ip", Params: map[string]string{"address": "10.1.2.100", "interface": "eth0"}},
	}}
	reg, _ := kit.NewRegistry(Kit{})
	ps := reg.ValidateHierarchy(h)
	for _, p := range ps {
		if p.Field == "resources[0].params.address" {
			return
		}
	}
	t.Fatalf("ValidateHierarchy = %v, want a problem on resources[0].params.address", ps)
}

func TestNewRejectsInvalidParams(t *testing.T) {
	_, err := (Kit{}).New(spec.Resource{Name: "vip", Type: "ip", Params: map[string]string{"address": "x"}}, kit.Env{})
	if err == nil || !strings.Contains(err.Error(), `ip resource "vip": invalid parameters`) ||
		!strings.Contains(err.Error(), "interface: is required") {
		t.Fatalf("New = %v, want every problem named", err)
	}
	in, err := (Kit{}).New(spec.Resource{Name: "vip", Type: "ip", Params: map[string]string{"address": "10.1.2.100/24", "interface": "eth0"}}, kit.Env{})
	if err != nil || in == nil {
		t.Fatalf("New = %v, %v", in, err)
	}
}

// FuzzValidate: Validate never panics, and parameters it accepts make an
// instance whose config agrees with them.
func FuzzValidate(f *testing.F) {
	f.Add("10.1.2.100/24", "eth0", "10.1.2.1,10.1.2.2", "3", "1s", "true")
	f.Add("fd00::100/64", "eth0", "fd00::1", "0", "10ms", "false")
	f.Add("10.1.2.100/32", "eth0:1", "", "x", "-1s", "")
	f.Add("::ffff:1.2.3.4/128", "", ",", "99", "1h", "TRUE")
	f.Fuzz(func(t *testing.T, addr, ifname, peers, count, timeout, dup string) {
		p := map[string]string{"address": addr, "interface": ifname}
		for k, v := range map[string]string{"peers": peers, "announce_count": count, "peer_timeout": timeout, "duplicate_check": dup} {
			if v != "" {
				p[k] = v
			}
		}
		cfg, ps := parse(p)
		if len(ps) > 0 {
			return
		}
		if !cfg.addr.IsValid() || cfg.ifname == "" || len(cfg.ifname) > maxIfNameLen {
			t.Fatalf("accepted %v as %+v", p, cfg)
		}
		for _, peer := range cfg.peers {
			if peer == cfg.addr.Addr() || peer.Is4() != cfg.addr.Addr().Is4() || peer.Zone() != "" {
				t.Fatalf("accepted peer %s with address %s", peer, cfg.addr)
			}
		}
		if _, err := (Kit{}).New(spec.Resource{Name: "vip", Type: "ip", Params: p}, kit.Env{}); err != nil {
			t.Fatalf("Validate accepted %v but New failed: %v", p, err)
		}
	})
}

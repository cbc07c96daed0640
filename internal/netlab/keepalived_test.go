package netlab

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestKeepalivedConfig(t *testing.T) {
	o := KeepalivedTuned("10.213.5.101/24")
	o.Priority, o.RouterID = 200, 51
	got, err := KeepalivedConfig("node1", "10.213.5.1", []string{"10.213.5.2", "10.213.5.3"}, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"router_id node1\n", "vrrp_version 3\n", "state BACKUP\n", "interface eth0\n", "virtual_router_id 51\n",
		"priority 200\n", "advert_int 0.1\n", "unicast_src_ip 10.213.5.1\n",
		"unicast_peer {\n\t\t10.213.5.2\n\t\t10.213.5.3\n\t}", "virtual_ipaddress {\n\t\t10.213.5.101/24 dev eth0\n\t}",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("config lacks %q:\n%s", want, got)
		}
	}
	d := KeepalivedDefaults("10.213.5.101/24")
	d.Priority, d.RouterID = 180, 51
	got, err = KeepalivedConfig("node2", "10.213.5.2", []string{"10.213.5.1"}, d)
	if err != nil || !strings.Contains(got, "vrrp_version 2\n") || !strings.Contains(got, "advert_int 1\n") {
		t.Fatalf("defaults: %v\n%s", err, got)
	}

	for _, tc := range []struct {
		name string
		mod  func(*KeepalivedOptions)
		want string
	}{
		{"v2 sub-second adverts", func(o *KeepalivedOptions) { o.Version, o.Advert = 2, 500*time.Millisecond }, "VRRPv2 takes whole seconds"},
		{"v3 odd adverts", func(o *KeepalivedOptions) { o.Advert = 15 * time.Millisecond }, "multiples of 10ms"},
		{"version", func(o *KeepalivedOptions) { o.Version = 4 }, "VRRP version 4"},
		{"priority", func(o *KeepalivedOptions) { o.Priority = 255 }, "priority 255"},
		{"router id", func(o *KeepalivedOptions) { o.RouterID = 0 }, "virtual router id 0"},
		{"vip", func(o *KeepalivedOptions) { o.VIP = "10.213.5.101" }, `VIP "10.213.5.101"`},
		{"every problem at once", func(o *KeepalivedOptions) { o.Version, o.Priority = 9, 0 }, "VRRP version 9 (want 2 or 3); priority 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := KeepalivedTuned("10.213.5.101/24")
			o.Priority, o.RouterID = 100, 51
			tc.mod(&o)
			_, err := KeepalivedConfig("node1", "10.213.5.1", []string{"10.213.5.2"}, o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
	if args := strings.Join(KeepalivedArgs("/d/k.conf", "/d/k"), " "); args != "-n -l -D -G -P -f /d/k.conf -p /d/k.pid -r /d/k-vrrp.pid -c /d/k-checkers.pid" {
		t.Fatalf("flags: %s", args)
	}
}

// keepalived moves the virtual IP to the backup when the master's link
// goes down, at its default and at its tuned timing; stopped by PID, it
// releases the address.
func TestKeepalivedFailover(t *testing.T) {
	if _, err := exec.LookPath("keepalived"); err != nil {
		t.Skip("skipping: keepalived not installed (apt-get install keepalived)")
	}
	for _, tc := range []struct {
		name  string
		opts  func(vip string) KeepalivedOptions
		limit time.Duration
	}{
		{"tuned", KeepalivedTuned, 2 * time.Second},
		{"defaults", KeepalivedDefaults, 8 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newLab(t, Options{Nodes: 2})
			serveAll(t, l) // answers on the virtual IP wherever it is
			vip := l.VIP(1)
			var ks []*Keepalived
			for _, n := range l.Nodes() {
				k, err := l.StartKeepalived(n, tc.opts(l.VIPPrefix(1)))
				if err != nil {
					t.Fatal(err)
				}
				ks = append(ks, k)
			}
			holds := func(want map[string]bool) func() (bool, error) {
				return func() (bool, error) {
					for n, w := range want {
						got, err := l.HoldsAddr(n, vip)
						if err != nil || got != w {
							return false, err
						}
					}
					return true, nil
				}
			}
			eventually(t, "node1 master", holds(map[string]bool{"node1": true, "node2": false}))

			p, err := l.StartProber(Client, vip+":"+port, ProbeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Stop()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if _, err := p.WaitAnswer(ctx, "node1", time.Now()); err != nil {
				t.Fatal(err)
			}
			if err := l.LinkDown("node1"); err != nil {
				t.Fatal(err)
			}
			fault := time.Now()
			if _, err := p.WaitAnswer(ctx, "node2", fault); err != nil {
				for _, k := range ks {
					log, _ := os.ReadFile(k.Log)
					t.Logf("%s:\n%s", k.Log, log)
				}
				t.Fatal(err)
			}
			o, err := OutageAt(p.Stop(), fault)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("keepalived %s: %v", tc.name, o)
			if o.Before() != "node1" || o.After() != "node2" || o.Duration > tc.limit {
				t.Fatalf("%v, want node1 to node2 within %v", o, tc.limit)
			}
			if ok, err := holds(map[string]bool{"node2": true})(); !ok {
				t.Fatalf("node2 answers but does not hold %s: %v", vip, err)
			}

			for _, k := range ks {
				if err := k.Stop(5 * time.Second); err != nil {
					t.Fatal(err)
				}
				if k.Running() {
					t.Fatalf("keepalived on %s still running after Stop", k.Host)
				}
			}
			if ok, err := holds(map[string]bool{"node2": false})(); !ok {
				t.Fatalf("node2 still holds %s after keepalived stopped: %v", vip, err)
			}
		})
	}
}

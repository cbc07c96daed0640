package ip

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/kit"
)

// Checks on one node share an interface dump up to a second old, but
// never one older than their own restore.
func TestChecksShareRecentDumps(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeNet("10.1.2.1/24")
		cache := &linkCache{links: map[string]cachedLink{}}
		a, _ := newTestInstance(t, f, v4Params(ParamAnnounceCount, "0", ParamDuplicateCheck, "false"))
		b, _ := newTestInstance(t, f, map[string]string{ParamAddress: "10.1.2.101/24", ParamInterface: "eth0", ParamAnnounceCount: "0", ParamDuplicateCheck: "false"})
		a.checks, b.checks = cache, cache
		if err := a.Restore(context.Background()); err != nil {
			t.Fatal(err)
		}
		// b's check fills the cache; b's address is not there yet.
		if h, _ := b.QuickCheck(context.Background()); h != kit.Failed {
			t.Fatalf("b before its restore: %s", h)
		}
		if err := b.Restore(context.Background()); err != nil {
			t.Fatal(err)
		}
		// b's own restore came after the cached dump: b reads anew.
		if h, err := b.QuickCheck(context.Background()); h != kit.Healthy {
			t.Fatalf("b right after its restore: %s %v (a dump from before its restore was used)", h, err)
		}
		// Someone removes a's address: within the second, a's check may
		// still use the shared dump; after it, a notices.
		f.mu.Lock()
		f.eth0().Addrs = f.eth0().Addrs[:1]
		f.mu.Unlock()
		time.Sleep(checkReadAge + time.Millisecond)
		if h, _ := a.QuickCheck(context.Background()); h != kit.Failed {
			t.Fatalf("a's address removed over a second ago, check says %s", h)
		}
	})
}

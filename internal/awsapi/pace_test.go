package awsapi

import (
	"context"
	"sort"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// The pacer lets a bucket's capacity through at once and then one call
// per refill interval, in turn; a throttle answer from AWS empties the
// bucket; a caller whose context ends gives its turn back.
func TestPacer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(Bucket{Capacity: 2, Refill: 10}, Bucket{})
		start := time.Now()
		var mu sync.Mutex
		var at []time.Duration
		var wg sync.WaitGroup
		for range 6 {
			wg.Go(func() {
				if err := p.wait(context.Background(), "ReplaceRoute", false); err != nil {
					t.Error(err)
				}
				mu.Lock()
				at = append(at, time.Since(start))
				mu.Unlock()
			})
		}
		wg.Wait()
		sort.Slice(at, func(i, j int) bool { return at[i] < at[j] })
		want := []time.Duration{0, 0, 100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, 400 * time.Millisecond}
		for i := range want {
			if at[i] != want[i] {
				t.Fatalf("calls went out at %v, want %v", at, want)
			}
		}
		// Describe calls are not paced here (a zero bucket), nor share
		// ReplaceRoute's bucket.
		if err := p.wait(context.Background(), "DescribeRouteTables", false); err != nil || time.Since(start) != 400*time.Millisecond {
			t.Fatalf("an unpaced action waited: %v", err)
		}
		// A full bucket, then AWS throttles: the next call waits a refill.
		time.Sleep(time.Second)
		p.throttled("ReplaceRoute")
		t0 := time.Now()
		if err := p.wait(context.Background(), "ReplaceRoute", false); err != nil || time.Since(t0) != 100*time.Millisecond {
			t.Fatalf("after a throttle the next call waited %v (%v), want one refill interval", time.Since(t0), err)
		}
		// A caller that gives up hands its turn to the next.
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if err := p.wait(ctx, "ReplaceRoute", false); err == nil {
			t.Fatal("a wait beyond its context's end succeeded")
		}
		t1 := time.Now()
		if err := p.wait(context.Background(), "ReplaceRoute", false); err != nil || time.Since(t1) != 50*time.Millisecond {
			t.Fatalf("after a caller gave up, the next waited %v, want the 50ms left of the turn", time.Since(t1))
		}
	})
}

// A dry run takes a token only while the bucket is more than half full:
// the other half is for the calls a failover makes.
func TestPacerDryRunsLeaveHalfTheBucket(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPacer(Bucket{Capacity: 4, Refill: 10}, Bucket{})
		start := time.Now()
		for range 2 {
			if err := p.wait(context.Background(), "ReplaceRoute", true); err != nil {
				t.Fatal(err)
			}
		}
		// 2 tokens left: a third dry run waits for 3 (100 ms), while a
		// real call goes at once.
		if err := p.wait(context.Background(), "ReplaceRoute", false); err != nil || time.Since(start) != 0 {
			t.Fatalf("a real call waited %v behind dry runs (%v)", time.Since(start), err)
		}
		if err := p.wait(context.Background(), "ReplaceRoute", true); err != nil || time.Since(start) != 200*time.Millisecond {
			t.Fatalf("the dry run went after %v (%v), want 200ms: when 3 tokens are back", time.Since(start), err)
		}
		// A bucket emptied by a throttle answer: a dry run that would wait
		// more than a second is not sent, and says it was throttled.
		slow := newPacer(Bucket{Capacity: 200, Refill: 5}, Bucket{})
		slow.throttled("ReplaceRoute")
		t0 := time.Now()
		err := slow.wait(context.Background(), "ReplaceRoute", true)
		if f := Classify(err); f == nil || f.Kind != KindThrottled || time.Since(t0) != 0 {
			t.Fatalf("dry run on an empty 200/5 bucket: %v after %v, want throttled at once", err, time.Since(t0))
		}
	})
}

func TestParseBucket(t *testing.T) {
	if b, err := ParseBucket("200/5"); err != nil || b != DefaultMutatingBucket || b.String() != "200/5" {
		t.Errorf("200/5: %+v %v", b, err)
	}
	if b, err := ParseBucket("off"); err != nil || b != (Bucket{}) || b.String() != "off" {
		t.Errorf("off: %+v %v", b, err)
	}
	for _, bad := range []string{"", "200", "0/5", "200/0", "x/y", "200/-1"} {
		if _, err := ParseBucket(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

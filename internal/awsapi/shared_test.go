package awsapi

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Callers of one key share calls, and never an answer older than their
// question: a caller that asks while a call is in flight gets the next
// call's answer. Other keys are not held up.
func TestSharedReadsAreNeverOlderThanTheQuestion(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &Clients{share: newSharer()}
		var sent atomic.Int32
		release := make(chan struct{})
		read := func(ctx context.Context) (any, error) {
			n := sent.Add(1) // the state as this call sees it
			<-release
			return n, nil
		}
		ask := func(key string, got *any) func() {
			return func() {
				v, err := c.Shared(context.Background(), key, read)
				if err != nil {
					t.Error(err)
				}
				*got = v
			}
		}
		var wg sync.WaitGroup
		var first any
		wg.Go(ask("rtb-1", &first))
		synctest.Wait() // the first call is in flight
		late := make([]any, 5)
		for i := range late {
			wg.Go(ask("rtb-1", &late[i]))
		}
		var other any
		wg.Go(ask("rtb-2", &other))
		synctest.Wait()
		if n := sent.Load(); n != 2 {
			t.Fatalf("%d calls sent, want 2: the first, and rtb-2's (the late rtb-1 callers wait for the next)", n)
		}
		close(release)
		wg.Wait()
		if first != int32(1) {
			t.Errorf("first caller got %v", first)
		}
		for i, v := range late {
			if v == int32(1) {
				t.Errorf("late caller %d got the answer of a call sent before it asked", i)
			}
		}
		if late[0] != late[4] || sent.Load() != 3 {
			t.Errorf("late callers got %v from %d calls, want one shared call (3 in all)", late, sent.Load())
		}
		// A caller whose context ends stops waiting; the call goes on for
		// the others.
		block := make(chan struct{})
		wg.Go(func() {
			if _, err := c.Shared(context.Background(), "rtb-1", func(context.Context) (any, error) { <-block; return 0, nil }); err != nil {
				t.Error(err)
			}
		})
		synctest.Wait()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := c.Shared(ctx, "rtb-1", read); err == nil {
			t.Error("a cancelled caller got an answer")
		}
		close(block)
		wg.Wait()
	})
}

// A caller that accepts reads sent since a moment (a restore: since its
// assignment) gets the last answer when it was sent late enough, and a
// new call otherwise; Forget drops the answer.
func TestSharedReadsSince(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := &Clients{share: newSharer()}
		var sent atomic.Int32
		read := func(context.Context) (any, error) { return sent.Add(1), nil }
		get := func(ctx context.Context) any {
			v, err := c.Shared(ctx, "rtb-1", read)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		before := time.Now()
		time.Sleep(time.Second)
		if v := get(context.Background()); v != int32(1) {
			t.Fatalf("first read %v", v)
		}
		if v := get(WithReadsSince(context.Background(), before)); v != int32(1) {
			t.Errorf("a read sent after the caller's moment was not reused: %v", v)
		}
		time.Sleep(time.Second)
		if v := get(WithReadsSince(context.Background(), time.Now())); v != int32(2) {
			t.Errorf("a read sent before the caller's moment was reused: %v", v)
		}
		if v := get(context.Background()); v != int32(3) {
			t.Errorf("a caller without a moment got an old answer: %v", v)
		}
		c.Forget("rtb-1")
		if v := get(WithReadsSince(context.Background(), before)); v != int32(4) {
			t.Errorf("a forgotten answer was reused: %v", v)
		}
	})
}

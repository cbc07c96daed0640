package ip

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

func TestExchangeSendsInRoundsUntilWaitPasses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newFakeConn()
		start := time.Now()
		var at []time.Duration
		send := func() error { at = append(at, time.Since(start)); return nil }
		recv := func() (bool, error) { _, err := c.read(); return false, err }
		found, err := exchange(context.Background(), c, 900*time.Millisecond, 3, send, recv)
		if found || err != nil {
			t.Fatalf("exchange = %v, %v; want no answer, no error", found, err)
		}
		want := []time.Duration{0, 300 * time.Millisecond, 600 * time.Millisecond}
		if len(at) != 3 || at[0] != want[0] || at[1] != want[1] || at[2] != want[2] {
			t.Fatalf("sent at %v, want %v", at, want)
		}
		if d := time.Since(start); d != 900*time.Millisecond {
			t.Fatalf("returned after %s, want 900ms", d)
		}
	})
}

func TestExchangeReturnsOnTheFirstAnswer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newFakeConn()
		go func() {
			time.Sleep(450 * time.Millisecond) // the answer arrives in the second round
			c.deliver(packetIn{msg: "noise"})
			c.deliver(packetIn{msg: "answer"})
		}()
		start, sends := time.Now(), 0
		send := func() error { sends++; return nil }
		recv := func() (bool, error) {
			p, err := c.read()
			return err == nil && p.msg == "answer", err
		}
		found, err := exchange(context.Background(), c, 900*time.Millisecond, 3, send, recv)
		if !found || err != nil {
			t.Fatalf("exchange = %v, %v; want the answer", found, err)
		}
		if d := time.Since(start); d != 450*time.Millisecond || sends != 2 {
			t.Fatalf("answered after %s and %d sends, want 450ms and 2", d, sends)
		}
	})
}

func TestExchangeMachineryErrors(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newFakeConn()
		_, err := exchange(context.Background(), c, time.Second, 2, func() error { return syscall.ENOBUFS }, nil)
		if !errors.Is(err, syscall.ENOBUFS) {
			t.Fatalf("send error: %v", err)
		}
		_, err = exchange(context.Background(), c, time.Second, 2, func() error { return nil },
			func() (bool, error) { return false, syscall.EBADF })
		if !errors.Is(err, syscall.EBADF) {
			t.Fatalf("read error: %v", err)
		}
	})
}

func TestExchangeEndsWithContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newFakeConn()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		recv := func() (bool, error) { _, err := c.read(); return false, err }
		found, err := exchange(ctx, c, time.Hour, 1, func() error { return nil }, recv)
		if found || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("exchange = %v, %v; want the context's error", found, err)
		}
		if d := time.Since(start); d != 50*time.Millisecond {
			t.Fatalf("blocked read ended after %s, want 50ms", d)
		}
	})
}

package agent

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Concurrent callers of one run share it: fn runs once and every caller
// gets its answer; a caller that gives up does not end it for the others.
func TestSharedRunsShareOneRun(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSharedRuns()
		var runs atomic.Int32
		release := make(chan struct{})
		fn := func(ctx context.Context) (any, error) {
			runs.Add(1)
			<-release
			return "answer", nil
		}
		var wg sync.WaitGroup
		answers := make([]any, 10)
		for i := range answers {
			wg.Go(func() {
				v, err := s.do(context.Background(), context.Background(), "refresh", time.Minute, fn)
				if err != nil {
					t.Errorf("caller %d: %v", i, err)
				}
				answers[i] = v
			})
		}
		impatient, cancel := context.WithCancel(context.Background())
		gaveUp := make(chan error, 1)
		go func() {
			_, err := s.do(impatient, context.Background(), "refresh", time.Minute, fn)
			gaveUp <- err
		}()
		synctest.Wait()
		cancel()
		if err := <-gaveUp; !errors.Is(err, context.Canceled) {
			t.Errorf("the impatient caller got %v, want context.Canceled", err)
		}
		close(release)
		wg.Wait()
		if n := runs.Load(); n != 1 {
			t.Fatalf("fn ran %d times for 11 concurrent callers, want once", n)
		}
		for i, v := range answers {
			if v != "answer" {
				t.Errorf("caller %d got %v", i, v)
			}
		}
	})
}

// At most maxSharedRuns different runs go on at once; the next waits for
// a slot.
func TestSharedRunsAreBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSharedRuns()
		var now, most atomic.Int32
		release := make(chan struct{})
		fn := func(ctx context.Context) (any, error) {
			n := now.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			<-release
			now.Add(-1)
			return nil, nil
		}
		var wg sync.WaitGroup
		for i := range 3 * maxSharedRuns {
			wg.Go(func() {
				if _, err := s.do(context.Background(), context.Background(), "doctor hierarchy="+string(rune('a'+i)), time.Minute, fn); err != nil {
					t.Error(err)
				}
			})
		}
		synctest.Wait()
		if n := now.Load(); n != maxSharedRuns {
			t.Fatalf("%d runs at once, want %d", n, maxSharedRuns)
		}
		close(release)
		wg.Wait()
		if m := most.Load(); m != maxSharedRuns {
			t.Fatalf("at most %d runs at once, want %d", m, maxSharedRuns)
		}
	})
}

// A run whose slot does not come within its timeout fails with an error
// that says why.
func TestSharedRunsTimeOutWaitingForASlot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newSharedRuns()
		release := make(chan struct{})
		block := func(ctx context.Context) (any, error) { <-release; return nil, nil }
		for i := range maxSharedRuns {
			go func() {
				_, _ = s.do(context.Background(), context.Background(), "busy"+string(rune('a'+i)), time.Hour, block)
			}()
		}
		synctest.Wait()
		_, err := s.do(context.Background(), context.Background(), "late", time.Second, block)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want a deadline error", err)
		}
		close(release)
	})
}

package watchdog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Fake is a watchdog device for tests: a named pipe that behaves like the
// kernel's watchdog towards the agent (any byte feeds and, when stopped,
// starts the timer; 'V' stops it) and calls Fire when the timer runs out,
// once per arming. The test's Fire makes it a reset: it cuts the node's
// link and kills its processes.
type Fake struct {
	Path    string
	timeout time.Duration
	fire    func()
	f       *os.File
	cancel  context.CancelFunc
	done    chan struct{}

	mu    sync.Mutex
	armed bool
	fired int
}

// NewFake creates the pipe at path and starts watching it.
func NewFake(path string, timeout time.Duration, fire func()) (*Fake, error) {
	if err := unix.Mkfifo(path, 0o600); err != nil {
		return nil, fmt.Errorf("fake watchdog %s: %w", path, err)
	}
	// Read and write: the pipe always has a writer, so reads never see
	// end-of-file when the agent closes it, and the agent's non-blocking
	// open always finds a reader.
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("fake watchdog %s: %w", path, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Fake{Path: path, timeout: timeout, fire: fire, f: f, cancel: cancel, done: make(chan struct{})}
	go w.run(ctx)
	return w, nil
}

// Armed reports whether the fake's timer is running.
func (w *Fake) Armed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.armed
}

// Fired reports how many times the timer ran out.
func (w *Fake) Fired() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fired
}

func (w *Fake) run(ctx context.Context) {
	defer close(w.done)
	buf := make([]byte, 64)
	var last time.Time
	for ctx.Err() == nil {
		w.mu.Lock()
		armed := w.armed
		w.mu.Unlock()
		if armed {
			_ = w.f.SetReadDeadline(last.Add(w.timeout))
		} else {
			_ = w.f.SetReadDeadline(time.Now().Add(100 * time.Millisecond)) // to notice Close
		}
		n, err := w.f.Read(buf)
		now := time.Now()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if armed && !now.Before(last.Add(w.timeout)) {
				w.mu.Lock()
				w.armed = false
				w.fired++
				w.mu.Unlock()
				if w.fire != nil {
					w.fire()
				}
			}
			continue
		}
		if err != nil {
			return
		}
		for _, b := range buf[:n] {
			w.mu.Lock()
			if b == 'V' {
				w.armed = false
			} else {
				w.armed = true
				last = now
			}
			w.mu.Unlock()
		}
	}
}

// Close stops watching and removes the pipe.
func (w *Fake) Close() error {
	w.cancel()
	_ = w.f.SetReadDeadline(time.Now())
	<-w.done
	err := w.f.Close()
	return errors.Join(err, os.Remove(w.Path))
}

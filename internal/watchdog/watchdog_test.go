package watchdog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newFake(t *testing.T, timeout time.Duration) (*Fake, chan struct{}) {
	t.Helper()
	fired := make(chan struct{}, 10)
	f, err := NewFake(filepath.Join(t.TempDir(), "watchdog"), timeout, func() { fired <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, fired
}

func waitArmed(t *testing.T, f *Fake, want bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for f.Armed() != want {
		if time.Now().After(deadline) {
			t.Fatalf("fake watchdog armed = %v, want %v", f.Armed(), want)
		}
		time.Sleep(time.Millisecond) // polling a condition with a deadline
	}
}

// Fed, the watchdog never fires; left alone, it fires once; the magic
// close stops it.
func TestArmFeedFireDisarm(t *testing.T) {
	const timeout = 150 * time.Millisecond
	fake, fired := newFake(t, timeout)
	d := New(fake.Path, timeout)
	if d.Timeout() != timeout {
		t.Fatalf("fake's effective timeout %v, want %v as configured", d.Timeout(), timeout)
	}
	if err := d.Arm(); err != nil {
		t.Fatal(err)
	}
	waitArmed(t, fake, true)
	for end := time.Now().Add(4 * timeout); time.Now().Before(end); time.Sleep(timeout / 5) {
		if err := d.Feed(); err != nil {
			t.Fatal(err)
		}
	}
	if n := fake.Fired(); n != 0 {
		t.Fatalf("fired %d times while fed", n)
	}
	// Stop feeding, as a frozen agent does: it fires.
	select {
	case <-fired:
	case <-time.After(5 * time.Second):
		t.Fatal("did not fire after feeding stopped")
	}
	if err := d.Disarm(); err != nil {
		t.Fatal(err)
	}

	// Armed again, then stopped with the magic close: it never fires.
	if err := d.Arm(); err != nil {
		t.Fatal(err)
	}
	waitArmed(t, fake, true)
	if err := d.Disarm(); err != nil {
		t.Fatal(err)
	}
	waitArmed(t, fake, false)
	time.Sleep(3 * timeout) // the subject: nothing happens over several timeouts
	if n := fake.Fired(); n != 1 {
		t.Fatalf("fired %d times in all, want once (before the magic close)", n)
	}
	if d.Armed() {
		t.Fatal("device still armed after Disarm")
	}
}

func TestArmErrors(t *testing.T) {
	dir := t.TempDir()
	if err := New(filepath.Join(dir, "missing"), time.Second).Arm(); err == nil {
		t.Fatal("arming a missing device succeeded")
	}
	if err := Check(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "softdog") {
		t.Fatalf("Check of a missing device: %v, want the softdog hint", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Check(file); err == nil || !strings.Contains(err.Error(), "not a character device") {
		t.Fatalf("Check of a regular file: %v", err)
	}
	fake, _ := newFake(t, time.Second)
	if err := Check(fake.Path); err != nil {
		t.Fatalf("Check of the fake: %v", err)
	}
}

func TestEffectiveTimeout(t *testing.T) {
	fake, _ := newFake(t, time.Second)
	for _, c := range []struct {
		path string
		in   time.Duration
		want time.Duration
	}{
		{fake.Path, 300 * time.Millisecond, 300 * time.Millisecond},
		{"/nonexistent/watchdog", 300 * time.Millisecond, time.Second},
		{"/nonexistent/watchdog", 1500 * time.Millisecond, 2 * time.Second},
		{"/nonexistent/watchdog", 3 * time.Second, 3 * time.Second},
	} {
		if got := Effective(c.path, c.in); got != c.want {
			t.Errorf("Effective(%s, %v) = %v, want %v", c.path, c.in, got, c.want)
		}
	}
}

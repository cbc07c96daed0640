// Package watchdog arms, feeds and disarms a Linux watchdog device
// (/dev/watchdog: a hardware timer or the softdog module), so that a node
// whose agent hangs while it holds resources nothing else arbitrates (a
// local address) is reset before the cluster restores them elsewhere. It
// also provides a fake device on a named pipe for tests, whose firing the
// test turns into "the machine was reset".
//
// The kernel's protocol: opening the device starts the timer; every write
// feeds it; writing 'V' and then closing stops it (the "magic close"). A
// process that dies or hangs without the magic close lets it fire.
package watchdog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Device is one watchdog device, armed at most once at a time.
type Device struct {
	path    string
	timeout time.Duration

	mu sync.Mutex
	f  *os.File
}

// New returns the device at path, run with timeout once armed.
func New(path string, timeout time.Duration) *Device {
	return &Device{path: path, timeout: Effective(path, timeout)}
}

// Path is the device's path.
func (d *Device) Path() string { return d.path }

// Timeout is the timeout the device runs with once armed.
func (d *Device) Timeout() time.Duration { return d.timeout }

// Effective returns the timeout a device at path runs with when asked for
// timeout: real watchdogs count whole seconds, so it is rounded up to one;
// the fake (a named pipe) takes it as it is.
func Effective(path string, timeout time.Duration) time.Duration {
	if fi, err := os.Stat(path); err == nil && fi.Mode()&fs.ModeNamedPipe != 0 {
		return timeout
	}
	secs := (timeout + time.Second - 1) / time.Second
	return max(secs, 1) * time.Second
}

// Check reports, without arming it, whether the device can be used: it
// exists, is a character device (or the test fake) and is writable.
func Check(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("watchdog device %s does not exist (no hardware watchdog? load the software one: modprobe softdog, and make it permanent with echo softdog > /etc/modules-load.d/softdog.conf)", path)
		}
		return fmt.Errorf("watchdog device %s: %w", path, err)
	}
	if fi.Mode()&fs.ModeCharDevice == 0 && fi.Mode()&fs.ModeNamedPipe == 0 {
		return fmt.Errorf("watchdog device %s is not a character device (it is %s)", path, fi.Mode().Type())
	}
	if err := unix.Access(path, unix.W_OK); err != nil {
		return fmt.Errorf("watchdog device %s is not writable by the agent: %w", path, err)
	}
	return nil
}

// Armed reports whether the device is open (its timer running).
func (d *Device) Armed() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.f != nil
}

// Arm opens the device, which starts its timer, sets the timeout on a real
// watchdog and feeds it once. Arming an armed device does nothing.
func (d *Device) Arm() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f != nil {
		return nil
	}
	fi, err := os.Stat(d.path)
	if err != nil {
		return fmt.Errorf("arm watchdog %s: %w", d.path, err)
	}
	flags := unix.O_WRONLY | unix.O_CLOEXEC
	fifo := fi.Mode()&fs.ModeNamedPipe != 0
	if fifo {
		flags |= unix.O_NONBLOCK // the fake: fails at once when nobody reads
	}
	fd, err := unix.Open(d.path, flags, 0)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("arm watchdog %s: the device is already open (another watchdog daemon, such as watchdog or sbd, holds it; only one process may feed it)", d.path)
		}
		return fmt.Errorf("arm watchdog %s: %w", d.path, err)
	}
	f := os.NewFile(uintptr(fd), d.path)
	if !fifo {
		secs := int(d.timeout / time.Second)
		if err := unix.IoctlSetPointerInt(fd, unix.WDIOC_SETTIMEOUT, secs); err != nil {
			// Feed and stop it again: a watchdog left running with an
			// unknown timeout would reset the machine unexpectedly.
			_, _ = f.Write([]byte("V"))
			f.Close()
			return fmt.Errorf("arm watchdog %s: set its timeout to %ds: %w", d.path, secs, err)
		}
	}
	if _, err := f.Write([]byte("1")); err != nil {
		f.Close()
		return fmt.Errorf("arm watchdog %s: first feed: %w", d.path, err)
	}
	d.f = f
	return nil
}

// Feed restarts the timer of an armed device.
func (d *Device) Feed() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return nil
	}
	if _, err := d.f.Write([]byte("1")); err != nil {
		return fmt.Errorf("feed watchdog %s: %w", d.path, err)
	}
	return nil
}

// Disarm stops the timer with the magic close. Disarming a device that is
// not armed does nothing.
func (d *Device) Disarm() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.f == nil {
		return nil
	}
	_, werr := d.f.Write([]byte("V"))
	cerr := d.f.Close()
	d.f = nil
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("disarm watchdog %s: %w", d.path, err)
	}
	return nil
}

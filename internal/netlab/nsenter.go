package netlab

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns add` keeps its namespace handles.
const netnsDir = "/var/run/netns"

// inNetns runs f on an OS thread that has entered the named network
// namespace. Sockets f creates stay in that namespace for their whole life,
// whichever thread uses them later. f must not start goroutines that
// create sockets: they run on other threads.
func inNetns(ns string, f func() error) error {
	target, err := os.Open(filepath.Join(netnsDir, ns))
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open this thread's namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Stay locked: the runtime ends the thread with this
			// goroutine instead of reusing it in the wrong namespace.
			errc <- errors.Join(ferr, fmt.Errorf("leave namespace %s: %w", ns, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// InHost runs f inside a host's network namespace (see ListenPacket for
// what may be done there).
func (l *Lab) InHost(host string, f func() error) error {
	if err := l.known(host); err != nil {
		return err
	}
	return inNetns(l.NS(host), f)
}

// ListenPacket opens a packet socket (net.ListenPacket) inside a host: it
// sends and receives there though this process runs outside.
func (l *Lab) ListenPacket(host, network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := l.InHost(host, func() error {
		var err error
		c, err = net.ListenPacket(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen on %s %s in %s: %w", network, addr, host, err)
	}
	return c, nil
}

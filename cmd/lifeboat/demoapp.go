package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// demoAppCmd is the demo's tiny HTTP service and its control script, in the
// binary so the demo needs nothing else installed. Hidden from help.
func demoAppCmd() *cobra.Command {
	var addr, pidfile string
	cmd := &cobra.Command{
		Use:    "demo-app start|stop|check|serve",
		Short:  "The demo's sample service",
		Hidden: true,
		Args:   cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			node := os.Getenv("LB_NODE")
			switch args[0] {
			case "serve":
				// The demo runs every node on one machine; the service dies
				// with its node's agent, as it would with the machine.
				if pid, _ := strconv.Atoi(os.Getenv("LB_AGENT_PID")); pid > 0 {
					go func() {
						for alive(pid) {
							time.Sleep(20 * time.Millisecond)
						}
						os.Exit(0)
					}()
				}
				return http.ListenAndServe(addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					fmt.Fprintf(w, "lifeboat demo service on %s\n", node)
				}))
			case "check":
				return demoCheck(addr, node)
			case "start":
				if demoCheck(addr, node) == nil {
					return nil
				}
				exe, _ := os.Executable()
				logf, err := os.OpenFile(filepath.Join(filepath.Dir(pidfile), "web.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
				if err != nil {
					return err
				}
				defer logf.Close()
				c := exec.Command(exe, "demo-app", "serve", "--addr", addr)
				c.Stdout, c.Stderr = logf, logf
				c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
				if err := c.Start(); err != nil {
					return err
				}
				if err := os.WriteFile(pidfile, []byte(strconv.Itoa(c.Process.Pid)), 0o600); err != nil {
					return err
				}
				exited := make(chan error, 1)
				go func() { exited <- c.Wait() }()
				for i := 0; i < 200; i++ {
					if demoCheck(addr, node) == nil {
						return nil
					}
					select {
					case err := <-exited:
						return fmt.Errorf("service exited at start (address %s in use?): %v", addr, err)
					case <-time.After(10 * time.Millisecond):
					}
				}
				return fmt.Errorf("service did not answer on %s within 2s", addr)
			case "stop":
				b, err := os.ReadFile(pidfile)
				if errors.Is(err, os.ErrNotExist) {
					return nil
				}
				pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
				if pid > 0 {
					_ = syscall.Kill(pid, syscall.SIGTERM)
					for i := 0; i < 300 && alive(pid); i++ {
						time.Sleep(10 * time.Millisecond)
					}
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
				return os.Remove(pidfile)
			}
			return fmt.Errorf("unknown demo-app action %q", args[0])
		},
	}
	cmd.Flags().StringVar(&addr, "addr", "127.0.0.1:18080", "service address")
	cmd.Flags().StringVar(&pidfile, "pidfile", "web.pid", "pid file")
	return cmd
}

// demoCheck: exit 0 when our service answers, 1 when nothing or another
// node's service answers, 2 when the check could not tell.
func demoCheck(addr, node string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return codeErr{2, fmt.Errorf("no answer from %s in 2s", addr)}
		}
		return codeErr{1, fmt.Errorf("service not answering on %s: %w", addr, err)}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if !strings.Contains(string(b), "on "+node+"\n") {
		return codeErr{1, fmt.Errorf("service on %s answers for another node: %s", addr, strings.TrimSpace(string(b)))}
	}
	return nil
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

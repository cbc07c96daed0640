package agent

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/auth"
	"github.com/lifeboat-ha/lifeboat/internal/cluster"
)

type httpServers struct {
	unix, tcp *http.Server
}

func (h *httpServers) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = h.unix.Shutdown(ctx)
	_ = h.tcp.Shutdown(ctx)
	_ = h.tcp.Close() // connections Shutdown left open (long waits)
}

type ctxKey int

const (
	authKey ctxKey = iota
	// tokenKey holds the auth.Token of an API caller.
	tokenKey
)

// access levels of a request
const (
	accessLocal    = "local" // the root-only socket
	accessAPI      = "api"
	accessInternal = "internal"
)

// serveHTTP listens on the Unix socket (root only) and the TCP address.
func (a *Agent) serveHTTP() (*httpServers, error) {
	mux := a.routes()
	var ul, tcp net.Listener
	if a.net != nil {
		// In memory: the API on the test network, no socket.
		var err error
		if tcp, err = a.net.ListenAPI(a.cfg.Node); err != nil {
			return nil, err
		}
	} else {
		var err error
		if ul, tcp, err = a.listen(); err != nil {
			return nil, err
		}
	}
	// Bounded (http_limits.go): at most api.max_connections connections, the TLS
	// handshake within the header timeout.
	tl := tls.NewListener(a.boundedListener("api", tcp), a.tls.ServerConfig(false))
	var local http.HandlerFunc
	remote := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isConsolePath(r.URL.Path) {
			a.serveConsole(w, r)
			return
		}
		tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		ctx := r.Context()
		switch {
		case tok != "" && subtle.ConstantTimeCompare([]byte(tok), []byte(a.internalToken)) == 1:
			// Members also present a member certificate (checked by
			// the TLS layer when given; see identity.go).
			if _, err := a.peerNode(r); err != nil {
				writeErr(w, http.StatusUnauthorized, err)
				return
			}
			ctx = context.WithValue(ctx, authKey, accessInternal)
		default:
			t, ok := a.tokens.Load().Match(tok)
			if !ok && tok == "" {
				// An operator's certificate of the cluster CA, with its
				// role (lifeboat ca operator), instead of a token.
				t, ok = a.operatorCert(r)
			}
			if !ok && tok == "" {
				if _, err := r.Cookie(sessionCookie); err == nil {
					// The web console's session cookie.
					var err error
					if t, _, err = a.sessionToken(r, r.Method != http.MethodGet && r.Method != http.MethodHead); err != nil {
						code := http.StatusUnauthorized
						if errors.Is(err, errCSRF) {
							code = http.StatusForbidden
						}
						writeErr(w, code, err)
						return
					}
					ok = true
				}
			}
			if !ok {
				writeErr(w, http.StatusUnauthorized, errors.New("missing or wrong bearer token (lifeboat --token-file, or LIFEBOAT_TOKEN)"))
				return
			}
			_, pattern := mux.Handler(r)
			if need := auth.Need(pattern); pattern != "" && t.Role < need {
				a.log.Warn("api request refused: role too weak", "method", r.Method, "path", r.URL.Path, "token", t.Name, "role", t.Role.String(), "needs", need.String(), "from", r.RemoteAddr)
				writeErr(w, http.StatusForbidden, fmt.Errorf("%s %s has role %s; %s %s needs %s", t.Kind(), t.Name, t.Role, r.Method, r.URL.Path, need))
				return
			}
			ctx = context.WithValue(context.WithValue(ctx, authKey, accessAPI), tokenKey, t)
		}
		a.serveLogged(mux, w, r.WithContext(ctx))
	})
	local = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.serveLogged(mux, w, r.WithContext(context.WithValue(r.Context(), authKey, accessLocal)))
	})
	// Requests end with the agent: a long wait (switchover) does not
	// outlive Shutdown.
	base := func(net.Listener) context.Context { return a.ctx }
	h := &httpServers{unix: boundedServer(local), tcp: boundedServer(remote)}
	h.unix.BaseContext, h.tcp.BaseContext = base, base
	if ul != nil {
		ul = a.boundedListener("socket", ul)
		go func() { _ = h.unix.Serve(ul) }()
	}
	go func() { _ = h.tcp.Serve(tl) }()
	return h, nil
}

// listen opens the Unix socket (root only) and the TCP listener.
func (a *Agent) listen() (ul, tcp net.Listener, err error) {
	sock := a.cfg.API.Socket
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		return nil, nil, fmt.Errorf("create socket directory for %s: %w", sock, err)
	}
	if fi, err := os.Lstat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(sock)
	}
	ul, err = net.Listen("unix", sock)
	if err != nil {
		return nil, nil, fmt.Errorf("listen on socket %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o600); err != nil {
		ul.Close()
		return nil, nil, fmt.Errorf("restrict socket %s to root: %w", sock, err)
	}
	tcp, err = net.Listen("tcp", a.self.API)
	if err != nil {
		ul.Close()
		return nil, nil, fmt.Errorf("listen for the API on %s: %w", a.self.API, err)
	}
	return ul, tcp, nil
}

// serveLogged serves a request and, when it may change something (not a
// GET), logs who asked, what, and the answer's status.
func (a *Agent) serveLogged(mux *http.ServeMux, w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet || r.Context().Value(authKey) == accessInternal {
		mux.ServeHTTP(w, r)
		return
	}
	sw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
	start := time.Now()
	mux.ServeHTTP(sw, r)
	a.log.Info("api request", "method", r.Method, "path", r.URL.Path, "by", a.who(r), "status", sw.code, "duration", time.Since(start).Round(time.Millisecond))
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (s *statusWriter) WriteHeader(code int) {
	s.code = code
	s.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func internalOnly(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Context().Value(authKey) != accessInternal {
			writeErr(w, http.StatusForbidden, errors.New("internal endpoint: only cluster members may call it"))
			return
		}
		next(w, r)
	}
}

func (a *Agent) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/version", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, api.Version{Node: a.cfg.Node, Version: Version})
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("refresh") == "1" {
			a.refreshAll(r.Context())
			a.catchUpWithLeader(r.Context())
		}
		writeJSON(w, a.status())
	})
	mux.HandleFunc("GET /v1/iam-policy", a.handleIAMPolicy)
	mux.HandleFunc("GET /v1/doctor", a.handleDoctor)
	a.upgradeRoutes(mux)
	a.backupRoutes(mux)
	a.reportRoutes(mux)
	a.memberRoutes(mux)
	mux.HandleFunc("GET /v1/internal/doctor", internalOnly(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, a.runDoctor(r.Context(), r.URL.Query().Get("hierarchy")))
	}))
	mux.HandleFunc("POST /v1/internal/readiness/refresh", internalOnly(func(w http.ResponseWriter, r *http.Request) {
		refresh := a.ready.Refresh
		if h := r.URL.Query().Get("hierarchy"); h != "" {
			refresh = func(ctx context.Context) (map[string]cluster.Readiness, error) { return a.ready.RefreshOne(ctx, h) }
		}
		res, err := refresh(r.Context())
		if err != nil {
			writeErr(w, http.StatusServiceUnavailable, err)
			return
		}
		writeJSON(w, res)
	}))
	mux.HandleFunc("POST /v1/apply", a.handleApply)
	mux.HandleFunc("POST /v1/hierarchies/{name}/switchover", a.handleSwitchover)
	mux.HandleFunc("POST /v1/hierarchies/{name}/start", a.handleStartStop(true))
	mux.HandleFunc("POST /v1/hierarchies/{name}/stop", a.handleStartStop(false))
	mux.HandleFunc("POST /v1/hierarchies/{name}/failover/{decision}", a.handleFailoverDecision)
	mux.HandleFunc("DELETE /v1/hierarchies/{name}", a.handleDelete)
	mux.HandleFunc("POST /v1/maintenance", a.handleMaintenance)
	mux.HandleFunc("POST /v1/nodes/{name}/standby", a.handleStandby(true))
	mux.HandleFunc("POST /v1/nodes/{name}/unstandby", a.handleStandby(false))
	mux.HandleFunc("POST /v1/nodes/{name}/confirm-failover", a.handleNodeConfirm)
	mux.HandleFunc("GET /v1/events", a.handleEvents)
	mux.HandleFunc("POST /v1/log-level", a.handleLogLevel)
	mux.HandleFunc("POST /v1/console/link", a.handleConsoleOnce)
	// Go's profiler, for finding where an agent's cycles go (issue 11):
	// root on the socket, or an admin token.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /v1/tokens", a.handleTokens)
	mux.HandleFunc("POST /v1/tokens/reload", a.handleTokensReload)
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.metrics(), promhttp.HandlerOpts{}))
	mux.HandleFunc("POST /v1/internal/lease/renew", internalOnly(func(w http.ResponseWriter, r *http.Request) {
		var req cluster.RenewRequest
		if !readJSON(w, r, &req) {
			return
		}
		if !a.actsFor(w, r, "lease renewal", req.Node) {
			return
		}
		writeJSON(w, a.c.Leases.HandleRenew(req))
	}))
	mux.HandleFunc("POST /v1/internal/lease/stream", internalOnly(a.handleLeaseStream))
	mux.HandleFunc("POST /v1/internal/lease/attest", internalOnly(func(w http.ResponseWriter, r *http.Request) {
		var req cluster.AttestRequest
		if !readJSON(w, r, &req) {
			return
		}
		// Bounded: nobody needs to wait longer than the age asked for.
		limit := max(a.c.Leases.Threshold().Milliseconds(), min(req.MinAgeMS, time.Hour.Milliseconds()))
		req.WaitMS = min(req.WaitMS, limit)
		writeJSON(w, a.c.Leases.AwaitAttest(r.Context(), req))
	}))
	mux.HandleFunc("POST /v1/internal/apply", internalOnly(func(w http.ResponseWriter, r *http.Request) {
		var raw json.RawMessage
		if !readJSON(w, r, &raw) {
			return
		}
		if !a.forwardedFromSelf(w, r, raw) {
			return
		}
		writeJSON(w, a.handleInternalApply(raw))
	}))
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func writeErr(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(api.Error{Error: err.Error()})
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, 8<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil && !errors.Is(err, io.EOF) {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("bad request body: %w", err))
		return false
	}
	return true
}

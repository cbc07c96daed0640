package sim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"strings"
	"time"
)

// Faults are run-time failures the simulator injects into AWS API calls
// (never into the /_sim/ controls). The zero value injects nothing.
type Faults struct {
	// Latency delays every affected call before it is answered.
	Latency time.Duration
	// ThrottleEvery answers every Nth affected call (counting from the
	// last SetFaults) with a throttling error: EC2 RequestLimitExceeded
	// (503), STS Throttling (400).
	ThrottleEvery int
	// ThrottleRate throttles this fraction of affected calls at random.
	ThrottleRate float64
	// ErrorRate answers this fraction of affected calls with a 5xx:
	// InternalError (500) or ServiceUnavailable (503), alternately.
	ErrorRate float64
	// ClockSkew moves the simulator's clock ahead (positive) or behind:
	// it changes the SigV4 time window check, the Date header and
	// credential expiry.
	ClockSkew time.Duration
	// ExpireCredentials treats all temporary credentials (those with a
	// session token) as expired: calls answer ExpiredToken.
	ExpireCredentials bool
	// IgnoreDryRun makes the simulator behave like a broken endpoint or
	// emulator that ignores the DryRun parameter: a call with DryRun=true
	// is authorized and carried out for real, and answered with plain
	// success instead of DryRunOperation.
	IgnoreDryRun bool
	// Seed makes the random faults reproducible: the same seed and the
	// same sequence of calls give the same faults.
	Seed uint64
	// Actions limits Latency, throttling, errors and IgnoreDryRun to these
	// actions, written "ec2:ReplaceRoute" or "sts:GetCallerIdentity"
	// ("ec2:*" for a whole service); empty means all.
	Actions []string
	// RateLimits, when set, throttles EC2 calls as AWS does: a token bucket
	// per action, sized by the action's category (ratelimit.go). Every EC2
	// action is subject to it, whatever Actions says.
	RateLimits *RateLimits
}

// faultsJSON is the wire form of Faults: durations as Go duration strings
// ("250ms", "-10m").
type faultsJSON struct {
	Latency           string      `json:"latency,omitempty"`
	ThrottleEvery     int         `json:"throttleEvery,omitempty"`
	ThrottleRate      float64     `json:"throttleRate,omitempty"`
	ErrorRate         float64     `json:"errorRate,omitempty"`
	ClockSkew         string      `json:"clockSkew,omitempty"`
	ExpireCredentials bool        `json:"expireCredentials,omitempty"`
	IgnoreDryRun      bool        `json:"ignoreDryRun,omitempty"`
	Seed              uint64      `json:"seed,omitempty"`
	Actions           []string    `json:"actions,omitempty"`
	RateLimits        *RateLimits `json:"rateLimits,omitempty"`
}

// MarshalJSON writes durations as strings such as "250ms".
func (f Faults) MarshalJSON() ([]byte, error) {
	j := faultsJSON{ThrottleEvery: f.ThrottleEvery, ThrottleRate: f.ThrottleRate, ErrorRate: f.ErrorRate,
		ExpireCredentials: f.ExpireCredentials, IgnoreDryRun: f.IgnoreDryRun, Seed: f.Seed, Actions: f.Actions, RateLimits: f.RateLimits}
	if f.Latency != 0 {
		j.Latency = f.Latency.String()
	}
	if f.ClockSkew != 0 {
		j.ClockSkew = f.ClockSkew.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads the form MarshalJSON writes; unknown fields are
// rejected.
func (f *Faults) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var j faultsJSON
	if err := dec.Decode(&j); err != nil {
		return err
	}
	out := Faults{ThrottleEvery: j.ThrottleEvery, ThrottleRate: j.ThrottleRate, ErrorRate: j.ErrorRate,
		ExpireCredentials: j.ExpireCredentials, IgnoreDryRun: j.IgnoreDryRun, Seed: j.Seed, Actions: j.Actions, RateLimits: j.RateLimits}
	var err error
	if j.Latency != "" {
		if out.Latency, err = time.ParseDuration(j.Latency); err != nil {
			return fmt.Errorf("latency: %w", err)
		}
	}
	if j.ClockSkew != "" {
		if out.ClockSkew, err = time.ParseDuration(j.ClockSkew); err != nil {
			return fmt.Errorf("clockSkew: %w", err)
		}
	}
	if err := out.validate(); err != nil {
		return err
	}
	*f = out
	return nil
}

func (f Faults) validate() error {
	switch {
	case f.Latency < 0:
		return fmt.Errorf("latency: %s is negative", f.Latency)
	case f.ThrottleEvery < 0:
		return fmt.Errorf("throttleEvery: %d is negative", f.ThrottleEvery)
	case f.ThrottleRate < 0 || f.ThrottleRate > 1:
		return fmt.Errorf("throttleRate: %v is not in [0, 1]", f.ThrottleRate)
	case f.ErrorRate < 0 || f.ErrorRate > 1:
		return fmt.Errorf("errorRate: %v is not in [0, 1]", f.ErrorRate)
	}
	if f.RateLimits != nil {
		if err := f.RateLimits.validate(); err != nil {
			return err
		}
	}
	for _, a := range f.Actions {
		if svc, act, ok := strings.Cut(a, ":"); !ok || svc == "" || act == "" {
			return fmt.Errorf("actions: %q is not service:Action", a)
		}
	}
	return nil
}

// applies says whether the latency, throttle, error and IgnoreDryRun faults
// hit a call.
func (f Faults) applies(svc, action string) bool {
	if len(f.Actions) == 0 {
		return true
	}
	for _, a := range f.Actions {
		if strings.EqualFold(a, svc+":"+action) || strings.EqualFold(a, svc+":*") {
			return true
		}
	}
	return false
}

// SetFaults replaces the injected faults and restarts their counters and
// random sequence. Invalid values (negative latency, rates outside [0, 1])
// are clamped.
func (s *Server) SetFaults(f Faults) {
	f.Latency = max(f.Latency, 0)
	f.ThrottleEvery = max(f.ThrottleEvery, 0)
	f.ThrottleRate = min(max(f.ThrottleRate, 0), 1)
	f.ErrorRate = min(max(f.ErrorRate, 0), 1)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
	s.faults.Actions = append([]string(nil), f.Actions...)
	if f.RateLimits != nil {
		rl := *f.RateLimits
		s.faults.RateLimits = &rl
	}
	s.rng = rand.New(rand.NewPCG(f.Seed, f.Seed^0x5157))
	s.calls = 0
	// Full buckets and fresh counts.
	s.buckets = map[string]*tokenBucket{}
	s.rlAdmitted, s.rlThrottled = map[string]int{}, map[string]int{}
}

// Faults returns the injected faults.
func (s *Server) Faults() Faults {
	return s.currentFaults()
}

func (s *Server) currentFaults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.faults
	f.Actions = append([]string(nil), s.faults.Actions...)
	if s.faults.RateLimits != nil {
		rl := *s.faults.RateLimits
		f.RateLimits = &rl
	}
	return f
}

// injectFault decides whether an authenticated call is throttled or fails.
func (s *Server) injectFault(svc, action string, f Faults) *APIError {
	if !f.applies(svc, action) || f.ThrottleEvery == 0 && f.ThrottleRate == 0 && f.ErrorRate == 0 {
		return nil
	}
	s.mu.Lock()
	s.calls++
	n := s.calls
	throttle := f.ThrottleEvery > 0 && n%f.ThrottleEvery == 0
	if f.ThrottleRate > 0 && s.rng.Float64() < f.ThrottleRate {
		throttle = true
	}
	fail := !throttle && f.ErrorRate > 0 && s.rng.Float64() < f.ErrorRate
	s.mu.Unlock()
	switch {
	case throttle && svc == "ec2":
		return errorf(http.StatusServiceUnavailable, "RequestLimitExceeded", "Request limit exceeded.")
	case throttle:
		return errorf(http.StatusBadRequest, "Throttling", "Rate exceeded")
	case fail && n%2 == 1:
		return errorf(http.StatusInternalServerError, "InternalError", "An internal error has occurred")
	case fail:
		return errorf(http.StatusServiceUnavailable, "ServiceUnavailable", "Service is unavailable. Please try again shortly.")
	}
	return nil
}

// control guards the /_sim/ endpoints: they are test controls, not AWS, and
// answer loopback callers only unless Options.AllowRemoteControl is set. A
// web page the operator has open can still reach loopback, so a control
// also refuses what a browser sends on a page's behalf: a request whose
// Origin is not the simulator's own (or that Sec-Fetch-Site marks
// cross-site), and a body that is not application/json (a form POST can
// only send form or plain-text bodies, and a JSON body from another origin
// needs a CORS preflight the simulator never grants).
func (s *Server) control(h http.HandlerFunc) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		if !s.opts.AllowRemoteControl {
			host, _, err := net.SplitHostPort(r.RemoteAddr)
			ip := net.ParseIP(host)
			if err != nil || ip == nil || !ip.IsLoopback() {
				http.Error(rw, "sim: the /_sim/ controls answer loopback callers only", http.StatusForbidden)
				return
			}
		}
		if err := checkControlRequest(r); err != nil {
			code := http.StatusForbidden
			if errors.Is(err, errControlContentType) {
				code = http.StatusUnsupportedMediaType
			}
			http.Error(rw, "sim: "+err.Error(), code)
			return
		}
		h(rw, r)
	}
}

// crossOrigin rejects unsafe requests a browser marks as cross-origin
// (Sec-Fetch-Site, or an Origin whose host is not the request's Host).
var crossOrigin = http.NewCrossOriginProtection()

var errControlContentType = errors.New("a /_sim/ control takes a JSON body: send it with Content-Type: application/json")

// checkControlRequest refuses a control request a web page could have sent:
// a foreign Origin on any method, a cross-origin unsafe request, and a
// PUT or POST whose body is not declared application/json.
func checkControlRequest(r *http.Request) error {
	if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host && o != "https://"+r.Host {
		return fmt.Errorf("the /_sim/ controls refuse requests from another origin (Origin %q, the simulator is http://%s): call them from a test or lifeboat sim, not a web page", o, r.Host)
	}
	if err := crossOrigin.Check(r); err != nil {
		return fmt.Errorf("the /_sim/ controls refuse cross-origin requests: %w", err)
	}
	if r.Method == http.MethodPut || r.Method == http.MethodPost {
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "application/json" {
			return fmt.Errorf("%w (got %q)", errControlContentType, r.Header.Get("Content-Type"))
		}
	}
	return nil
}

func writeJSON(rw http.ResponseWriter, v any) {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(rw, err.Error(), http.StatusInternalServerError)
		return
	}
	rw.Header().Set("Content-Type", "application/json")
	_, _ = rw.Write(append(data, '\n'))
}

// serveFaults: GET returns the faults as JSON, PUT replaces them.
func (s *Server) serveFaults(rw http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodPut, http.MethodPost:
		body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, 64<<10))
		if err != nil {
			http.Error(rw, "sim: reading faults: "+err.Error(), http.StatusBadRequest)
			return
		}
		var f Faults
		if err := json.Unmarshal(body, &f); err != nil {
			http.Error(rw, "sim: faults: "+err.Error(), http.StatusBadRequest)
			return
		}
		s.SetFaults(f)
	default:
		rw.Header().Set("Allow", "GET, PUT")
		http.Error(rw, "sim: use GET or PUT", http.StatusMethodNotAllowed)
		return
	}
	writeJSON(rw, s.Faults())
}

// serveWorld: GET returns the world in the format LoadWorld reads.
func (s *Server) serveWorld(rw http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		rw.Header().Set("Allow", "GET")
		http.Error(rw, "sim: use GET", http.StatusMethodNotAllowed)
		return
	}
	writeJSON(rw, s.world)
}

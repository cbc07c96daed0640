package sim

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/sim/policy"
	"github.com/lifeboat-ha/lifeboat/internal/sim/sigv4"
)

// Wire constants.
const (
	EC2Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"
	STSNamespace = "https://sts.amazonaws.com/doc/2011-06-15/"
	// DefaultMaxSkew is the SigV4 time window AWS allows.
	DefaultMaxSkew = 5 * time.Minute
	maxBody        = 1 << 20
	maxAuthMsgs    = 4096
)

// Options configure a Server.
type Options struct {
	// Now is the simulator's clock (default time.Now); the ClockSkew fault
	// is added to it.
	Now func() time.Time
	// MaxSkew is the allowed difference between a request's signing time
	// and the simulator's clock (default 5 minutes).
	MaxSkew time.Duration
	// Faults are the initial faults (see SetFaults).
	Faults Faults
	// AllowRemoteControl serves /_sim/ to non-loopback callers too.
	AllowRemoteControl bool
	// Logf, if set, gets one line per API request.
	Logf func(format string, args ...any)
	// IMDS are the metadata service options of instances not given their
	// own with SetIMDSOptions.
	IMDS IMDSOptions
	// RouteHook, if set, is called after CreateRoute or ReplaceRoute
	// changed a route: with the route table, the destination and the target
	// network interface ("" for a gateway target). It runs outside the
	// world's lock, before the answer is sent, so a test network can mirror
	// the route before the caller hears of it (see internal/netlab).
	RouteHook func(routeTableID, destinationCidrBlock, networkInterfaceID string)
}

// Server answers AWS Query API requests for a World.
type Server struct {
	world    *World
	opts     Options
	services map[string]*service
	reqSeq   atomic.Uint64

	mu        sync.Mutex // guards the fields below
	faults    Faults
	rng       *rand.Rand
	calls     int
	authMsgs  map[string]string // encoded -> decoded authorization messages
	authOrder []string
	// EC2 request-rate buckets by action, and what they admitted and
	// throttled (Faults.RateLimits; reset by SetFaults).
	buckets     map[string]*tokenBucket
	rlAdmitted  map[string]int
	rlThrottled map[string]int

	imds imdsState // the instance metadata services (imds.go)
}

// APIError is an AWS error answer: its code, message and HTTP status.
type APIError struct {
	Code    string
	Message string
	Status  int
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

func errorf(status int, code, format string, args ...any) *APIError {
	return &APIError{Code: code, Message: fmt.Sprintf(format, args...), Status: status}
}

// protocol is how a service encodes answers.
type protocol int

const (
	protoEC2   protocol = iota // EC2 Query: <ActionResponse><requestId>, <Response><Errors>
	protoQuery                 // AWS Query (STS, IAM): <ActionResult>, <ErrorResponse>
)

// service is one simulated AWS service. Handlers run with the world's
// mutex held and return a value to encode as the response body.
type service struct {
	name      string
	protocol  protocol
	namespace string
	actions   map[string]func(*request) (any, *APIError)
}

// request is one authenticated API call being served.
type request struct {
	s         *Server
	w         *World // locked while the handler runs
	id        string
	service   string
	action    string
	params    url.Values
	principal *principal
	now       time.Time
	dryRun    bool
	changed   *routeChange // a route the handler created or replaced, for RouteHook
}

// routeChange is a route change reported to Options.RouteHook.
type routeChange struct{ table, dest, eni string }

// principal is the identity behind a credential.
type principal struct {
	arn, userID, role, user, session string
	docs                             []namedDoc
}

// New returns a Server for w. It sets w's clock to the server's (skewed)
// clock, so credentials w issues expire on simulator time.
func New(w *World, opts Options) *Server {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxSkew <= 0 {
		opts.MaxSkew = DefaultMaxSkew
	}
	s := &Server{world: w, opts: opts, authMsgs: map[string]string{}}
	s.SetFaults(opts.Faults)
	s.services = map[string]*service{
		"ec2": {name: "ec2", protocol: protoEC2, namespace: EC2Namespace, actions: ec2Actions},
		"sts": {name: "sts", protocol: protoQuery, namespace: STSNamespace, actions: stsActions},
		"iam": {name: "iam", protocol: protoQuery, namespace: IAMNamespace, actions: iamActions},
	}
	w.setClock(s.Now)
	return s
}

// World returns the server's world.
func (s *Server) World() *World { return s.world }

// Now is the simulator's clock: Options.Now plus the ClockSkew fault.
func (s *Server) Now() time.Time {
	s.mu.Lock()
	skew := s.faults.ClockSkew
	s.mu.Unlock()
	return s.opts.Now().Add(skew)
}

// Handler serves the AWS Query APIs at "/" (POST form bodies or GET query
// strings) and the simulator's test controls under "/_sim/".
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/_sim/faults", s.control(s.serveFaults))
	mux.HandleFunc("/_sim/world", s.control(s.serveWorld))
	mux.HandleFunc("/_sim/imds/", s.control(s.serveIMDSControl))
	mux.HandleFunc("/_sim/", s.control(http.NotFound))
	mux.HandleFunc("/", s.serveAPI)
	return mux
}

func (s *Server) newRequestID() string {
	n := s.reqSeq.Add(1)
	return fmt.Sprintf("5151%04x-0000-4000-8000-%012x", n>>48&0xffff, n&0xffffffffffff)
}

var credentialScopeRe = regexp.MustCompile(`Credential=[^/,\s]*/[^/,\s]*/[^/,\s]*/([^/,\s]*)/`)

// guessService picks the answer format for a request that failed before its
// signature was verified.
func guessService(r *http.Request, params url.Values) string {
	if m := credentialScopeRe.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
		return m[1]
	}
	if c := strings.Split(r.URL.Query().Get("X-Amz-Credential"), "/"); len(c) == 5 {
		return c[3]
	}
	if _, ok := stsActions[params.Get("Action")]; ok {
		return "sts"
	}
	if _, ok := iamActions[params.Get("Action")]; ok {
		return "iam"
	}
	return "ec2"
}

func (s *Server) serveAPI(rw http.ResponseWriter, r *http.Request) {
	id := s.newRequestID()
	now := s.Now()
	rw.Header().Set("Date", now.UTC().Format(http.TimeFormat))
	rw.Header().Set("x-amzn-RequestId", id)
	svc, action, apiErr := "ec2", "", (*APIError)(nil)
	defer func() {
		if s.opts.Logf == nil {
			return
		}
		if apiErr != nil {
			s.opts.Logf("sim: %s %s %s -> %d %s", svc, action, id, apiErr.Status, apiErr.Code)
		} else {
			s.opts.Logf("sim: %s %s %s -> 200", svc, action, id)
		}
	}()
	fail := func(e *APIError) {
		apiErr = e
		s.writeError(rw, svc, id, e)
	}

	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, maxBody))
	params, perr := parseParams(r, body)
	action = params.Get("Action")
	svc = guessService(r, params)
	switch {
	case r.Method != http.MethodPost && r.Method != http.MethodGet:
		fail(errorf(http.StatusMethodNotAllowed, "UnsupportedHttpVerb", "The HTTP verb %s is not supported.", r.Method))
		return
	case err != nil:
		fail(errorf(http.StatusRequestEntityTooLarge, "RequestEntityTooLarge", "The request body is too large or could not be read."))
		return
	case perr != nil:
		fail(errorf(http.StatusBadRequest, "MalformedQueryString", "The query string or form body could not be parsed: %v", perr))
		return
	}

	f := s.currentFaults()
	if f.Latency > 0 && f.applies(svc, action) {
		t := time.NewTimer(f.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}

	res, err := sigv4.Verify(r, body, s.lookup, now, s.opts.MaxSkew)
	if err != nil {
		fail(authError(svc, err))
		return
	}
	svc = res.Service
	sv := s.services[svc]
	switch {
	case sv == nil:
		fail(errorf(http.StatusBadRequest, "InvalidAction", "The service %q is not simulated.", svc))
		return
	case svc == "ec2" && res.Region != s.world.Region():
		fail(errorf(http.StatusUnauthorized, "AuthFailure", "Credential should be scoped to a valid region, not '%s'.", res.Region))
		return
	case action == "":
		fail(errorf(http.StatusBadRequest, "MissingAction", "The request must contain the parameter Action."))
		return
	}
	if e := s.injectFault(svc, action, f); e != nil {
		fail(e)
		return
	}
	if e := s.rateLimit(svc, action, params, f.RateLimits); e != nil {
		fail(e)
		return
	}

	req := &request{s: s, w: s.world, id: id, service: svc, action: action, params: params, now: now}
	out, e := s.dispatch(sv, req, res.AccessKeyID, f)
	if e != nil {
		fail(e)
		return
	}
	if c := req.changed; c != nil && s.opts.RouteHook != nil {
		s.opts.RouteHook(c.table, c.dest, c.eni)
	}
	s.writeResult(rw, sv, action, id, out)
}

// dispatch resolves the caller and runs the action's handler under the
// world's lock.
func (s *Server) dispatch(sv *service, req *request, accessKeyID string, f Faults) (any, *APIError) {
	w := s.world
	w.mu.Lock()
	defer w.mu.Unlock()
	p, e := w.principalLocked(accessKeyID, req.now, f.ExpireCredentials)
	if e != nil {
		return nil, e
	}
	req.principal = p
	h := sv.actions[req.action]
	if h == nil {
		if sv.protocol == protoEC2 {
			return nil, errorf(http.StatusBadRequest, "InvalidAction", "The action %s is not valid for this web service.", req.action)
		}
		return nil, errorf(http.StatusBadRequest, "InvalidAction", "Could not find operation %s for version %s", req.action, req.params.Get("Version"))
	}
	if v := req.params.Get("DryRun"); v != "" {
		switch strings.ToLower(v) {
		case "true":
			// A broken endpoint (the IgnoreDryRun fault) carries the
			// call out for real and answers plain success.
			req.dryRun = !(f.IgnoreDryRun && f.applies(req.service, req.action))
		case "false":
		default:
			return nil, errorf(http.StatusBadRequest, "InvalidParameterValue", "Value (%s) for parameter DryRun is invalid. Expected: 'true' or 'false'.", v)
		}
	}
	return h(req)
}

func (s *Server) lookup(accessKeyID string) (secret, token string, ok bool) {
	w := s.world
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.credential(accessKeyID)
	if c == nil {
		return "", "", false
	}
	return c.SecretAccessKey, c.SessionToken, true
}

// principalLocked resolves a verified access key into its identity.
func (w *World) principalLocked(accessKeyID string, now time.Time, expireAll bool) (*principal, *APIError) {
	c := w.credential(accessKeyID)
	if c == nil { // deleted between verification and now
		return nil, errorf(http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid.")
	}
	if (c.SessionToken != "" && expireAll) || (!c.Expiration.IsZero() && !now.Before(c.Expiration)) {
		return nil, errorf(http.StatusBadRequest, "ExpiredToken", "The security token included in the request is expired")
	}
	acct := w.st.AccountID
	if c.User != "" {
		u := w.user(c.User)
		if u == nil {
			return nil, errorf(http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid.")
		}
		return &principal{arn: fmt.Sprintf("arn:aws:iam::%s:user/%s", acct, u.Name), userID: u.ID, user: u.Name, docs: w.docs["user/"+u.Name]}, nil
	}
	p := &principal{arn: fmt.Sprintf("arn:aws:sts::%s:assumed-role/%s/%s", acct, c.Role, c.SessionName),
		role: c.Role, session: c.SessionName, userID: c.SessionName, docs: w.docs["role/"+c.Role]}
	if r := w.role(c.Role); r != nil {
		p.userID = r.ID + ":" + c.SessionName
	}
	return p, nil
}

// authError turns a signature failure into the service's answer.
func authError(svc string, err error) *APIError {
	var se *sigv4.Error
	if !errors.As(err, &se) {
		return errorf(http.StatusBadRequest, "IncompleteSignature", "%v", err)
	}
	e := &APIError{Code: se.Code, Message: se.Message, Status: se.Status}
	if e.Status == 0 {
		e.Status = http.StatusBadRequest
	}
	if svc == "ec2" && (e.Code == sigv4.CodeInvalidClientTokenId || e.Code == sigv4.CodeSignatureDoesNotMatch) {
		return errorf(http.StatusUnauthorized, "AuthFailure", "AWS was not able to validate the provided access credentials")
	}
	return e
}

// authorize checks the caller may perform the request's action on every
// resource ("*" when none are given). It answers UnauthorizedOperation with
// an encoded authorization message when not, and DryRunOperation when the
// request is a dry run that would have been allowed. Call it after
// validating the request and before changing anything.
func (r *request) authorize(resources ...string) *APIError {
	if e := r.check(r.service+":"+r.action, resources...); e != nil {
		return e
	}
	if r.dryRun {
		return errorf(http.StatusPreconditionFailed, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.")
	}
	return nil
}

// check evaluates action on each resource against the caller's policies.
func (r *request) check(action string, resources ...string) *APIError {
	if len(resources) == 0 {
		resources = []string{"*"}
	}
	for _, res := range resources {
		req := policy.Request{Action: action, Resource: res}
		docs := make([]*policy.Document, len(r.principal.docs))
		for i, d := range r.principal.docs {
			docs[i] = d.doc
		}
		dec := policy.Evaluate(docs, req)
		if dec == policy.Allow {
			continue
		}
		if r.service != "ec2" {
			return errorf(http.StatusForbidden, "AccessDenied", "User: %s is not authorized to perform: %s on resource: %s", r.principal.arn, action, res)
		}
		msg := r.s.encodeAuthMessage(r, req, dec)
		return errorf(http.StatusForbidden, "UnauthorizedOperation", "You are not authorized to perform this operation. Encoded authorization failure message: %s", msg)
	}
	return nil
}

func items(v ...any) map[string]any {
	if v == nil {
		v = []any{}
	}
	return map[string]any{"items": v}
}

func values(vs ...string) map[string]any {
	var out []any
	for _, v := range vs {
		out = append(out, map[string]any{"value": v})
	}
	return items(out...)
}

// encodeAuthMessage builds the decoded form of an authorization failure
// (the shape sts:DecodeAuthorizationMessage returns on AWS), remembers it
// and returns its opaque encoding.
func (s *Server) encodeAuthMessage(r *request, req policy.Request, dec policy.Decision) string {
	p := r.principal
	var matched []any
	if dec == policy.ExplicitDeny {
		for _, d := range p.docs {
			got, name := policy.Explain([]*policy.Document{d.doc}, req)
			if got != policy.ExplicitDeny {
				continue
			}
			for i, st := range d.doc.Statements {
				if st.Sid != name && fmt.Sprintf("statement[%d]", i) != name {
					continue
				}
				matched = append(matched, map[string]any{
					"statementId": st.Sid, "effect": "DENY", "policyName": d.name,
					"principals": values(p.userID), "principalGroups": items(),
					"actions": values(append(st.Action, st.NotAction...)...), "resources": values(append(st.Resource, st.NotResource...)...),
					"conditions": items(),
				})
				break
			}
			break
		}
	}
	region := r.w.st.Region
	msg := map[string]any{
		"allowed":           false,
		"explicitDeny":      dec == policy.ExplicitDeny,
		"matchedStatements": items(matched...),
		"failures":          items(),
		"context": map[string]any{
			"principal": map[string]any{"id": p.userID, "arn": p.arn},
			"action":    req.Action,
			"resource":  req.Resource,
			"conditions": items(
				map[string]any{"key": "ec2:Region", "values": values(region)},
				map[string]any{"key": "aws:Region", "values": values(region)},
				map[string]any{"key": "aws:Account", "values": values(r.w.st.AccountID)},
				map[string]any{"key": "aws:userid", "values": values(p.userID)},
				map[string]any{"key": "aws:username", "values": values(p.user)},
				map[string]any{"key": "aws:CurrentTime", "values": values(r.now.UTC().Format(time.RFC3339))},
			),
		},
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(msg)
	decoded := strings.TrimSpace(buf.String())
	token := base64.RawURLEncoding.EncodeToString([]byte(decoded))
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.authMsgs[token]; !ok {
		s.authMsgs[token] = decoded
		s.authOrder = append(s.authOrder, token)
		if len(s.authOrder) > maxAuthMsgs {
			delete(s.authMsgs, s.authOrder[0])
			s.authOrder = s.authOrder[1:]
		}
	}
	return token
}

// decodeAuthMessage returns a message encodeAuthMessage produced.
func (s *Server) decodeAuthMessage(token string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.authMsgs[token]
	return m, ok
}

// parseParams merges the URL query and a form body.
func parseParams(r *http.Request, body []byte) (url.Values, error) {
	params, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return params, err
	}
	if r.Method == http.MethodPost && len(body) > 0 {
		ct := r.Header.Get("Content-Type")
		if ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/x-www-form-urlencoded") {
			return params, fmt.Errorf("unsupported Content-Type %q", ct)
		}
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return params, err
		}
		for k, v := range form {
			params[k] = append(params[k], v...)
		}
	}
	return params, nil
}

// withRequestID is implemented by EC2 response bodies (via ec2Meta).
type withRequestID interface{ setRequestID(string) }

// ec2Meta is embedded first in every EC2 response body.
type ec2Meta struct {
	RequestID string `xml:"requestId"`
}

func (m *ec2Meta) setRequestID(id string) { m.RequestID = id }

type queryMeta struct {
	RequestID string `xml:"RequestId"`
}

const xmlHeader = `<?xml version="1.0" encoding="UTF-8"?>` + "\n"

func (s *Server) writeResult(rw http.ResponseWriter, sv *service, action, id string, out any) {
	var buf bytes.Buffer
	buf.WriteString(xmlHeader)
	enc := xml.NewEncoder(&buf)
	start := xml.StartElement{Name: xml.Name{Local: action + "Response"}, Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: sv.namespace}}}
	var err error
	switch sv.protocol {
	case protoEC2:
		if m, ok := out.(withRequestID); ok {
			m.setRequestID(id)
		}
		err = enc.EncodeElement(out, start)
	default:
		if err = enc.EncodeToken(start); err == nil {
			if out != nil {
				err = enc.EncodeElement(out, xml.StartElement{Name: xml.Name{Local: action + "Result"}})
			}
			if err == nil {
				err = enc.EncodeElement(queryMeta{id}, xml.StartElement{Name: xml.Name{Local: "ResponseMetadata"}})
			}
			if err == nil {
				err = enc.EncodeToken(start.End())
			}
		}
	}
	if err == nil {
		err = enc.Flush()
	}
	if err != nil {
		s.writeError(rw, sv.name, id, errorf(http.StatusInternalServerError, "InternalError", "encoding the response: %v", err))
		return
	}
	rw.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	rw.WriteHeader(http.StatusOK)
	_, _ = rw.Write(buf.Bytes())
}

type ec2ErrorResponse struct {
	XMLName   xml.Name       `xml:"Response"`
	Errors    []ec2ErrorItem `xml:"Errors>Error"`
	RequestID string         `xml:"RequestID"`
}

type ec2ErrorItem struct {
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

type queryErrorResponse struct {
	XMLName   xml.Name `xml:"ErrorResponse"`
	Xmlns     string   `xml:"xmlns,attr,omitempty"`
	Error     queryErrorItem
	RequestID string `xml:"RequestId"`
}

type queryErrorItem struct {
	Type    string `xml:"Type"`
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

// writeError answers with an error in the service's format.
func (s *Server) writeError(rw http.ResponseWriter, svc, id string, e *APIError) {
	status := e.Status
	if status == 0 {
		status = http.StatusBadRequest
	}
	var v any
	if sv := s.services[svc]; sv != nil && sv.protocol == protoQuery {
		typ := "Sender"
		if status >= 500 {
			typ = "Receiver"
		}
		v = queryErrorResponse{Xmlns: sv.namespace, Error: queryErrorItem{typ, e.Code, e.Message}, RequestID: id}
	} else {
		v = ec2ErrorResponse{Errors: []ec2ErrorItem{{e.Code, e.Message}}, RequestID: id}
	}
	out, err := xml.Marshal(v)
	if err != nil { // cannot happen for these types
		out = []byte("<Response><Errors><Error><Code>InternalError</Code><Message></Message></Error></Errors></Response>")
	}
	rw.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	rw.WriteHeader(status)
	_, _ = rw.Write(append([]byte(xmlHeader), out...))
}

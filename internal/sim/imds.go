package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Instance metadata service (IMDS) constants.
const (
	// IMDSTokenHeader carries an IMDSv2 session token on GET requests.
	IMDSTokenHeader = "X-Aws-Ec2-Metadata-Token"
	// IMDSTokenTTLHeader carries the requested token lifetime (seconds) on
	// the token PUT and the granted one on its answer.
	IMDSTokenTTLHeader = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
	// MaxIMDSTokenTTL is the longest token lifetime IMDS grants (6 hours).
	MaxIMDSTokenTTL = 21600
	// DefaultIMDSCredentialTTL is the lifetime of instance role credentials.
	DefaultIMDSCredentialTTL = 6 * time.Hour
	// DefaultIMDSRefreshBefore is how long before expiry IMDS hands out a
	// new set of role credentials (capped at a quarter of the lifetime).
	DefaultIMDSRefreshBefore = 15 * time.Minute

	imdsTokenPath = "/latest/api/token"
	maxIMDSTokens = 4096 // per instance; the ones closest to expiry go first
)

// IMDSOptions configure one instance's metadata service. The zero value is
// an instance with HttpTokens "required" (IMDSv2 only), 6-hour role
// credentials and no faults.
type IMDSOptions struct {
	// AllowV1 also answers GETs that carry no token (HttpTokens
	// "optional"). A GET with an invalid or expired token is still refused
	// with 401, as AWS does.
	AllowV1 bool
	// V1Only simulates a metadata service without IMDSv2: the token PUT
	// is refused with 403 Forbidden (what AWS's IMDS answers when it will
	// not issue a token, e.g. to a PUT carrying X-Forwarded-For; the SDKs
	// fall back to IMDSv1 on 403, 404 and 405 alike) and GETs need no token
	// (a token header is ignored).
	V1Only bool
	// CredentialTTL is the lifetime of the instance role credentials IMDS
	// issues (default DefaultIMDSCredentialTTL).
	CredentialTTL time.Duration
	// RefreshBefore: IMDS keeps handing out the same role credentials
	// until they are within RefreshBefore of expiring, then issues a new
	// set (default: DefaultIMDSRefreshBefore or a quarter of
	// CredentialTTL, whichever is less). The old set stays valid until it
	// expires.
	RefreshBefore time.Duration
	// Down drops every connection without an answer (the client sees the
	// connection closed), as an unreachable or crashed IMDS would.
	Down bool
	// Latency delays every answer.
	Latency time.Duration
	// HopLimitExceeded simulates an http-put-response-hop-limit too low
	// for the caller's network path (a container behind the host, say):
	// the token PUT is accepted but its answer never arrives, as AWS's
	// answer packet dies on the way; the connection stays open until the
	// caller gives up.
	HopLimitExceeded bool
}

func (o IMDSOptions) credentialTTL() time.Duration {
	if o.CredentialTTL <= 0 {
		return DefaultIMDSCredentialTTL
	}
	return o.CredentialTTL
}

func (o IMDSOptions) refreshBefore() time.Duration {
	if o.RefreshBefore > 0 {
		return o.RefreshBefore
	}
	return min(DefaultIMDSRefreshBefore, o.credentialTTL()/4)
}

// imdsOptionsJSON is the wire form of IMDSOptions (/_sim/imds/): durations
// as Go duration strings ("90s").
type imdsOptionsJSON struct {
	AllowV1       bool   `json:"allowV1,omitempty"`
	V1Only        bool   `json:"v1Only,omitempty"`
	CredentialTTL string `json:"credentialTtl,omitempty"`
	RefreshBefore string `json:"refreshBefore,omitempty"`
	Down          bool   `json:"down,omitempty"`
	HopLimit      bool   `json:"hopLimitExceeded,omitempty"`
	Latency       string `json:"latency,omitempty"`
}

// MarshalJSON writes durations as strings such as "90s".
func (o IMDSOptions) MarshalJSON() ([]byte, error) {
	j := imdsOptionsJSON{AllowV1: o.AllowV1, V1Only: o.V1Only, Down: o.Down, HopLimit: o.HopLimitExceeded}
	for _, d := range []struct {
		v   time.Duration
		dst *string
	}{{o.CredentialTTL, &j.CredentialTTL}, {o.RefreshBefore, &j.RefreshBefore}, {o.Latency, &j.Latency}} {
		if d.v != 0 {
			*d.dst = d.v.String()
		}
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads the form MarshalJSON writes; unknown fields and
// negative durations are rejected.
func (o *IMDSOptions) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var j imdsOptionsJSON
	if err := dec.Decode(&j); err != nil {
		return err
	}
	out := IMDSOptions{AllowV1: j.AllowV1, V1Only: j.V1Only, Down: j.Down, HopLimitExceeded: j.HopLimit}
	for _, d := range []struct {
		name, s string
		dst     *time.Duration
	}{{"credentialTtl", j.CredentialTTL, &out.CredentialTTL}, {"refreshBefore", j.RefreshBefore, &out.RefreshBefore}, {"latency", j.Latency, &out.Latency}} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil {
			return fmt.Errorf("%s: %w", d.name, err)
		}
		if v < 0 {
			return fmt.Errorf("%s: %s is negative", d.name, d.s)
		}
		*d.dst = v
	}
	*o = out
	return nil
}

// imdsState is the metadata services' state (zero value ready to use).
type imdsState struct {
	mu    sync.Mutex
	insts map[string]*imdsInstance
}

// imdsInstance is one instance's metadata service.
type imdsInstance struct {
	opts    *IMDSOptions         // nil: Options.IMDS
	tokens  map[string]time.Time // token -> expiry (simulator clock)
	cred    *Credential          // role credentials being handed out
	updated time.Time            // when cred was issued
}

// imdsInstLocked returns the state of an instance's IMDS; s.imds.mu is held.
func (s *Server) imdsInstLocked(instanceID string) *imdsInstance {
	if s.imds.insts == nil {
		s.imds.insts = map[string]*imdsInstance{}
	}
	st := s.imds.insts[instanceID]
	if st == nil {
		st = &imdsInstance{tokens: map[string]time.Time{}}
		s.imds.insts[instanceID] = st
	}
	return st
}

// SetIMDSOptions replaces the options of an instance's metadata service
// (tokens and credentials already issued stay valid).
func (s *Server) SetIMDSOptions(instanceID string, o IMDSOptions) {
	o.Latency = max(o.Latency, 0)
	s.imds.mu.Lock()
	defer s.imds.mu.Unlock()
	s.imdsInstLocked(instanceID).opts = &o
}

// ResetIMDSOptions makes an instance's metadata service use Options.IMDS
// again.
func (s *Server) ResetIMDSOptions(instanceID string) {
	s.imds.mu.Lock()
	defer s.imds.mu.Unlock()
	s.imdsInstLocked(instanceID).opts = nil
}

// IMDSOptions returns the options an instance's metadata service uses.
func (s *Server) IMDSOptions(instanceID string) IMDSOptions {
	s.imds.mu.Lock()
	defer s.imds.mu.Unlock()
	if st := s.imds.insts[instanceID]; st != nil && st.opts != nil {
		return *st.opts
	}
	return s.opts.IMDS
}

// IMDSHandler serves the instance metadata service (IMDSv2 by default) of
// one instance; serve each instance's on its own listener and give its URL
// to the SDK's imds client as Endpoint. It answers what the AWS SDKs and
// tools use:
//
//	PUT /latest/api/token                      (X-aws-ec2-metadata-token-ttl-seconds: 1..21600)
//	/latest/meta-data/                         instance-id, ami-id, instance-type, hostname, local-ipv4, mac, public-ipv4, …
//	/latest/meta-data/placement/               region, availability-zone
//	/latest/meta-data/network/interfaces/macs/ MAC/ with interface-id, local-ipv4s, subnet-id, vpc-id, device-number, …
//	/latest/meta-data/iam/info                 InstanceProfileArn, InstanceProfileId
//	/latest/meta-data/iam/security-credentials/ROLE
//	/latest/dynamic/instance-identity/document
//
// Directories (paths ending in "/") list their entries one a line,
// subdirectories with a trailing "/". Every GET needs a valid, unexpired
// token in X-aws-ec2-metadata-token (401 otherwise) unless IMDSOptions
// allow IMDSv1; unknown paths answer 404. The role credentials are issued
// with World.IssueInstanceCredentials and rotated as IMDSOptions say; the
// Faults of the Server (which apply to the AWS APIs) do not apply here,
// IMDSOptions.Down and Latency do.
func (s *Server) IMDSHandler(instanceID string) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) { s.serveIMDS(instanceID, rw, r) })
}

func (s *Server) serveIMDS(instanceID string, rw http.ResponseWriter, r *http.Request) {
	o := s.IMDSOptions(instanceID)
	if o.Down {
		s.logIMDS(instanceID, r, "down: connection dropped")
		if hj, ok := rw.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				_ = c.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	if o.HopLimitExceeded && r.Method == http.MethodPut {
		s.logIMDS(instanceID, r, "token answer lost: hop limit exceeded")
		<-r.Context().Done()
		return
	}
	if o.Latency > 0 {
		t := time.NewTimer(o.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10))
	h := rw.Header()
	h.Set("Server", "EC2ws")
	status, body := s.imdsAnswer(instanceID, r, o, h)
	s.logIMDS(instanceID, r, strconv.Itoa(status))
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "text/plain")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	rw.WriteHeader(status)
	_, _ = io.WriteString(rw, body)
}

func (s *Server) logIMDS(instanceID string, r *http.Request, outcome string) {
	if s.opts.Logf != nil {
		s.opts.Logf("sim: imds %s %s %s -> %s", instanceID, r.Method, r.URL.Path, outcome)
	}
}

func imdsStatus(code int) (int, string) {
	return code, fmt.Sprintf("%d - %s\n", code, http.StatusText(code))
}

// imdsAnswer computes the status and body of an IMDS request.
func (s *Server) imdsAnswer(instanceID string, r *http.Request, o IMDSOptions, h http.Header) (int, string) {
	now := s.Now()
	if _, ok := s.world.Instance(instanceID); !ok {
		return imdsStatus(http.StatusNotFound)
	}
	if r.URL.Path == imdsTokenPath {
		if r.Method != http.MethodPut {
			h.Set("Allow", "PUT")
			return imdsStatus(http.StatusMethodNotAllowed)
		}
		return s.imdsToken(instanceID, r, o, now, h)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		return imdsStatus(http.StatusMethodNotAllowed)
	}
	if !o.V1Only {
		tok := r.Header.Get(IMDSTokenHeader)
		if tok == "" && !o.AllowV1 || tok != "" && !s.imdsTokenValid(instanceID, tok, now) {
			return imdsStatus(http.StatusUnauthorized)
		}
	}

	p := r.URL.Path
	if p == "/" {
		return http.StatusOK, "latest"
	}
	rel, ok := strings.CutPrefix(p, "/latest/")
	if p == "/latest" {
		rel, ok = "", true
	}
	if !ok {
		return imdsStatus(http.StatusNotFound)
	}
	rel = strings.TrimSuffix(rel, "/")
	tree, role := s.world.imdsTree(instanceID)
	if tree == nil {
		return imdsStatus(http.StatusNotFound)
	}
	credsKey := "meta-data/iam/security-credentials/" + role
	switch {
	case role != "" && rel == credsKey:
		c, updated, err := s.imdsCredentials(instanceID, role, o, now)
		if err != nil {
			return http.StatusInternalServerError, imdsJSON(map[string]string{"Code": "InternalError", "Message": err.Error(), "LastUpdated": iamTime(now)})
		}
		return http.StatusOK, imdsJSON(struct {
			// Field names exactly as AWS spells them: the Go SDK matches
			// case-insensitively, the AWS CLI (botocore) does not.
			Code            string `json:"Code"`
			LastUpdated     string `json:"LastUpdated"`
			Type            string `json:"Type"`
			AccessKeyID     string `json:"AccessKeyId"`
			SecretAccessKey string `json:"SecretAccessKey"`
			Token           string `json:"Token"`
			Expiration      string `json:"Expiration"`
		}{"Success", iamTime(updated), "AWS-HMAC", c.AccessKeyID, c.SecretAccessKey, c.SessionToken, iamTime(c.Expiration)})
	case role != "" && rel == "meta-data/iam/info":
		s.imds.mu.Lock()
		updated := s.imdsInstLocked(instanceID).updated
		s.imds.mu.Unlock()
		if updated.IsZero() {
			updated = now
		}
		var info struct{ Code, LastUpdated, InstanceProfileArn, InstanceProfileId string }
		_ = json.Unmarshal([]byte(tree[rel]), &info)
		info.LastUpdated = iamTime(updated)
		return http.StatusOK, imdsJSON(info)
	}
	if v, ok := tree[rel]; ok {
		return http.StatusOK, v
	}
	// a directory: list its entries
	prefix := rel + "/"
	if rel == "" {
		prefix = ""
	}
	var entries []string
	for k := range tree {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		if name, _, sub := strings.Cut(rest, "/"); sub {
			entries = append(entries, name+"/")
		} else {
			entries = append(entries, name)
		}
	}
	if len(entries) == 0 {
		return imdsStatus(http.StatusNotFound)
	}
	slices.Sort(entries)
	return http.StatusOK, strings.Join(slices.Compact(entries), "\n")
}

// imdsJSON encodes v as IMDS does: indented JSON.
func imdsJSON(v any) string {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "{}"
	}
	return string(b)
}

// imdsToken answers PUT /latest/api/token.
func (s *Server) imdsToken(instanceID string, r *http.Request, o IMDSOptions, now time.Time, h http.Header) (int, string) {
	if o.V1Only || r.Header.Get("X-Forwarded-For") != "" {
		return imdsStatus(http.StatusForbidden)
	}
	ttl, err := strconv.Atoi(strings.TrimSpace(r.Header.Get(IMDSTokenTTLHeader)))
	if err != nil || ttl < 1 || ttl > MaxIMDSTokenTTL {
		return imdsStatus(http.StatusBadRequest)
	}
	tok := "AQAEA" + randomString(51) + "=="
	s.imds.mu.Lock()
	st := s.imdsInstLocked(instanceID)
	for t, exp := range st.tokens {
		if !now.Before(exp) {
			delete(st.tokens, t)
		}
	}
	for len(st.tokens) >= maxIMDSTokens {
		var oldest string
		for t, exp := range st.tokens {
			if oldest == "" || exp.Before(st.tokens[oldest]) {
				oldest = t
			}
		}
		delete(st.tokens, oldest)
	}
	st.tokens[tok] = now.Add(time.Duration(ttl) * time.Second)
	s.imds.mu.Unlock()
	h.Set(IMDSTokenTTLHeader, strconv.Itoa(ttl))
	return http.StatusOK, tok
}

func (s *Server) imdsTokenValid(instanceID, tok string, now time.Time) bool {
	s.imds.mu.Lock()
	defer s.imds.mu.Unlock()
	exp, ok := s.imdsInstLocked(instanceID).tokens[tok]
	return ok && now.Before(exp)
}

// imdsCredentials returns the role credentials to hand out, issuing a new
// set when there is none yet or the current one is close to expiry.
func (s *Server) imdsCredentials(instanceID, role string, o IMDSOptions, now time.Time) (Credential, time.Time, error) {
	s.imds.mu.Lock()
	defer s.imds.mu.Unlock()
	st := s.imdsInstLocked(instanceID)
	if st.cred == nil || st.cred.Role != role || !now.Before(st.cred.Expiration.Add(-o.refreshBefore())) {
		c, err := s.world.IssueInstanceCredentials(instanceID, o.credentialTTL())
		if err != nil {
			return Credential{}, time.Time{}, err
		}
		st.cred, st.updated = &c, now.UTC().Truncate(time.Second)
	}
	return *st.cred, st.updated, nil
}

// imdsTree builds an instance's metadata, keyed by the path below
// "/latest/", and returns its role ("" without an instance profile; the
// credentials leaf and iam/info are completed by the caller). It returns a
// nil map for an unknown instance.
func (w *World) imdsTree(instanceID string) (map[string]string, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	in := w.instance(instanceID)
	if in == nil {
		return nil, ""
	}
	acct, region := w.st.AccountID, w.st.Region
	host := w.privateDNS(in.PrivateIP)
	t := map[string]string{
		"meta-data/ami-id":                      "ami-0000000000000000a",
		"meta-data/ami-launch-index":            "0",
		"meta-data/hostname":                    host,
		"meta-data/instance-id":                 in.ID,
		"meta-data/instance-type":               "t3.micro",
		"meta-data/local-hostname":              host,
		"meta-data/local-ipv4":                  in.PrivateIP,
		"meta-data/placement/availability-zone": in.AvailabilityZone,
		"meta-data/placement/region":            region,
		"meta-data/services/domain":             "amazonaws.com",
		"meta-data/services/partition":          "aws",
	}
	for i, e := range w.instanceENIs(in.ID) {
		mac := e.MAC
		d := "meta-data/network/interfaces/macs/" + mac + "/"
		ips := append([]string{e.PrivateIP}, e.SecondaryPrivateIPs...)
		t[d+"device-number"] = strconv.Itoa(e.Attachment.DeviceIndex)
		t[d+"interface-id"] = e.ID
		t[d+"local-hostname"] = w.privateDNS(e.PrivateIP)
		t[d+"local-ipv4s"] = strings.Join(ips, "\n")
		t[d+"mac"] = mac
		t[d+"owner-id"] = acct
		t[d+"subnet-id"] = e.SubnetID
		if sn := w.subnet(e.SubnetID); sn != nil {
			t[d+"subnet-ipv4-cidr-block"] = sn.CidrBlock
			t[d+"vpc-id"] = sn.VpcID
			for _, v := range w.st.VPCs {
				if v.ID == sn.VpcID {
					t[d+"vpc-ipv4-cidr-block"] = v.CidrBlock
					t[d+"vpc-ipv4-cidr-blocks"] = v.CidrBlock
				}
			}
		}
		var pubs []string
		for _, a := range w.st.Addresses {
			if a.NetworkInterfaceID == e.ID {
				pubs = append(pubs, a.PublicIP)
				t[d+"ipv4-associations/"+a.PublicIP] = a.PrivateIPAddress
				if i == 0 && a.PrivateIPAddress == e.PrivateIP {
					t["meta-data/public-ipv4"] = a.PublicIP
					t["meta-data/public-hostname"] = w.publicDNS(a.PublicIP)
				}
			}
		}
		if len(pubs) > 0 {
			t[d+"public-ipv4s"] = strings.Join(pubs, "\n")
		}
		if i == 0 {
			t["meta-data/mac"] = mac
		}
	}
	if in.Role != "" {
		info, _ := json.Marshal(struct{ Code, LastUpdated, InstanceProfileArn, InstanceProfileId string }{
			"Success", "", fmt.Sprintf("arn:aws:iam::%s:instance-profile/%s", acct, in.Role),
			"AIPA" + strings.TrimPrefix(w.roleID(in.Role), "AROA")})
		t["meta-data/iam/info"] = string(info)
		t["meta-data/iam/security-credentials/"+in.Role] = "" // filled by the caller
	}
	doc := struct {
		AccountID               string   `json:"accountId"`
		Architecture            string   `json:"architecture"`
		AvailabilityZone        string   `json:"availabilityZone"`
		BillingProducts         []string `json:"billingProducts"`
		DevpayProductCodes      []string `json:"devpayProductCodes"`
		MarketplaceProductCodes []string `json:"marketplaceProductCodes"`
		ImageID                 string   `json:"imageId"`
		InstanceID              string   `json:"instanceId"`
		InstanceType            string   `json:"instanceType"`
		KernelID                *string  `json:"kernelId"`
		PendingTime             string   `json:"pendingTime"`
		PrivateIP               string   `json:"privateIp"`
		RamdiskID               *string  `json:"ramdiskId"`
		Region                  string   `json:"region"`
		Version                 string   `json:"version"`
	}{AccountID: acct, Architecture: "x86_64", AvailabilityZone: in.AvailabilityZone, ImageID: "ami-0000000000000000a",
		InstanceID: in.ID, InstanceType: "t3.micro", PendingTime: iamTime(w.launchTime(in.ID)), PrivateIP: in.PrivateIP,
		Region: region, Version: "2017-09-30"}
	t["dynamic/instance-identity/document"] = imdsJSON(doc)
	return t, in.Role
}

// serveIMDSControl: /_sim/imds/INSTANCE (an instance id or Name tag): GET
// returns the instance's IMDSOptions as JSON, PUT replaces them, DELETE
// goes back to the server's defaults (Options.IMDS).
func (s *Server) serveIMDSControl(rw http.ResponseWriter, r *http.Request) {
	key := strings.TrimPrefix(r.URL.Path, "/_sim/imds/")
	in, ok := s.world.Instance(key)
	if !ok {
		in, ok = s.world.InstanceByName(key)
	}
	if !ok || key == "" {
		http.Error(rw, fmt.Sprintf("sim: no instance %q", key), http.StatusNotFound)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodPut, http.MethodPost:
		body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, 64<<10))
		if err != nil {
			http.Error(rw, "sim: reading IMDS options: "+err.Error(), http.StatusBadRequest)
			return
		}
		var o IMDSOptions
		if err := json.Unmarshal(body, &o); err != nil {
			http.Error(rw, "sim: IMDS options: "+err.Error(), http.StatusBadRequest)
			return
		}
		s.SetIMDSOptions(in.ID, o)
	case http.MethodDelete:
		s.ResetIMDSOptions(in.ID)
	default:
		rw.Header().Set("Allow", "GET, PUT, DELETE")
		http.Error(rw, "sim: use GET, PUT or DELETE", http.StatusMethodNotAllowed)
		return
	}
	writeJSON(rw, s.IMDSOptions(in.ID))
}

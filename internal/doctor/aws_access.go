package doctor

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/lifeboat-ha/lifeboat/internal/awsapi"
	// registers the ec2 kit; its parameter names
)

func awsCheckCredentials(ctx context.Context, env *Env) []Finding {
	if !awsUsed(env) || env.AWS == nil {
		return nil
	}
	a := awsOpen(ctx, env)
	base := Finding{ID: awsIDCredentials}
	if a.c == nil {
		f := base
		f.Severity = Critical
		f.Seen = "cannot set up this node's AWS access: " + a.err.Error()
		f.Fix = "set aws.region in the agent config, or make the instance metadata service reachable (see the imds finding)"
		f.Command = awsCurlIMDS(a.s, "meta-data/placement/region")
		return []Finding{f}
	}
	instanceRole := a.s.Credentials == nil
	source := "the instance role, through the instance metadata service at " + awsIMDSBase(a.s)
	if !instanceRole {
		source = "credentials configured in the agent (not the instance role)"
	}
	credsCmd := awsCurlIMDS(a.s, "meta-data/iam/security-credentials/")
	rctx, cancel := context.WithTimeout(ctx, a.s.CallTimeout)
	creds, err := a.c.Config.Credentials.Retrieve(rctx)
	cancel()
	if err != nil {
		f := base
		f.Severity = Critical
		f.Seen = fmt.Sprintf("cannot get AWS credentials from %s: %v", source, err)
		f.Fix = "Attach an instance profile (IAM role) to the instance: aws ec2 associate-iam-instance-profile --instance-id INSTANCE_ID --iam-instance-profile Name=PROFILE; make sure the metadata service answers (see the imds finding)."
		f.Command = credsCmd
		return []Finding{f}
	}
	var who *sts.GetCallerIdentityOutput
	err = a.c.Call(ctx, func(ctx context.Context) error {
		var err error
		who, err = a.c.STS.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
		return err
	})
	stsCmd := a.cli("sts", "get-caller-identity")
	if fl := awsapi.Classify(err); fl != nil && fl.Kind == awsapi.KindCredentials {
		f := base
		f.Severity = Critical
		f.Command = stsCmd
		switch fl.Code {
		case "ExpiredToken":
			f.Seen = fmt.Sprintf("credentials rejected as expired by AWS (ExpiredToken: %s); they come from %s", fl.Message, source)
			f.Fix = "The instance metadata service should hand out a fresh set well before expiry; check the instance's IAM role association (aws ec2 describe-iam-instance-profile-associations) and this node's clock (see clock-skew), then restart the agent to drop its cached set."
		case "RequestExpired", "SignatureDoesNotMatch":
			f.Seen = fmt.Sprintf("AWS rejected this node's signed request (%s: %s)", fl.Code, fl.Message)
			f.Fix = "Usually this node's clock is more than 5 minutes off: see the clock-skew finding and synchronize the clock (chrony with 169.254.169.123)."
		default:
			f.Seen = fmt.Sprintf("credentials rejected by AWS (%s: %s); they come from %s", fl.Code, fl.Message, source)
			f.Fix = "Check the instance's IAM role association and that the role still exists: aws ec2 describe-iam-instance-profile-associations --filters Name=instance-id,Values=INSTANCE_ID"
		}
		return []Finding{f}
	}
	identity := ""
	if who != nil && who.Arn != nil {
		identity = " as " + *who.Arn
	}
	now := awsNow(env)
	if !creds.CanExpire {
		f := base
		f.Severity = Info
		f.Seen = fmt.Sprintf("credentials%s from %s; they do not expire", identity, source)
		f.Command = stsCmd
		return []Finding{f}
	}
	left := creds.Expires.Sub(now)
	f := base
	f.Command = stsCmd + "\n" + credsCmd
	switch {
	case left <= 0:
		f.Severity = Critical
		f.Seen = fmt.Sprintf("credentials%s from %s expired at %s (%s ago)", identity, source, creds.Expires.UTC().Format(time.RFC3339), (-left).Round(time.Second))
		f.Fix = "The metadata service is not handing out fresh credentials: check the instance's IAM role association and this node's clock (see clock-skew)."
	case left < awsCredsWarning:
		// The agent's cached set may simply be due for its refresh: ask
		// the metadata service what it hands out now.
		if instanceRole {
			fctx, cancel := context.WithTimeout(ctx, a.s.CallTimeout)
			fresh, err := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = a.c.IMDS }).Retrieve(fctx)
			cancel()
			if err == nil && fresh.Expires.Sub(now) >= awsCredsWarning {
				f.Severity = Info
				f.Seen = fmt.Sprintf("credentials%s from %s: the set in use expires at %s (in %s); the metadata service already hands out a newer set (until %s), which the agent picks up then",
					identity, source, creds.Expires.UTC().Format(time.RFC3339), left.Round(time.Second), fresh.Expires.UTC().Format(time.RFC3339))
				return []Finding{f}
			}
		}
		f.Severity = Warning
		f.Seen = fmt.Sprintf("credentials%s from %s expire within %s: at %s (in %s), and no longer-lived set is available",
			identity, source, awsCredsWarning, creds.Expires.UTC().Format(time.RFC3339), left.Round(time.Second))
		f.Fix = "A failover after expiry would fail unless fresh credentials arrive: check the role's maximum session duration and the instance's IAM role association (aws ec2 describe-iam-instance-profile-associations), and that the metadata service rotates them."
	default:
		f.Severity = Info
		f.Seen = fmt.Sprintf("credentials%s from %s expire at %s (in %s); the agent refreshes them before then",
			identity, source, creds.Expires.UTC().Format(time.RFC3339), left.Round(time.Second))
	}
	return []Finding{f}
}

// ---------------------------------------------------------------------------
// imds

const awsHopLimitNote = "If lifeboat runs in a container, the IMDSv2 token answer needs a hop limit of at least 2: aws ec2 modify-instance-metadata-options --instance-id INSTANCE_ID --http-put-response-hop-limit 2."

func awsCheckIMDS(ctx context.Context, env *Env) []Finding {
	if !awsUsed(env) || env.AWS == nil {
		return nil
	}
	// Settings only: the agent's clients are not needed (building them may
	// itself ask IMDS for the region).
	s := awsDefaults(env.AWSSettings)
	base := awsIMDSBase(s)
	hc := s.HTTPClient() // the agent's transport rules; IMDS is never proxied
	hc.Timeout = s.CallTimeout
	defer hc.CloseIdleConnections()
	a := &awsSession{env: env, s: s}
	var fs []Finding
	if p := awsProxyFor(s, base+"/latest/api/token"); p != "" {
		fs = append(fs, Finding{ID: awsIDIMDS, Severity: Warning,
			Seen: fmt.Sprintf("the agent sends metadata requests to %s through proxy %s", base, p),
			Fix:  "add the metadata endpoint's host to aws.no_proxy in the agent config"})
	}
	reproduce := awsCurlIMDS(s, "meta-data/instance-id")

	do := func(method, path, token string) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, method, base+path, nil)
		if err != nil {
			return 0, "", err
		}
		if method == http.MethodPut {
			req.Header.Set("X-Aws-Ec2-Metadata-Token-Ttl-Seconds", awsIMDSTokenTTL)
		}
		if token != "" {
			req.Header.Set("X-Aws-Ec2-Metadata-Token", token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return resp.StatusCode, strings.TrimSpace(string(b)), err
	}

	start := time.Now()
	status, token, err := do(http.MethodPut, "/latest/api/token", "")
	took := time.Since(start)
	if err != nil && awsHopLimitSignature(ctx, base, err, s.CallTimeout) {
		return append(fs, Finding{ID: awsIDIMDS, Severity: Critical,
			Seen:    fmt.Sprintf("the instance metadata service at %s accepts connections but its answer to the IMDSv2 token request never arrives (%s): the instance's metadata hop limit is too low for this network path (a container behind the host needs 2)", base, awsNetWords(err, s.CallTimeout)),
			Fix:     "Raise the hop limit: aws ec2 modify-instance-metadata-options --instance-id INSTANCE_ID --http-put-response-hop-limit 2 --http-tokens required --http-endpoint enabled, or run the agent in the host's network namespace.",
			Command: reproduce})
	}
	if err != nil {
		return append(fs, Finding{ID: awsIDIMDS, Severity: Critical,
			Seen: fmt.Sprintf("the instance metadata service at %s did not answer the IMDSv2 token request: %s", base, awsNetWords(err, s.CallTimeout)),
			Fix: "Without instance metadata the node has no credentials and cannot find its network interface. Check that the metadata service is enabled (aws ec2 modify-instance-metadata-options --instance-id INSTANCE_ID --http-endpoint enabled --http-tokens required) and that no host firewall rule blocks " +
				awsapi.IMDSAddress + ". " + awsHopLimitNote,
			Command: reproduce})
	}
	if status != http.StatusOK {
		v1Status, instanceID, v1Err := do(http.MethodGet, "/latest/meta-data/instance-id", "")
		if v1Err == nil && v1Status == http.StatusOK {
			if a.s.Region == "" {
				if st, r, err := do(http.MethodGet, "/latest/meta-data/placement/region", ""); err == nil && st == http.StatusOK {
					a.s.Region = r
				}
			}
			modify := a.cli("ec2", "modify-instance-metadata-options", "--instance-id", instanceID, "--http-tokens", "required", "--http-endpoint", "enabled")
			return append(fs, Finding{ID: awsIDIMDS, Severity: Critical,
				Seen: fmt.Sprintf("IMDSv1-only: the metadata service at %s refused the IMDSv2 token request (HTTP %d) but answers requests without a token; lifeboat needs IMDSv2", base, status),
				Fix: fmt.Sprintf("Turn IMDSv2 on for the instance: %s. A token request is also refused when it carries X-Forwarded-For (a local proxy in the path). %s",
					modify, awsHopLimitNote),
				Command: fmt.Sprintf("curl -sS --noproxy '*' -i -X PUT %s/latest/api/token -H 'X-aws-ec2-metadata-token-ttl-seconds: 60'", base)})
		}
		return append(fs, Finding{ID: awsIDIMDS, Severity: Critical,
			Seen:    fmt.Sprintf("the metadata service at %s refused the IMDSv2 token request (HTTP %d: %s)", base, status, awsShort(token)),
			Fix:     "Check the instance's metadata options: aws ec2 describe-instances --instance-ids INSTANCE_ID --query 'Reservations[].Instances[].MetadataOptions'. " + awsHopLimitNote,
			Command: reproduce})
	}

	get := func(path string) (string, *Finding) {
		st, body, err := do(http.MethodGet, "/latest/meta-data/"+path, token)
		switch {
		case err != nil:
			return "", &Finding{ID: awsIDIMDS, Severity: Critical,
				Seen:    fmt.Sprintf("the metadata service at %s gave a token but did not answer meta-data/%s: %s", base, path, awsNetWords(err, s.CallTimeout)),
				Command: awsCurlIMDS(s, "meta-data/"+path)}
		case st != http.StatusOK || body == "":
			return "", &Finding{ID: awsIDIMDS, Severity: Critical,
				Seen:    fmt.Sprintf("the metadata service at %s answered HTTP %d for meta-data/%s, which lifeboat uses", base, st, path),
				Fix:     "lifeboat reads the instance id, its MAC, the interface id of that MAC and the region from instance metadata; without them it cannot find the interface to route to",
				Command: awsCurlIMDS(s, "meta-data/"+path)}
		}
		return body, nil
	}
	instanceID, f := get("instance-id")
	if f != nil {
		return append(fs, *f)
	}
	mac, f := get("mac")
	if f != nil {
		return append(fs, *f)
	}
	eni, f := get("network/interfaces/macs/" + mac + "/interface-id")
	if f != nil {
		return append(fs, *f)
	}
	region, f := get("placement/region")
	if f != nil {
		return append(fs, *f)
	}
	if s.Region != "" && s.Region != region {
		fs = append(fs, Finding{ID: awsIDIMDS, Severity: Warning,
			Seen:    fmt.Sprintf("the agent is configured for region %s but this instance runs in %s", s.Region, region),
			Fix:     fmt.Sprintf("set aws.region to %s in the agent config (or leave it empty to take it from instance metadata)", region),
			Command: awsCurlIMDS(s, "meta-data/placement/region")})
	}
	return append(fs, Finding{ID: awsIDIMDS, Severity: Info,
		Seen: fmt.Sprintf("IMDSv2 works at %s (token in %s): instance %s, interface %s (MAC %s), region %s",
			base, awsDuration(took), instanceID, eni, mac, region),
		Command: reproduce})
}

func awsShort(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return s
}

// ---------------------------------------------------------------------------
// reachability

// awsNetWords describes a failure to get any answer, in plain words.
func awsNetWords(err error, timeout time.Duration) string {
	w, ok := awsNetCause(err, timeout)
	if !ok {
		return err.Error()
	}
	return w
}

// awsNetCause says why no answer came, when err is a network-level failure
// (no HTTP answer at all).
func awsNetCause(err error, timeout time.Duration) (string, bool) {
	var dnsErr *net.DNSError
	var opErr *net.OpError
	proxy := ""
	if errors.As(err, &opErr) && opErr.Op == "proxyconnect" {
		proxy = " (the proxy)"
	}
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invalid x509.CertificateInvalidError
	var verify *tls.CertificateVerificationError
	var record tls.RecordHeaderError
	var ne net.Error
	var fl *awsapi.Failure
	switch {
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("cannot resolve %s%s (%s)", dnsErr.Name, proxy, dnsErr.Err), true
	case errors.As(err, &unknownCA):
		return "TLS failed: the certificate is signed by an unknown authority (a TLS-inspecting proxy or firewall? add its CA to the system trust store): " + unknownCA.Error(), true
	case errors.As(err, &hostErr):
		return "TLS failed: the certificate does not match the host name: " + hostErr.Error(), true
	case errors.As(err, &invalid):
		return "TLS failed: the certificate is invalid: " + invalid.Error(), true
	case errors.As(err, &verify):
		return "TLS failed: the certificate could not be verified: " + verify.Error(), true
	case errors.As(err, &record):
		return "TLS failed: the other end does not speak TLS (an http:// URL given as https://?)", true
	case errors.Is(err, syscall.ECONNREFUSED):
		addr := ""
		if opErr != nil && opErr.Addr != nil {
			addr = " by " + opErr.Addr.String()
		}
		return "connection refused" + addr + proxy, true
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the connection was closed without an answer" + proxy, true
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout(),
		errors.As(err, &fl) && fl.Code == "Timeout":
		return fmt.Sprintf("no answer within %s%s", timeout, proxy), true
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to the host" + proxy, true
	case opErr != nil:
		return opErr.Error(), true
	case strings.Contains(err.Error(), "tls:") || strings.Contains(err.Error(), "x509:"):
		return "TLS failed: " + err.Error(), true
	}
	var rse *smithyhttp.RequestSendError
	if errors.As(err, &rse) {
		return "the request could not be sent: " + rse.Err.Error(), true
	}
	return "", false
}

type awsReach struct {
	name, svc, op string
	// dryRun: the call is made with DryRun=true, so only DryRunOperation
	// is the right answer (a plain success means DryRun was ignored).
	dryRun bool
	call   func(ctx context.Context) error
	cmd    string
}

func awsCheckReachability(ctx context.Context, env *Env) []Finding {
	if !awsUsed(env) || env.AWS == nil {
		return nil
	}
	a := awsOpen(ctx, env)
	if a.c == nil {
		return nil // the credentials check reports it
	}
	// Credentials first: a failure to get them is not the API's.
	rctx, cancel := context.WithTimeout(ctx, a.s.CallTimeout)
	_, credsErr := a.c.Config.Credentials.Retrieve(rctx)
	cancel()
	one := func(o *sts.Options) { o.RetryMaxAttempts = 1 }
	oneEC2 := func(o *ec2.Options) { o.RetryMaxAttempts = 1 }
	probes := []awsReach{
		{"STS", "sts", "GetCallerIdentity", false, func(ctx context.Context) error {
			_, err := a.c.STS.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}, one)
			return err
		}, a.cli("sts", "get-caller-identity")},
		{"EC2", "ec2", "DescribeRouteTables (dry run)", true, func(ctx context.Context) error {
			_, err := a.c.EC2.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{DryRun: aws.Bool(true)}, oneEC2)
			return err
		}, a.cli("ec2", "describe-route-tables", "--dry-run")},
	}
	var fs []Finding
	for _, p := range probes {
		ep := a.endpoint(p.svc)
		via := a.via(ep)
		f := Finding{ID: awsIDReachability, Command: p.cmd}
		var err error
		start := time.Now()
		if credsErr != nil {
			err = a.unsignedGet(ctx, ep)
		} else {
			err = a.c.Call(ctx, p.call)
		}
		took := awsDuration(time.Since(start))
		what := fmt.Sprintf("%s %s at %s %s", p.name, p.op, ep, via)
		if credsErr != nil {
			what = fmt.Sprintf("%s at %s %s (unsigned request: this node has no credentials, see the credentials finding)", p.name, ep, via)
		}
		fl := awsapi.Classify(err)
		var re *smithyhttp.ResponseError
		switch {
		case err == nil && p.dryRun && credsErr == nil:
			f.Severity = Critical
			f.Seen = fmt.Sprintf("%s answered in %s: %s", what, took, awsapi.DryRunIgnored)
			f.Fix = awsDryRunIgnoredFix(a)
		case err == nil || fl.Kind == awsapi.KindDryRunOK:
			f.Severity = Info
			f.Seen = fmt.Sprintf("%s answered in %s", what, took)
		case fl.Kind == awsapi.KindThrottled:
			f.Severity = Warning
			f.Seen = fmt.Sprintf("%s: AWS throttled the call (%s) after %s", what, fl.Code, took)
			f.Fix = "lifeboat retries with backoff, but a takeover competes with whatever else calls the API in this account and region: find the heavy callers in CloudTrail, or ask AWS for a higher limit"
		case errors.As(err, &re) && re.HTTPStatusCode() >= 500:
			f.Severity = Warning
			f.Seen = fmt.Sprintf("%s: AWS answered 5xx (HTTP %d %s) after %s", what, re.HTTPStatusCode(), fl.Code, took)
			f.Fix = "a service-side problem: lifeboat treats it as unknown and retries; check the AWS Health Dashboard for " + a.region()
		default:
			if why, ok := awsNetCause(err, a.s.CallTimeout); ok {
				f.Severity = Critical
				f.Seen = fmt.Sprintf("cannot reach %s: %s (after %s)", what, why, took)
				f.Fix = awsReachFix(a, ep, why)
				break
			}
			// AWS answered, with an error another check explains.
			f.Severity = Info
			f.Seen = fmt.Sprintf("%s answered in %s (%s; see the permissions and credentials findings)", what, took, awsShort(fl.Error()))
		}
		fs = append(fs, f)
	}
	return fs
}

// awsDuration rounds a measured latency for people.
func awsDuration(d time.Duration) string {
	if d < time.Millisecond {
		return "<1ms"
	}
	return d.Round(time.Millisecond).String()
}

func awsReachFix(a *awsSession, ep, why string) string {
	proxy := awsProxyFor(a.s, ep)
	var b strings.Builder
	switch {
	case strings.HasPrefix(why, "cannot resolve"):
		b.WriteString("Fix name resolution on this node (/etc/resolv.conf, the VPC's DNS support), or point aws.endpoints at a reachable VPC endpoint. ")
	case strings.HasPrefix(why, "TLS failed"):
		b.WriteString("Make the certificate chain verifiable: add the intercepting proxy's CA to the system trust store, or exclude AWS endpoints from TLS inspection. ")
	}
	if proxy != "" {
		fmt.Fprintf(&b, "The agent goes through proxy %s (its aws.http_proxy/aws.https_proxy settings, not the shell's variables): check that the proxy runs and lets it through to %s, or add the endpoint's host to aws.no_proxy. ", proxy, ep)
	} else {
		fmt.Fprintf(&b, "The agent connects directly to %s (no proxy for it in its config): if this network needs a proxy, set aws.https_proxy in the agent config; in a VPC without internet access, create an interface VPC endpoint and set aws.endpoints. ", ep)
	}
	b.WriteString("Check security groups, network ACLs and host firewalls for outbound HTTPS.")
	return b.String()
}

// unsignedGet sends a plain GET to the endpoint through the agent's HTTP
// client: any HTTP answer means it is reachable.
func (a *awsSession) unsignedGet(ctx context.Context, ep string) error {
	_, err := a.plainGet(ctx, ep)
	return err
}

// plainGet GETs rawURL through the agent's transport and returns the
// answer's headers.
func (a *awsSession) plainGet(ctx context.Context, rawURL string) (http.Header, error) {
	if rawURL == "" {
		return nil, errors.New("no endpoint: the region is unknown")
	}
	ctx, cancel := context.WithTimeout(ctx, a.s.CallTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return nil, err
	}
	var hc aws.HTTPClient
	if a.c != nil && a.c.Config.HTTPClient != nil {
		hc = a.c.Config.HTTPClient
	} else {
		c := a.s.HTTPClient()
		defer c.CloseIdleConnections()
		hc = c
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.Header, nil
}

// ---------------------------------------------------------------------------
// clock-skew

func awsCheckClockSkew(ctx context.Context, env *Env) []Finding {
	if !awsUsed(env) || env.AWS == nil {
		return nil
	}
	a := awsOpen(ctx, env)
	ep := a.endpoint("ec2")
	if ep == "" {
		return nil // no region: the credentials check reports it
	}
	t0 := awsNow(env)
	h, err := a.plainGet(ctx, ep)
	t1 := awsNow(env)
	curl := fmt.Sprintf("curl -sSI %s %s | grep -i '^date:'; date -u", awsCurlProxy(a.s, ep), awsQuote(ep))
	if err != nil {
		return []Finding{{ID: awsIDClockSkew, Severity: Info,
			Seen:    fmt.Sprintf("cannot compare this node's clock with AWS's: no answer from %s (%s)", ep, awsNetWords(err, a.s.CallTimeout)),
			Fix:     "see the reachability finding",
			Command: curl}}
	}
	awsTime, err := http.ParseTime(h.Get("Date"))
	if err != nil {
		return []Finding{{ID: awsIDClockSkew, Severity: Info,
			Seen:    fmt.Sprintf("cannot compare this node's clock with AWS's: %s answered without a usable Date header (%q)", ep, h.Get("Date")),
			Command: curl}}
	}
	local := t0.Add(t1.Sub(t0) / 2)
	skew := local.Sub(awsTime) // positive: this node is ahead
	abs := skew
	if abs < 0 {
		abs = -abs
	}
	if abs <= awsSkewWarning {
		return nil
	}
	dir := "ahead of"
	if skew < 0 {
		dir = "behind"
	}
	f := Finding{ID: awsIDClockSkew, Command: curl,
		Fix: "Synchronize the clock with chrony (or another NTP client) against the Amazon Time Sync Service: add `server 169.254.169.123 prefer iburst minpoll 4 maxpoll 4` to /etc/chrony.conf (/etc/chrony/chrony.conf on Debian and Ubuntu), run `systemctl enable --now chronyd` (chrony on Debian and Ubuntu), and check with `chronyc tracking`."}
	seen := fmt.Sprintf("this node's clock is %s %s AWS's (the EC2 endpoint %s says %s, this node %s)",
		abs.Round(time.Second), dir, ep, awsTime.UTC().Format(time.RFC3339), local.UTC().Format(time.RFC3339))
	if abs > awsSkewCritical {
		f.Severity = Critical
		f.Seen = seen + ": AWS rejects requests signed more than 5 minutes off (SigV4), so every API call of a failover would fail"
	} else {
		f.Severity = Warning
		f.Seen = seen + ": still within the 5 minutes SigV4 allows, but drifting"
	}
	return []Finding{f}
}

// awsCurlProxy is curl's proxy option matching the agent's decision.
func awsCurlProxy(s awsapi.Settings, ep string) string {
	if p := awsProxyFor(s, ep); p != "" {
		return "--proxy " + awsQuote(p)
	}
	return "--noproxy '*'"
}

// awsHopLimitSignature reports whether a failed token request looks like a
// hop limit too low: it timed out although a TCP connection to the
// metadata service opens at once (a down or firewalled service refuses,
// resets or never connects).
func awsHopLimitSignature(ctx context.Context, base string, err error, timeout time.Duration) bool {
	var ne net.Error
	if !(errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()) {
		return false
	}
	u, perr := url.Parse(base)
	if perr != nil {
		return false
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	d := net.Dialer{Timeout: min(timeout, time.Second)}
	c, derr := d.DialContext(ctx, "tcp", host)
	if derr != nil {
		return false
	}
	c.Close()
	return true
}

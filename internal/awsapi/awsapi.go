// Package awsapi is lifeboat's only door to AWS. It builds the SDK
// configuration from the agent's own settings (region and instance identity
// from IMDSv2, the proxy and no-proxy list from the agent's config — never
// from the environment of whoever started it — endpoint overrides for VPC
// endpoints and the simulator, a bounded timeout per call, retries with
// backoff on throttling) and turns AWS errors into plain words: an
// UnauthorizedOperation becomes "node X lacks ec2:Action on arn:…".
package awsapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"golang.org/x/net/http/httpproxy"
)

// IMDSAddress is the instance metadata service; it is never proxied.
const IMDSAddress = "169.254.169.254"

// Defaults.
const (
	DefaultCallTimeout = 5 * time.Second
	DefaultMaxAttempts = 4
)

// Endpoints override the AWS service endpoints ("" keeps AWS's default).
type Endpoints struct {
	EC2  string `json:"ec2,omitempty" yaml:"ec2,omitempty"`
	STS  string `json:"sts,omitempty" yaml:"sts,omitempty"`
	IAM  string `json:"iam,omitempty" yaml:"iam,omitempty"`
	IMDS string `json:"imds,omitempty" yaml:"imds,omitempty"`
}

// Settings is everything the agent decides about how it reaches AWS.
type Settings struct {
	// Region; empty means ask IMDS.
	Region    string
	Endpoints Endpoints
	// Proxy settings from the agent's config. The environment is not read.
	HTTPProxy  string
	HTTPSProxy string
	NoProxy    string
	// CallTimeout bounds each API call including its retries.
	CallTimeout time.Duration
	// MaxAttempts per call (1 = no retry).
	MaxAttempts int
	// Credentials; nil means the instance role through IMDS.
	Credentials aws.CredentialsProvider
	// Pace is this node's bucket per EC2 action (pace.go); nil means AWS's
	// default buckets, a zero Bucket no pacing for that category.
	Pace *Pace
}

// Pace sizes the pacer's buckets by category.
type Pace struct {
	Mutating Bucket
	Describe Bucket
}

// DefaultPace is AWS's default EC2 request-rate buckets.
func DefaultPace() Pace {
	return Pace{Mutating: DefaultMutatingBucket, Describe: DefaultDescribeBucket}
}

func (s Settings) withDefaults() Settings {
	if s.CallTimeout <= 0 {
		s.CallTimeout = DefaultCallTimeout
	}
	if s.MaxAttempts <= 0 {
		s.MaxAttempts = DefaultMaxAttempts
	}
	if s.Pace == nil {
		p := DefaultPace()
		s.Pace = &p
	}
	return s
}

// NoProxyList returns the no-proxy list actually used: the configured one
// plus the metadata service, always.
func (s Settings) NoProxyList() string {
	parts := []string{}
	for _, p := range strings.Split(s.NoProxy, ",") {
		if p = strings.TrimSpace(p); p != "" {
			parts = append(parts, p)
		}
	}
	for _, p := range parts {
		if p == IMDSAddress {
			return strings.Join(parts, ",")
		}
	}
	return strings.Join(append(parts, IMDSAddress), ",")
}

// ProxyFunc returns the proxy decision for a URL under these settings.
func (s Settings) ProxyFunc() func(*http.Request) (*url.URL, error) {
	pf := (&httpproxy.Config{HTTPProxy: s.HTTPProxy, HTTPSProxy: s.HTTPSProxy, NoProxy: s.NoProxyList()}).ProxyFunc()
	return func(r *http.Request) (*url.URL, error) { return pf(r.URL) }
}

// HTTPClient is the client every SDK call goes through.
func (s Settings) HTTPClient() *http.Client {
	s = s.withDefaults()
	tr := &http.Transport{
		Proxy:                 s.ProxyFunc(),
		DialContext:           (&net.Dialer{Timeout: s.CallTimeout, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   s.CallTimeout,
		ResponseHeaderTimeout: s.CallTimeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
	}
	return &http.Client{Transport: tr}
}

// Provider returns a node's clients, built once on first use.
type Provider func(ctx context.Context) (*Clients, error)

// Clients are the SDK clients of one node.
type Clients struct {
	Settings Settings
	Config   aws.Config
	EC2      *ec2.Client
	STS      *sts.Client
	IMDS     *imds.Client
	// share: reads shared between callers (Shared; nil: none shared).
	share *sharer
	// meta: instance metadata that cannot change (StaticMetadata).
	meta *metaMemo
}

// New builds the clients. With no region configured it asks IMDS.
func New(ctx context.Context, s Settings) (*Clients, error) {
	s = s.withDefaults()
	hc := s.HTTPClient()
	imdsOpts := imds.Options{HTTPClient: hc, Endpoint: s.Endpoints.IMDS, ClientEnableState: imds.ClientEnabled}
	c := &Clients{Settings: s, IMDS: imds.New(imdsOpts), share: newSharer(), meta: &metaMemo{}}
	region := s.Region
	if region == "" {
		rctx, cancel := context.WithTimeout(ctx, s.CallTimeout)
		out, err := c.IMDS.GetRegion(rctx, &imds.GetRegionInput{})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("find the region from instance metadata (%s): %w; set aws.region in the agent config", imdsEndpoint(s), err)
		}
		region = out.Region
	}
	creds := s.Credentials
	if creds == nil {
		imdsForCreds := c.IMDS
		creds = aws.NewCredentialsCache(ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = imdsForCreds }))
	}
	c.Config = aws.Config{
		Region:      region,
		Credentials: creds,
		HTTPClient:  hc,
		Retryer: func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = s.MaxAttempts
				o.MaxBackoff = s.CallTimeout / 4
				// No retry quota: once 100 calls had been throttled, the
				// SDK's default quota failed every further throttled call
				// without retrying it. The pacer bounds the rate instead.
				o.RateLimiter = ratelimit.None
			})
		},
	}
	pace := newPacer(s.Pace.Mutating, s.Pace.Describe)
	c.EC2 = ec2.NewFromConfig(c.Config, func(o *ec2.Options) {
		if s.Endpoints.EC2 != "" {
			o.BaseEndpoint = aws.String(s.Endpoints.EC2)
		}
		o.APIOptions = append(o.APIOptions, pace.addPacer)
	})
	c.STS = sts.NewFromConfig(c.Config, func(o *sts.Options) {
		if s.Endpoints.STS != "" {
			o.BaseEndpoint = aws.String(s.Endpoints.STS)
		}
	})
	return c, nil
}

func imdsEndpoint(s Settings) string {
	if s.Endpoints.IMDS != "" {
		return s.Endpoints.IMDS
	}
	return "http://" + IMDSAddress
}

// Call runs one API call with the configured timeout.
func (c *Clients) Call(ctx context.Context, fn func(context.Context) error) error {
	cctx, cancel := context.WithTimeout(ctx, c.Settings.CallTimeout)
	defer cancel()
	err := fn(cctx)
	if err != nil && errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		if f := Classify(err); f.Kind == KindThrottled {
			return err // it waited for EC2's request limit, and says so
		}
		return &Failure{Kind: KindUnavailable, Code: "Timeout", Message: fmt.Sprintf("no answer within %s", c.Settings.CallTimeout), Err: err}
	}
	return err
}

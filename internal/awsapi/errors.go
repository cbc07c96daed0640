package awsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Kind says what an AWS error means for lifeboat.
type Kind int

const (
	// KindOther: a definite error not covered below (bad parameter, ...).
	KindOther Kind = iota
	// KindUnauthorized: the credentials lack a permission.
	KindUnauthorized
	// KindThrottled: the API asked us to slow down.
	KindThrottled
	// KindUnavailable: 5xx, timeout, connection failure: the answer is
	// unknown, not negative.
	KindUnavailable
	// KindCredentials: credentials missing, invalid or expired.
	KindCredentials
	// KindNotFound: the resource does not exist.
	KindNotFound
	// KindDryRunOK: a DryRun call that would have succeeded.
	KindDryRunOK
	// KindDryRunIgnored: a DryRun call answered with plain success: the
	// endpoint ignores DryRun, so nothing was proven and the call may have
	// acted (see DryRunResult).
	KindDryRunIgnored
)

func (k Kind) String() string {
	return [...]string{"error", "unauthorized", "throttled", "unavailable", "credentials", "not found", "dry run ok", "dry run ignored"}[k]
}

// DryRunIgnored is the reason given when an endpoint answers a DryRun
// request with success instead of DryRunOperation.
const DryRunIgnored = "the endpoint answered a DryRun request with success: it ignores DryRun, so readiness cannot be proven and the call may have acted"

// Failure is an AWS error in plain words.
type Failure struct {
	Kind    Kind
	Code    string
	Message string
	// Missing is the decoded action and resource of an authorization
	// failure, when known.
	Action   string
	Resource string
	Node     string
	Err      error
}

func (f *Failure) Error() string {
	if f.Kind == KindUnauthorized && f.Action != "" {
		who := f.Node
		if who == "" {
			who = "this node"
		}
		res := f.Resource
		if res == "" {
			res = "*"
		}
		code := f.Code
		if code == "" {
			code = "a denial"
		}
		return fmt.Sprintf("%s lacks %s on %s (AWS answered %s, add to its role: %s)", who, f.Action, res, code, allowStatement(f.Action, res))
	}
	if f.Code != "" {
		return fmt.Sprintf("%s (%s): %s", f.Kind, f.Code, f.Message)
	}
	return fmt.Sprintf("%s: %s", f.Kind, f.Message)
}

func (f *Failure) Unwrap() error { return f.Err }

func allowStatement(action, resource string) string {
	b, _ := json.Marshal(map[string]any{"Effect": "Allow", "Action": []string{action}, "Resource": []string{resource}})
	return string(b)
}

var unknownCodes = map[string]bool{"InternalError": true, "InternalFailure": true, "ServiceUnavailable": true, "Unavailable": true, "RequestTimeout": true}
var credentialCodes = map[string]bool{"AuthFailure": true, "ExpiredToken": true, "RequestExpired": true, "InvalidClientTokenId": true, "SignatureDoesNotMatch": true, "UnrecognizedClientException": true}

// Classify turns any error from the SDK into a Failure (nil stays nil).
func Classify(err error) *Failure {
	if err == nil {
		return nil
	}
	var f *Failure
	if errors.As(err, &f) {
		return f
	}
	f = &Failure{Err: err, Message: err.Error()}
	var ae smithy.APIError
	var re *smithyhttp.ResponseError
	var ne net.Error
	switch {
	case errors.As(err, &ae):
		f.Code, f.Message = ae.ErrorCode(), ae.ErrorMessage()
		switch {
		case f.Code == "DryRunOperation":
			f.Kind = KindDryRunOK
		case f.Code == "UnauthorizedOperation" || f.Code == "AccessDenied" || f.Code == "AccessDeniedException":
			f.Kind = KindUnauthorized
		case isThrottle(f.Code):
			f.Kind = KindThrottled
		case unknownCodes[f.Code]:
			f.Kind = KindUnavailable
		case credentialCodes[f.Code]:
			f.Kind = KindCredentials
		case strings.HasSuffix(f.Code, ".NotFound") || strings.HasSuffix(f.Code, "NotFound"):
			f.Kind = KindNotFound
		default:
			if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
				f.Kind = KindUnavailable
			}
		}
	case errors.As(err, &re) && re.HTTPStatusCode() >= 500:
		f.Kind = KindUnavailable
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne):
		f.Kind = KindUnavailable
	case strings.Contains(err.Error(), "failed to refresh cached credentials") || strings.Contains(err.Error(), "no EC2 IMDS role found"):
		f.Kind = KindCredentials
	}
	return f
}

func isThrottle(code string) bool {
	switch code {
	case "RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequestsException", "EC2ThrottledException", "RequestThrottled":
		return true
	}
	return false
}

// IsDryRunOK reports whether err is the answer to a DryRun call that would
// have succeeded. A nil error is not: see DryRunResult.
func IsDryRunOK(err error) bool {
	f := Classify(err)
	return f != nil && f.Kind == KindDryRunOK
}

// DryRunResult classifies what a call made with DryRun=true returned: nil
// only for DryRunOperation ("Request would have succeeded"). A plain
// success (err == nil) is a KindDryRunIgnored failure, never "allowed": the
// endpoint ignored DryRun, so the permission was not proven and the call
// may have changed something. Any other error is classified as by Classify.
func DryRunResult(err error) *Failure {
	if err == nil {
		return &Failure{Kind: KindDryRunIgnored, Message: DryRunIgnored}
	}
	f := Classify(err)
	if f.Kind == KindDryRunOK {
		return nil
	}
	return f
}

var encodedRe = regexp.MustCompile(`Encoded authorization failure message: (\S+)`)

// Explain classifies err and, for an authorization failure, decodes the
// encoded message through sts:DecodeAuthorizationMessage (where the node is
// allowed to) into the missing action and resource. fallbackAction is used
// when the message cannot be decoded.
func (c *Clients) Explain(ctx context.Context, node, fallbackAction, fallbackResource string, err error) error {
	f := Classify(err)
	if f == nil || f.Kind != KindUnauthorized {
		return err
	}
	f.Node = node
	f.Action, f.Resource = fallbackAction, fallbackResource
	m := encodedRe.FindStringSubmatch(f.Message)
	if m == nil || c.STS == nil {
		return f
	}
	var out *sts.DecodeAuthorizationMessageOutput
	derr := c.Call(ctx, func(ctx context.Context) error {
		var e error
		out, e = c.STS.DecodeAuthorizationMessage(ctx, &sts.DecodeAuthorizationMessageInput{EncodedMessage: aws.String(m[1])})
		return e
	})
	if derr != nil || out.DecodedMessage == nil {
		return f
	}
	var dec struct {
		Context struct {
			Action   string `json:"action"`
			Resource string `json:"resource"`
		} `json:"context"`
	}
	if json.Unmarshal([]byte(*out.DecodedMessage), &dec) == nil && dec.Context.Action != "" {
		f.Action, f.Resource = dec.Context.Action, dec.Context.Resource
	}
	return f
}

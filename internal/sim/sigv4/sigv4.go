// Package sigv4 verifies AWS Signature Version 4 on incoming requests, as AWS services do: Authorization header or presigned query string, canonical request, string to sign, HMAC chain, credential scope, and the request time window.
package sigv4

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Lookup returns the secret access key and, for temporary credentials, the
// session token belonging to accessKeyID. ok is false for an unknown key.
type Lookup func(accessKeyID string) (secret, sessionToken string, ok bool)

// Result describes a successfully verified request.
type Result struct {
	AccessKeyID, Region, Service string
	Time                         time.Time // the signing time (X-Amz-Date)
	SessionToken                 string
}

// Error codes returned in Error.Code.
const (
	CodeMissingAuthenticationToken = "MissingAuthenticationToken"
	CodeIncompleteSignature        = "IncompleteSignature"
	CodeInvalidClientTokenId       = "InvalidClientTokenId"
	CodeSignatureDoesNotMatch      = "SignatureDoesNotMatch"
	CodeRequestExpired             = "RequestExpired"
)

// Error is a verification failure; Code is the AWS error code to answer
// with and Status the HTTP status.
type Error struct {
	Code, Message string
	Status        int
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

const (
	algorithm       = "AWS4-HMAC-SHA256"
	timeFormat      = "20060102T150405Z"
	dateFormat      = "20060102"
	terminator      = "aws4_request"
	unsignedPayload = "UNSIGNED-PAYLOAD"
	// defaultPresignExpiry applies to presigned URLs without X-Amz-Expires.
	defaultPresignExpiry = 15 * time.Minute
	maxPresignExpires    = 604800 // seconds: one week, as AWS
	msgMismatch          = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
)

func fail(code string, status int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...), Status: status}
}

func incomplete(format string, args ...any) *Error {
	return fail(CodeIncompleteSignature, http.StatusBadRequest, format, args...)
}

// auth is what the client claims: credential scope, signed headers, signature, date.
type auth struct {
	accessKeyID, date, region, service string
	signedHeaders, signature, amzDate  string
	token                              string
	presigned                          bool
	expires                            time.Duration // presigned only
}

type param struct{ key, value string } // decoded query parameter

// Verify checks r (whose body has been read into body; the caller restores r.Body if needed) at time now. maxSkew is the allowed difference between the request time and now (AWS uses 5 minutes; pass 5*time.Minute).
func Verify(r *http.Request, body []byte, lookup Lookup, now time.Time, maxSkew time.Duration) (*Result, error) {
	query, qv := parseQuery(r.URL.RawQuery)
	authz := r.Header.Values("Authorization")
	_, alg := qv["X-Amz-Algorithm"]
	_, cred := qv["X-Amz-Credential"]
	_, sig := qv["X-Amz-Signature"]
	presigned := alg || cred || sig
	var a *auth
	var e *Error
	switch {
	case len(authz) > 0 && presigned:
		e = incomplete("Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified.")
	case len(authz) > 1:
		e = incomplete("Only one Authorization header allowed.")
	case len(authz) == 1:
		a, e = parseHeaderAuth(r, authz[0])
	case presigned:
		a, e = parsePresigned(qv)
	default:
		e = fail(CodeMissingAuthenticationToken, http.StatusForbidden, "Request is missing Authentication Token")
	}
	if e != nil {
		return nil, e
	}

	t, err := time.Parse(timeFormat, a.amzDate)
	if err != nil {
		return nil, incomplete("Invalid X-Amz-Date '%s': expected the ISO-8601 basic format yyyyMMdd'T'HHmmss'Z'.", a.amzDate)
	}
	if a.date != t.Format(dateFormat) {
		return nil, incomplete("Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '%s' != '%s', from '%s'.", a.date, t.Format(dateFormat), a.amzDate)
	}
	signed := strings.Split(a.signedHeaders, ";")
	if slices.Contains(signed, "") {
		return nil, incomplete("SignedHeaders '%s' contains an empty header name.", a.signedHeaders)
	} else if !slices.Contains(signed, "host") {
		return nil, incomplete("'Host' must be a 'SignedHeader' in the AWS Authorization.")
	}

	var secret, token string
	ok := false
	if lookup != nil {
		secret, token, ok = lookup(a.accessKeyID)
	}
	if !ok {
		return nil, fail(CodeInvalidClientTokenId, http.StatusForbidden, "The AWS Access Key Id you provided does not exist in our records.")
	}
	if subtle.ConstantTimeCompare([]byte(token), []byte(a.token)) != 1 {
		return nil, fail(CodeInvalidClientTokenId, http.StatusForbidden, "The security token included in the request is invalid.")
	}

	payload, e := payloadHash(r, body, a)
	if e != nil {
		return nil, e
	}
	cq := canonicalQuery(query, a.presigned)
	ch := canonicalHeaders(r, signed)
	key := signingKey(secret, a.date, a.region, a.service)
	scope := strings.Join([]string{a.date, a.region, a.service, terminator}, "/")
	matched := slices.ContainsFunc(canonicalURIs(r, a.service), func(uri string) bool {
		creq := strings.Join([]string{r.Method, uri, cq, ch, a.signedHeaders, payload}, "\n")
		sum := sha256.Sum256([]byte(creq))
		sts := algorithm + "\n" + a.amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
		return hmac.Equal([]byte(hex.EncodeToString(hmacSHA256(key, sts))), []byte(a.signature))
	})
	if !matched {
		return nil, fail(CodeSignatureDoesNotMatch, http.StatusForbidden, "%s", msgMismatch)
	}
	if e := checkTime(a, t, now, maxSkew); e != nil {
		return nil, e
	}
	return &Result{AccessKeyID: a.accessKeyID, Region: a.region, Service: a.service, Time: t, SessionToken: a.token}, nil
}

// checkTime enforces the request time window: ±maxSkew for header
// authentication; for presigned URLs, not more than maxSkew in the future
// and not past X-Amz-Date + X-Amz-Expires.
func checkTime(a *auth, t, now time.Time, maxSkew time.Duration) *Error {
	f := func(u time.Time) string { return u.UTC().Format(timeFormat) }
	skew := maxSkew.String()
	if maxSkew%time.Minute == 0 {
		skew = fmt.Sprintf("%d min.", maxSkew/time.Minute)
	}
	if lim := now.Add(maxSkew); t.After(lim) {
		return fail(CodeRequestExpired, http.StatusBadRequest, "Signature not yet current: %s is still later than %s (%s + %s).", a.amzDate, f(lim), f(now), skew)
	}
	if end := t.Add(a.expires); a.presigned && now.After(end) {
		return fail(CodeRequestExpired, http.StatusBadRequest, "Request has expired: X-Amz-Date %s + X-Amz-Expires %ds = %s is earlier than the current time %s.",
			a.amzDate, a.expires/time.Second, f(end), f(now))
	}
	if lim := now.Add(-maxSkew); !a.presigned && t.Before(lim) {
		return fail(CodeRequestExpired, http.StatusBadRequest, "Request has expired: signature date %s is now earlier than %s (%s - %s).", a.amzDate, f(lim), f(now), skew)
	}
	return nil
}

func parseHeaderAuth(r *http.Request, h string) (*auth, *Error) {
	alg, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	if alg != algorithm {
		return nil, incomplete("Unsupported AWS 'algorithm': '%s'; expected '%s'.", alg, algorithm)
	}
	fields := map[string]string{}
	for _, kv := range strings.Split(rest, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, incomplete("Authorization header component '%s' is not of the form key=value.", kv)
		}
		if _, dup := fields[k]; dup {
			return nil, incomplete("Authorization header has a duplicate '%s' parameter.", k)
		}
		fields[k] = v
	}
	for _, k := range []string{"Credential", "Signature", "SignedHeaders"} {
		if fields[k] == "" {
			return nil, incomplete("Authorization header requires '%s' parameter.", k)
		}
	}
	if r.Header.Get("X-Amz-Date") == "" {
		return nil, incomplete("Authorization header requires existence of an 'X-Amz-Date' header.")
	}
	a := &auth{signedHeaders: fields["SignedHeaders"], signature: fields["Signature"],
		amzDate: r.Header.Get("X-Amz-Date"), token: r.Header.Get("X-Amz-Security-Token")}
	return a, a.parseCredential(fields["Credential"])
}

func parsePresigned(q map[string]string) (*auth, *Error) {
	names := []string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-SignedHeaders", "X-Amz-Date"}
	for _, n := range names {
		if q[n] == "" {
			return nil, incomplete("AWS query-string parameters must include 'X-Amz-Algorithm', 'X-Amz-Credential', 'X-Amz-Signature', 'X-Amz-SignedHeaders', 'X-Amz-Date'. Re-examine the query-string parameters.")
		}
	}
	if alg := q["X-Amz-Algorithm"]; alg != algorithm {
		return nil, incomplete("X-Amz-Algorithm only supports '%s', not '%s'.", algorithm, alg)
	}
	a := &auth{presigned: true, signedHeaders: q["X-Amz-SignedHeaders"], signature: q["X-Amz-Signature"],
		amzDate: q["X-Amz-Date"], token: q["X-Amz-Security-Token"], expires: defaultPresignExpiry}
	if v, ok := q["X-Amz-Expires"]; ok {
		n, err := strconv.ParseInt(v, 10, 64)
		switch {
		case err != nil || n < 0:
			return nil, incomplete("X-Amz-Expires must be a non-negative integer number of seconds.")
		case n > maxPresignExpires:
			return nil, incomplete("X-Amz-Expires must be less than a week (in seconds) that is %d.", maxPresignExpires)
		}
		a.expires = time.Duration(n) * time.Second
	}
	return a, a.parseCredential(q["X-Amz-Credential"])
}

func (a *auth) parseCredential(c string) *Error {
	parts := strings.Split(c, "/")
	if len(parts) != 5 {
		return incomplete("Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '%s'.", c)
	}
	if parts[4] != terminator {
		return incomplete("Credential should be scoped with a valid terminator: '%s', not '%s'.", terminator, parts[4])
	}
	if slices.Contains(parts, "") {
		return incomplete("Credential '%s' has an empty element.", c)
	}
	a.accessKeyID, a.date, a.region, a.service = parts[0], parts[1], parts[2], parts[3]
	return nil
}

// payloadHash returns the hashed-payload line of the canonical request.
// X-Amz-Content-Sha256, when sent, must match the body; UNSIGNED-PAYLOAD is
// honoured only for S3 (as AWS does), elsewhere the body is always signed.
func payloadHash(r *http.Request, body []byte, a *auth) (string, *Error) {
	sum := sha256.Sum256(body)
	actual := hex.EncodeToString(sum[:])
	claimed := r.Header.Get("X-Amz-Content-Sha256")
	switch {
	case claimed == "" && a.presigned && a.service == "s3":
		return unsignedPayload, nil
	case claimed == "":
		return actual, nil
	case claimed == unsignedPayload && a.service == "s3":
		return claimed, nil
	case claimed == unsignedPayload:
		return "", fail(CodeSignatureDoesNotMatch, http.StatusForbidden, "UNSIGNED-PAYLOAD is not accepted by service '%s'; the request body must be signed.", a.service)
	case !strings.EqualFold(claimed, actual):
		return "", fail(CodeSignatureDoesNotMatch, http.StatusForbidden, "The provided 'x-amz-content-sha256' header does not match what was computed.")
	}
	return claimed, nil
}

// canonicalURIs returns the canonical URI candidates: the raw path with dot
// segments and empty segments removed (RFC 3986, as botocore/AWS CLI sign),
// and the raw path as is (as the Go SDK signs), each URI-encoded once more.
// S3 uses the path exactly as sent.
func canonicalURIs(r *http.Request, service string) []string {
	raw := r.URL.EscapedPath()
	if strings.HasPrefix(r.RequestURI, "/") {
		raw, _, _ = strings.Cut(r.RequestURI, "?")
	}
	if raw == "" {
		raw = "/"
	}
	if service == "s3" {
		return []string{raw}
	}
	norm := path.Clean(raw) // botocore also drops empty segments; keep a trailing '/'
	if strings.HasSuffix(raw, "/") && norm != "/" {
		norm += "/"
	}
	if norm != raw {
		return []string{uriEncode(norm, false), uriEncode(raw, false)}
	}
	return []string{uriEncode(raw, false)}
}

// uriEncode percent-encodes every byte outside the RFC 3986 unreserved set
// (and '/' if encodeSlash) with uppercase hex; url.QueryEscape does exactly
// that except that it turns a space into '+', and '+' itself into %2B.
func uriEncode(s string, encodeSlash bool) string {
	s = strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
	if !encodeSlash {
		s = strings.ReplaceAll(s, "%2F", "/")
	}
	return s
}

// parseQuery splits a raw query string into decoded parameters, keeping
// repeated keys and order ('+' decodes to a space, as for form values), and
// maps each key to its first value.
func parseQuery(raw string) ([]param, map[string]string) {
	unescape := func(s string) string {
		if u, err := url.QueryUnescape(s); err == nil {
			return u
		}
		return s
	}
	var out []param
	first := map[string]string{}
	for _, part := range strings.Split(raw, "&") {
		if part != "" {
			k, v, _ := strings.Cut(part, "=")
			p := param{unescape(k), unescape(v)}
			out = append(out, p)
			if _, ok := first[p.key]; !ok {
				first[p.key] = p.value
			}
		}
	}
	return out, first
}

// canonicalQuery encodes each name and value, then sorts by name and value.
func canonicalQuery(q []param, presigned bool) string {
	enc := make([]param, 0, len(q))
	for _, p := range q {
		if presigned && p.key == "X-Amz-Signature" {
			continue
		}
		enc = append(enc, param{uriEncode(p.key, true), uriEncode(p.value, true)})
	}
	slices.SortFunc(enc, func(x, y param) int { return cmp.Or(strings.Compare(x.key, y.key), strings.Compare(x.value, y.value)) })
	parts := make([]string, len(enc))
	for i, p := range enc {
		parts[i] = p.key + "=" + p.value
	}
	return strings.Join(parts, "&")
}

// canonicalHeaders renders "name:value\n" for each signed header, in the
// order of SignedHeaders; the host comes from r.Host.
func canonicalHeaders(r *http.Request, names []string) string {
	var b strings.Builder
	for _, n := range names {
		vals := slices.Clone(r.Header.Values(n))
		if strings.EqualFold(n, "host") {
			vals = []string{cmp.Or(r.Host, r.URL.Host)}
		} else if len(vals) == 0 && strings.EqualFold(n, "content-length") && r.ContentLength > 0 {
			vals = []string{strconv.FormatInt(r.ContentLength, 10)}
		}
		for i, v := range vals {
			vals[i] = collapseSpaces(strings.TrimSpace(v))
		}
		b.WriteString(n + ":" + strings.Join(vals, ",") + "\n")
	}
	return b.String()
}

func collapseSpaces(s string) string {
	for strings.Contains(s, "  ") {
		s = strings.ReplaceAll(s, "  ", " ")
	}
	return s
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// signingKey derives the SigV4 key: AWS4+secret -> date -> region -> service -> aws4_request.
func signingKey(secret, date, region, service string) []byte {
	k := []byte("AWS4" + secret)
	for _, s := range []string{date, region, service, terminator} {
		k = hmacSHA256(k, s)
	}
	return k
}

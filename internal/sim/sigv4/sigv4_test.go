package sigv4

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

const (
	permKey    = "AKIAPERMANENTEXAMPLE"
	permSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
	tempKey    = "ASIATEMPORARYEXAMPLE"
	tempSecret = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"
	tempToken  = "IQoJb3JpZ2luX2VjEXAMPLE//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+token=="
	skew       = 5 * time.Minute
)

var signTime = time.Date(2024, 3, 9, 23, 58, 30, 0, time.UTC)

func lookup(id string) (string, string, bool) {
	switch id {
	case permKey:
		return permSecret, "", true
	case tempKey:
		return tempSecret, tempToken, true
	}
	return "", "", false
}

func permCreds() aws.Credentials {
	return aws.Credentials{AccessKeyID: permKey, SecretAccessKey: permSecret}
}
func tempCreds() aws.Credentials {
	return aws.Credentials{AccessKeyID: tempKey, SecretAccessKey: tempSecret, SessionToken: tempToken}
}

func hashHex(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

var endpoints = map[string]string{
	"ec2": "https://ec2.us-east-1.amazonaws.com/",
	"sts": "https://sts.us-east-1.amazonaws.com/",
	"iam": "https://iam.amazonaws.com/",
}

var bodies = map[string]string{
	"ec2": "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag%3AName&Filter.1.Value.1=web+01",
	"sts": "Action=GetCallerIdentity&Version=2011-06-15",
	"iam": "Action=ListUsers&Version=2010-05-08&PathPrefix=%2Fdivision_abc%2F",
}

// signedForm builds a Query API POST (form body, signature in the
// Authorization header) signed by the AWS SDK's signer.
func signedForm(t testing.TB, service string, creds aws.Credentials) (*http.Request, []byte) {
	t.Helper()
	body := []byte(bodies[service])
	req, err := http.NewRequest(http.MethodPost, endpoints[service], bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("User-Agent", "aws-sdk-go-v2/1.0 test")
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hashHex(body), service, "us-east-1", signTime); err != nil {
		t.Fatal(err)
	}
	return req, body
}

func wantCode(t *testing.T, err error, code string, status int) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want *Error %s, got %v", code, err)
	}
	if e.Code != code || e.Status != status {
		t.Fatalf("want %s/%d, got %s/%d: %s", code, status, e.Code, e.Status, e.Message)
	}
	if e.Error() == "" || e.Message == "" {
		t.Fatalf("empty error text")
	}
	return e
}

func TestSDKSignedForms(t *testing.T) {
	for _, service := range []string{"ec2", "sts", "iam"} {
		for name, creds := range map[string]aws.Credentials{"permanent": permCreds(), "temporary": tempCreds()} {
			t.Run(service+"/"+name, func(t *testing.T) {
				req, body := signedForm(t, service, creds)
				res, err := Verify(req, body, lookup, signTime, skew)
				if err != nil {
					t.Fatalf("Verify: %v\nAuthorization: %s", err, req.Header.Get("Authorization"))
				}
				want := Result{AccessKeyID: creds.AccessKeyID, Region: "us-east-1", Service: service, Time: signTime, SessionToken: creds.SessionToken}
				if *res != want {
					t.Fatalf("got %+v want %+v", *res, want)
				}
			})
		}
	}
}

func TestTamper(t *testing.T) {
	cases := map[string]func(r *http.Request, body []byte) []byte{
		"body byte": func(r *http.Request, b []byte) []byte {
			b = bytes.Clone(b)
			b[len(b)-1] ^= 1
			return b
		},
		"body appended": func(r *http.Request, b []byte) []byte { return append(bytes.Clone(b), "&Action=TerminateInstances"...) },
		"header value":  func(r *http.Request, b []byte) []byte { r.Header.Set("Content-Type", "text/plain"); return b },
		"date seconds": func(r *http.Request, b []byte) []byte {
			r.Header.Set("X-Amz-Date", signTime.Add(time.Second).Format(timeFormat))
			return b
		},
		"query param added": func(r *http.Request, b []byte) []byte { r.URL.RawQuery = "Action=RunInstances"; return b },
		"host":              func(r *http.Request, b []byte) []byte { r.Host = "ec2.us-west-2.amazonaws.com"; return b },
		"path":              func(r *http.Request, b []byte) []byte { r.URL.Path = "/admin"; return b },
		"signature": func(r *http.Request, b []byte) []byte {
			h := r.Header.Get("Authorization")
			r.Header.Set("Authorization", h[:len(h)-1]+map[bool]string{true: "1", false: "0"}[h[len(h)-1] == '0'])
			return b
		},
		"signed headers reduced": func(r *http.Request, b []byte) []byte {
			h := r.Header.Get("Authorization")
			r.Header.Set("Authorization", strings.Replace(h, "content-type;", "", 1))
			return b
		},
		"method": func(r *http.Request, b []byte) []byte { r.Method = http.MethodPut; return b },
	}
	for _, service := range []string{"ec2", "sts", "iam"} {
		for name, tamper := range cases {
			t.Run(service+"/"+name, func(t *testing.T) {
				req, body := signedForm(t, service, tempCreds())
				body = tamper(req, body)
				_, err := Verify(req, body, lookup, signTime, skew)
				e := wantCode(t, err, CodeSignatureDoesNotMatch, 403)
				if !strings.HasPrefix(e.Message, "The request signature we calculated does not match the signature you provided.") {
					t.Fatalf("message %q", e.Message)
				}
			})
		}
	}
}

func TestQueryParamTamper(t *testing.T) {
	// GET Query API with parameters in the URL, signed in the header.
	req, _ := http.NewRequest(http.MethodGet, "https://ec2.us-east-1.amazonaws.com/?Version=2016-11-15&Action=DescribeRegions&RegionName.1=us-east-1", nil)
	if err := v4.NewSigner().SignHTTP(context.Background(), permCreds(), req, hashHex(nil), "ec2", "us-east-1", signTime); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(req, nil, lookup, signTime, skew); err != nil {
		t.Fatal(err)
	}
	req.URL.RawQuery = strings.Replace(req.URL.RawQuery, "us-east-1", "us-west-2", 1)
	_, err := Verify(req, nil, lookup, signTime, skew)
	wantCode(t, err, CodeSignatureDoesNotMatch, 403)
}

func TestCredentials(t *testing.T) {
	t.Run("wrong secret", func(t *testing.T) {
		req, body := signedForm(t, "sts", permCreds())
		wrong := func(string) (string, string, bool) { return "not-the-secret", "", true }
		_, err := Verify(req, body, wrong, signTime, skew)
		wantCode(t, err, CodeSignatureDoesNotMatch, 403)
	})
	t.Run("unknown key", func(t *testing.T) {
		creds := permCreds()
		creds.AccessKeyID = "AKIAUNKNOWNEXAMPLE00"
		req, body := signedForm(t, "iam", creds)
		_, err := Verify(req, body, lookup, signTime, skew)
		wantCode(t, err, CodeInvalidClientTokenId, 403)
		_, err = Verify(req, body, nil, signTime, skew)
		wantCode(t, err, CodeInvalidClientTokenId, 403)
	})
	t.Run("missing token for temporary key", func(t *testing.T) {
		creds := tempCreds()
		creds.SessionToken = ""
		req, body := signedForm(t, "ec2", creds)
		_, err := Verify(req, body, lookup, signTime, skew)
		e := wantCode(t, err, CodeInvalidClientTokenId, 403)
		if !strings.Contains(e.Message, "security token included in the request is invalid") {
			t.Fatalf("message %q", e.Message)
		}
	})
	t.Run("mismatched token", func(t *testing.T) {
		creds := tempCreds()
		creds.SessionToken = tempToken + "x"
		req, body := signedForm(t, "sts", creds)
		_, err := Verify(req, body, lookup, signTime, skew)
		wantCode(t, err, CodeInvalidClientTokenId, 403)
	})
	t.Run("token for permanent key", func(t *testing.T) {
		creds := permCreds()
		creds.SessionToken = tempToken
		req, body := signedForm(t, "sts", creds)
		_, err := Verify(req, body, lookup, signTime, skew)
		wantCode(t, err, CodeInvalidClientTokenId, 403)
	})
}

func TestTimeWindow(t *testing.T) {
	for _, tc := range []struct {
		now  time.Duration
		ok   bool
		text string
	}{
		{0, true, ""},
		{skew, true, ""},
		{-skew, true, ""},
		{skew - time.Second, true, ""},
		{-skew + time.Second, true, ""},
		{skew + time.Second, false, "Request has expired: signature date 20240309T235830Z is now earlier than 20240309T235831Z (20240310T000331Z - 5 min.)."},
		{-skew - time.Second, false, "Signature not yet current: 20240309T235830Z is still later than 20240309T235829Z (20240309T235329Z + 5 min.)."},
		{24 * time.Hour, false, "Request has expired"},
	} {
		req, body := signedForm(t, "ec2", permCreds())
		_, err := Verify(req, body, lookup, signTime.Add(tc.now), skew)
		if tc.ok {
			if err != nil {
				t.Errorf("now=%v: %v", tc.now, err)
			}
			continue
		}
		e := wantCode(t, err, CodeRequestExpired, 400)
		if !strings.HasPrefix(e.Message, tc.text) {
			t.Errorf("now=%v: message %q, want prefix %q", tc.now, e.Message, tc.text)
		}
	}
}

func presign(t *testing.T, rawURL string, creds aws.Credentials, service string, expires int) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, rawURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if expires >= 0 {
		q := req.URL.Query()
		q.Set("X-Amz-Expires", strconv.Itoa(expires))
		req.URL.RawQuery = q.Encode()
	}
	signed, hdr, err := v4.NewSigner().PresignHTTP(context.Background(), creds, req, hashHex(nil), service, "us-east-1", signTime)
	if err != nil {
		t.Fatal(err)
	}
	out, err := http.NewRequest(http.MethodGet, signed, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		if k != "Host" {
			out.Header[k] = v
		}
	}
	return out
}

func TestPresigned(t *testing.T) {
	const u = "https://sts.us-east-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"
	for name, creds := range map[string]aws.Credentials{"permanent": permCreds(), "temporary": tempCreds()} {
		t.Run(name, func(t *testing.T) {
			req := presign(t, u, creds, "sts", 60)
			res, err := Verify(req, nil, lookup, signTime.Add(30*time.Second), skew)
			if err != nil {
				t.Fatalf("Verify: %v (%s)", err, req.URL)
			}
			if res.SessionToken != creds.SessionToken || res.Service != "sts" || res.AccessKeyID != creds.AccessKeyID {
				t.Fatalf("result %+v", res)
			}
			if _, err := Verify(req, nil, lookup, signTime.Add(60*time.Second), skew); err != nil {
				t.Fatalf("at expiry: %v", err)
			}
			_, err = Verify(req, nil, lookup, signTime.Add(61*time.Second), skew)
			e := wantCode(t, err, CodeRequestExpired, 400)
			if !strings.Contains(e.Message, "X-Amz-Expires 60s") {
				t.Fatalf("message %q", e.Message)
			}
			_, err = Verify(req, nil, lookup, signTime.Add(-skew-time.Second), skew)
			wantCode(t, err, CodeRequestExpired, 400)
		})
	}
	t.Run("tampered query", func(t *testing.T) {
		for _, mod := range []func(q url.Values){
			func(q url.Values) { q.Set("Action", "AssumeRole") },
			func(q url.Values) { q.Set("X-Amz-Expires", "600") },
			func(q url.Values) { q.Add("Extra", "1") },
		} {
			req := presign(t, u, permCreds(), "sts", 60)
			q := req.URL.Query()
			mod(q)
			req.URL.RawQuery = q.Encode()
			_, err := Verify(req, nil, lookup, signTime, skew)
			wantCode(t, err, CodeSignatureDoesNotMatch, 403)
		}
	})
	t.Run("tampered host", func(t *testing.T) {
		req := presign(t, u, permCreds(), "sts", 60)
		req.Host = "sts.eu-west-1.amazonaws.com"
		_, err := Verify(req, nil, lookup, signTime, skew)
		wantCode(t, err, CodeSignatureDoesNotMatch, 403)
	})
	t.Run("default expiry", func(t *testing.T) {
		req := presign(t, u, permCreds(), "sts", -1)
		if _, err := Verify(req, nil, lookup, signTime.Add(14*time.Minute), skew); err != nil {
			t.Fatal(err)
		}
		_, err := Verify(req, nil, lookup, signTime.Add(16*time.Minute), skew)
		wantCode(t, err, CodeRequestExpired, 400)
	})
	t.Run("bad expires", func(t *testing.T) {
		for _, v := range []string{"-1", "abc", "604801"} {
			req := presign(t, u, permCreds(), "sts", 60)
			q := req.URL.Query()
			q.Set("X-Amz-Expires", v)
			req.URL.RawQuery = q.Encode()
			_, err := Verify(req, nil, lookup, signTime, skew)
			wantCode(t, err, CodeIncompleteSignature, 400)
		}
	})
	t.Run("missing token", func(t *testing.T) {
		req := presign(t, u, tempCreds(), "sts", 60)
		q := req.URL.Query()
		q.Del("X-Amz-Security-Token")
		req.URL.RawQuery = q.Encode()
		_, err := Verify(req, nil, lookup, signTime, skew)
		wantCode(t, err, CodeInvalidClientTokenId, 403)
	})
	t.Run("missing parameter", func(t *testing.T) {
		for _, p := range []string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature", "X-Amz-SignedHeaders", "X-Amz-Date"} {
			req := presign(t, u, permCreds(), "sts", 60)
			q := req.URL.Query()
			q.Del(p)
			req.URL.RawQuery = q.Encode()
			_, err := Verify(req, nil, lookup, signTime, skew)
			wantCode(t, err, CodeIncompleteSignature, 400)
		}
	})
	t.Run("both mechanisms", func(t *testing.T) {
		req := presign(t, u, permCreds(), "sts", 60)
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=x")
		_, err := Verify(req, nil, lookup, signTime, skew)
		wantCode(t, err, CodeIncompleteSignature, 400)
	})
	t.Run("s3 unsigned payload", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "https://bucket.s3.us-east-1.amazonaws.com/dir/my%20file.txt?X-Amz-Expires=300", nil)
		signed, _, err := v4.NewSigner().PresignHTTP(context.Background(), permCreds(), req, "UNSIGNED-PAYLOAD", "s3", "us-east-1", signTime,
			func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
		if err != nil {
			t.Fatal(err)
		}
		out, _ := http.NewRequest(http.MethodGet, signed, nil)
		if _, err := Verify(out, nil, lookup, signTime, skew); err != nil {
			t.Fatal(err)
		}
	})
}

// TestAWSCLIStyle mimics how AWS CLI v2 (botocore) signs Query API calls: a
// form body with content type "application/x-www-form-urlencoded;
// charset=utf-8", and signed headers content-type;host;x-amz-date plus
// x-amz-security-token for temporary credentials (Content-Length is not signed).
func TestAWSCLIStyle(t *testing.T) {
	for name, creds := range map[string]aws.Credentials{"permanent": permCreds(), "temporary": tempCreds()} {
		t.Run(name, func(t *testing.T) {
			body := []byte("Action=DescribeInstances&Version=2016-11-15&InstanceId.1=i-0123456789abcdef0")
			req, _ := http.NewRequest(http.MethodPost, "https://ec2.eu-west-1.amazonaws.com/", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
			req.Header.Set("User-Agent", "aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64 command/ec2.describe-instances")
			n := req.ContentLength
			req.ContentLength = 0 // botocore signs before Content-Length is set
			if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, hashHex(body), "ec2", "eu-west-1", signTime); err != nil {
				t.Fatal(err)
			}
			req.ContentLength = n
			req.Header.Set("Content-Length", strconv.FormatInt(n, 10))
			want := "SignedHeaders=content-type;host;x-amz-date,"
			if creds.SessionToken != "" {
				want = "SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"
			}
			if h := req.Header.Get("Authorization"); !strings.Contains(h, want) {
				t.Fatalf("Authorization %q lacks %q", h, want)
			}
			res, err := Verify(req, body, lookup, signTime.Add(2*time.Minute), skew)
			if err != nil {
				t.Fatal(err)
			}
			if res.Region != "eu-west-1" || res.Service != "ec2" || res.SessionToken != creds.SessionToken {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

// TestKnownVectors checks examples published by AWS, independent of the SDK.
func TestKnownVectors(t *testing.T) {
	lk := func(id string) (string, string, bool) {
		return "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "", id == "AKIDEXAMPLE"
	}
	at := time.Date(2015, 8, 30, 12, 36, 0, 0, time.UTC)
	for _, tc := range []struct{ method, url, ctype, body, service, signed, sig string }{
		// IAM user guide example (ListUsers).
		{"GET", "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08", "application/x-www-form-urlencoded; charset=utf-8", "", "iam",
			"content-type;host;x-amz-date", "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"},
		// aws-sig-v4-test-suite get-vanilla.
		{"GET", "https://example.amazonaws.com/", "", "", "service",
			"host;x-amz-date", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
	} {
		req, _ := http.NewRequest(tc.method, tc.url, strings.NewReader(tc.body))
		if tc.ctype != "" {
			req.Header.Set("Content-Type", tc.ctype)
		}
		req.Header.Set("X-Amz-Date", "20150830T123600Z")
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/"+tc.service+"/aws4_request, SignedHeaders="+tc.signed+", Signature="+tc.sig)
		if _, err := Verify(req, []byte(tc.body), lk, at, skew); err != nil {
			t.Errorf("%s: %v", tc.url, err)
		}
	}
}

func TestPaths(t *testing.T) {
	for _, p := range []string{"/", "/2015-03-31/functions/my%20fn/invocations", "/a/./b//c/../d/", "/~user/x-y_z.txt", "/%E2%82%AC/%2F"} {
		t.Run(p, func(t *testing.T) {
			body := []byte(`{"k":"v"}`)
			req, _ := http.NewRequest(http.MethodPost, "https://lambda.us-east-1.amazonaws.com"+p, bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			if err := v4.NewSigner().SignHTTP(context.Background(), permCreds(), req, hashHex(body), "lambda", "us-east-1", signTime); err != nil {
				t.Fatal(err)
			}
			if _, err := Verify(req, body, lookup, signTime, skew); err != nil {
				t.Fatal(err)
			}
		})
	}
	// botocore normalises the path before signing; the wire path is as given.
	t.Run("normalised by client", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "https://example.amazonaws.com/a/b/d/", nil)
		if err := v4.NewSigner().SignHTTP(context.Background(), permCreds(), req, hashHex(nil), "service", "us-east-1", signTime); err != nil {
			t.Fatal(err)
		}
		req.URL, _ = url.Parse("https://example.amazonaws.com/a/./b//c/../d/")
		if _, err := Verify(req, nil, lookup, signTime, skew); err != nil {
			t.Fatal(err)
		}
	})
}

func TestPayloadHashHeader(t *testing.T) {
	sign := func(hash string, service string) (*http.Request, []byte) {
		body := []byte("Action=GetCallerIdentity&Version=2011-06-15")
		req, _ := http.NewRequest(http.MethodPost, "https://sts.amazonaws.com/", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Amz-Content-Sha256", hash)
		if err := v4.NewSigner().SignHTTP(context.Background(), permCreds(), req, hash, service, "us-east-1", signTime); err != nil {
			t.Fatal(err)
		}
		return req, body
	}
	body := []byte("Action=GetCallerIdentity&Version=2011-06-15")
	req, b := sign(hashHex(body), "sts")
	if _, err := Verify(req, b, lookup, signTime, skew); err != nil {
		t.Fatal(err)
	}
	_, err := Verify(req, []byte("Action=AssumeRole&Version=2011-06-15"), lookup, signTime, skew)
	wantCode(t, err, CodeSignatureDoesNotMatch, 403)
	// UNSIGNED-PAYLOAD would leave a Query API body unauthenticated.
	req, b = sign("UNSIGNED-PAYLOAD", "sts")
	_, err = Verify(req, b, lookup, signTime, skew)
	wantCode(t, err, CodeSignatureDoesNotMatch, 403)
	req, b = sign("UNSIGNED-PAYLOAD", "s3")
	if _, err := Verify(req, b, lookup, signTime, skew); err != nil {
		t.Fatal(err)
	}
}

func TestMalformed(t *testing.T) {
	base, body := signedForm(t, "ec2", permCreds())
	good := base.Header.Get("Authorization")
	cred := "Credential=" + permKey + "/20240309/us-east-1/ec2/aws4_request"
	for name, tc := range map[string]struct{ authz, date, code string }{
		"no auth":           {"", signTime.Format(timeFormat), CodeMissingAuthenticationToken},
		"sigv2":             {"AWS " + permKey + ":abc", "", CodeIncompleteSignature},
		"algorithm only":    {"AWS4-HMAC-SHA256", "", CodeIncompleteSignature},
		"no signature":      {"AWS4-HMAC-SHA256 " + cred + ", SignedHeaders=host;x-amz-date", "", CodeIncompleteSignature},
		"no signed headers": {"AWS4-HMAC-SHA256 " + cred + ", Signature=00", "", CodeIncompleteSignature},
		"no credential":     {"AWS4-HMAC-SHA256 SignedHeaders=host, Signature=00", "", CodeIncompleteSignature},
		"not key=value":     {"AWS4-HMAC-SHA256 " + cred + ", SignedHeaders, Signature=00", "", CodeIncompleteSignature},
		"duplicate":         {"AWS4-HMAC-SHA256 " + cred + ", " + cred + ", SignedHeaders=host, Signature=00", "", CodeIncompleteSignature},
		"short credential":  {"AWS4-HMAC-SHA256 Credential=" + permKey + "/20240309/us-east-1/ec2, SignedHeaders=host, Signature=00", "", CodeIncompleteSignature},
		"bad terminator":    {"AWS4-HMAC-SHA256 Credential=" + permKey + "/20240309/us-east-1/ec2/aws4_reqest, SignedHeaders=host, Signature=00", "", CodeIncompleteSignature},
		"empty region":      {"AWS4-HMAC-SHA256 Credential=" + permKey + "/20240309//ec2/aws4_request, SignedHeaders=host, Signature=00", "", CodeIncompleteSignature},
		"scope date":        {strings.Replace(good, "/20240309/", "/20240310/", 1), "", CodeIncompleteSignature},
		"host not signed":   {strings.Replace(good, "host;", "", 1), "", CodeIncompleteSignature},
		"empty signed hdr":  {strings.Replace(good, "host;", "host;;", 1), "", CodeIncompleteSignature},
		"missing date":      {good, "-", CodeIncompleteSignature},
		"malformed date":    {good, "2024-03-09T23:58:30Z", CodeIncompleteSignature},
		"date no Z":         {good, "20240309T235830", CodeIncompleteSignature},
	} {
		t.Run(name, func(t *testing.T) {
			req := base.Clone(context.Background())
			req.Header.Del("Authorization")
			if tc.authz != "" {
				req.Header.Set("Authorization", tc.authz)
			}
			switch tc.date {
			case "-":
				req.Header.Del("X-Amz-Date")
			case "":
			default:
				req.Header.Set("X-Amz-Date", tc.date)
			}
			_, err := Verify(req, body, lookup, signTime, skew)
			status := 400
			if tc.code == CodeMissingAuthenticationToken {
				status = 403
			}
			wantCode(t, err, tc.code, status)
		})
	}
	t.Run("two authorization headers", func(t *testing.T) {
		req := base.Clone(context.Background())
		req.Header.Add("Authorization", good)
		_, err := Verify(req, body, lookup, signTime, skew)
		wantCode(t, err, CodeIncompleteSignature, 400)
	})
	t.Run("lenient spacing", func(t *testing.T) {
		req := base.Clone(context.Background())
		req.Header.Set("Authorization", strings.ReplaceAll(good, ", ", ","))
		if _, err := Verify(req, body, lookup, signTime, skew); err != nil {
			t.Fatal(err)
		}
	})
}

func TestHeaderCanonicalisation(t *testing.T) {
	body := []byte("Action=ListUsers&Version=2010-05-08")
	req, _ := http.NewRequest(http.MethodPost, "https://iam.amazonaws.com/", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded;   charset=utf-8")
	req.Header["X-Amz-Meta-Note"] = []string{"  a   b  ", "c"}
	if err := v4.NewSigner().SignHTTP(context.Background(), permCreds(), req, hashHex(body), "iam", "us-east-1", signTime); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(req, body, lookup, signTime, skew); err != nil {
		t.Fatal(err)
	}
	if got := req.Header["X-Amz-Meta-Note"]; got[0] != "  a   b  " || got[1] != "c" {
		t.Fatalf("Verify modified the request headers: %q", got)
	}
	req.Header["X-Amz-Meta-Note"] = []string{"a b", "c"} // same canonical form
	if _, err := Verify(req, body, lookup, signTime, skew); err != nil {
		t.Fatal(err)
	}
	req.Header["X-Amz-Meta-Note"] = []string{"a b,c"}
	if _, err := Verify(req, body, lookup, signTime, skew); err != nil {
		t.Fatal(err) // values are joined with ',' as AWS does
	}
	req.Header["X-Amz-Meta-Note"] = []string{"ab", "c"}
	_, err := Verify(req, body, lookup, signTime, skew)
	wantCode(t, err, CodeSignatureDoesNotMatch, 403)
}

// TestOverHTTP sends SDK-signed requests through a real HTTP server, so the
// server-side view (RequestURI, Host, Content-Length, multi-valued headers)
// is what gets verified.
func TestOverHTTP(t *testing.T) {
	var got error
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, got = Verify(r, body, lookup, time.Now(), skew)
	}))
	defer srv.Close()
	now := time.Now()
	do := func(req *http.Request) {
		t.Helper()
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got != nil {
			t.Fatalf("%s %s: %v", req.Method, req.URL, got)
		}
	}

	body := []byte("Action=DescribeInstances&Version=2016-11-15&Filter.1.Value.1=a+b%2Fc")
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	req.Header.Add("X-Amz-Meta-Multi", "one  two")
	req.Header.Add("X-Amz-Meta-Multi", " three ")
	if err := v4.NewSigner().SignHTTP(context.Background(), tempCreds(), req, hashHex(body), "ec2", "us-east-1", now); err != nil {
		t.Fatal(err)
	}
	do(req)

	preq, _ := http.NewRequest(http.MethodGet, srv.URL+"/some%20path/x?Action=GetCallerIdentity&Version=2011-06-15&X-Amz-Expires=60&Odd=a%2Bb+c~", nil)
	signed, _, err := v4.NewSigner().PresignHTTP(context.Background(), tempCreds(), preq, hashHex(nil), "sts", "us-east-1", now)
	if err != nil {
		t.Fatal(err)
	}
	preq, _ = http.NewRequest(http.MethodGet, signed, nil)
	do(preq)
}

func FuzzVerify(f *testing.F) {
	req, _ := signedForm(f, "ec2", tempCreds())
	f.Add(req.Header.Get("Authorization"), "", "/", req.Header.Get("X-Amz-Date"))
	f.Add("", "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA%2F20240309%2Fus-east-1%2Fsts%2Faws4_request&X-Amz-Date=20240309T235830Z&X-Amz-SignedHeaders=host&X-Amz-Signature=00&X-Amz-Expires=60", "/a/../b", "")
	f.Add("AWS4-HMAC-SHA256 Credential=////, SignedHeaders=;;, Signature=", "a=%zz&&=&b", "//./..", "x")
	f.Fuzz(func(t *testing.T, authz, rawQuery, path, date string) {
		r := &http.Request{Method: "POST", Host: "ec2.amazonaws.com", Header: http.Header{},
			URL: &url.URL{Path: path, RawQuery: rawQuery}, RequestURI: path + "?" + rawQuery}
		if authz != "" {
			r.Header.Set("Authorization", authz)
		}
		r.Header.Set("X-Amz-Date", date)
		r.Header.Set("X-Amz-Security-Token", tempToken)
		_, err := Verify(r, []byte(rawQuery), lookup, signTime, skew)
		var e *Error
		if !errors.As(err, &e) || e.Code == "" || e.Status == 0 || e.Message == "" {
			t.Fatalf("want a populated *Error, got %v", err) // includes err == nil: nothing here is validly signed
		}
	})
}

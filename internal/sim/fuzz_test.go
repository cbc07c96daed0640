package sim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// wellFormed reports whether data is one complete XML document.
func wellFormed(data []byte) error {
	dec := xml.NewDecoder(bytes.NewReader(data))
	depth, roots := 0, 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		switch tok.(type) {
		case xml.StartElement:
			if depth == 0 {
				roots++
			}
			depth++
		case xml.EndElement:
			depth--
		}
	}
	if roots != 1 || depth != 0 {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// FuzzQuery sends arbitrary form bodies through the handler, unsigned (with
// a plausible but bogus Authorization header) and signed as the admin: the
// simulator must never panic or fail with a 5xx, and must always answer
// well-formed XML, an error for unsigned requests.
func FuzzQuery(f *testing.F) {
	seeds := []string{
		"Action=DescribeInstances&Version=2016-11-15",
		"Action=CreateRoute&RouteTableId=rtb-00000000000000001&DestinationCidrBlock=10.1.0.0%2F16&InstanceId=i-00000000000000001",
		"Action=ReplaceRoute&RouteTableId=rtb-00000000000000001&DestinationCidrBlock=10.0.0.0%2F16&NetworkInterfaceId=eni-00000000000000001&DryRun=true",
		"Action=DescribeRouteTables&Filter.1.Name=route.destination-cidr-block&Filter.1.Value.1=10.*",
		"Action=DescribeInstances&Filter.0.Name=x&InstanceId.-1=i-1",
		"Action=AssociateAddress&AllocationId=eipalloc-00000000000000001&NetworkInterfaceId=eni-00000000000000002&AllowReassociation=maybe",
		"Action=ModifyNetworkInterfaceAttribute&NetworkInterfaceId=eni-00000000000000001&SourceDestCheck.Value=false&Description.Value=x",
		"Action=DecodeAuthorizationMessage&EncodedMessage=%00%ff",
		"Action=GetCallerIdentity&Version=2011-06-15",
		"Action=%3C%2Fx%3E&Version=%ff%fe",
		"a=%zz&&;;==",
		"",
	}
	for i, s := range seeds {
		f.Add([]byte(s), i%2 == 0, i%3 == 0)
	}
	const ok = "Action=GetCallerIdentity&Version=2011-06-15"
	f.Add([]byte(ok), true, true)
	f.Add([]byte("Action=DescribeRouteTables&Version=2016-11-15"), true, false)
	w := DefaultWorld([]string{"n1", "n2"})
	srv := New(w, Options{})
	h := srv.Handler()
	signer := v4.NewSigner()
	creds := aws.Credentials{AccessKeyID: AdminAccessKeyID, SecretAccessKey: AdminSecretAccessKey}
	f.Fuzz(func(t *testing.T, body []byte, signed, asSTS bool) {
		svc := "ec2"
		if asSTS {
			svc = "sts"
		}
		r := httptest.NewRequest(http.MethodPost, "http://sim.test/", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
		if signed {
			sum := sha256.Sum256(body)
			if err := signer.SignHTTP(context.Background(), creds, r, hex.EncodeToString(sum[:]), svc, DefaultRegion, time.Now()); err != nil {
				t.Fatal(err)
			}
		} else {
			r.Header.Set("X-Amz-Date", time.Now().UTC().Format("20060102T150405Z"))
			r.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/"+svc+"/aws4_request, SignedHeaders=host;x-amz-date, Signature=00")
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		out := rec.Body.Bytes()
		if err := wellFormed(out); err != nil {
			t.Fatalf("status %d, body not well-formed XML (%v):\n%s", rec.Code, err, out)
		}
		if rec.Code >= 500 {
			t.Fatalf("status %d:\n%s", rec.Code, out)
		}
		if signed && asSTS && string(body) == ok && (rec.Code != 200 || !bytes.Contains(out, []byte("<Arn>arn:aws:iam::"))) {
			t.Fatalf("signed GetCallerIdentity: %d\n%s", rec.Code, out)
		}
		if !signed && (rec.Code < 400 || !bytes.Contains(out, []byte("<Code>"))) {
			t.Fatalf("unsigned request: status %d:\n%s", rec.Code, out)
		}
		if rec.Code >= 400 && !strings.Contains(string(out), "<Code>") {
			t.Fatalf("error without a code: %s", out)
		}
	})
}

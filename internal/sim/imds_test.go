package sim

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials/ec2rolecreds"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// imdsURL serves node's IMDS on its own listener.
func (e *env) imdsURL(node string) string {
	ts := httptest.NewServer(e.srv.IMDSHandler(e.instance(node).ID))
	e.t.Cleanup(ts.Close)
	return ts.URL
}

func imdsClient(url string, opts ...func(*imds.Options)) *imds.Client {
	o := imds.Options{Endpoint: url, ClientEnableState: imds.ClientEnabled, DisableDefaultMaxBackoff: true,
		Retryer: retry.NewStandard(func(so *retry.StandardOptions) { // retry at once
			so.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		})}
	for _, f := range opts {
		f(&o)
	}
	return imds.New(o)
}

func metadata(t *testing.T, c *imds.Client, path string) string {
	t.Helper()
	out, err := c.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	if err != nil {
		t.Fatalf("GetMetadata %s: %v", path, err)
	}
	defer out.Content.Close()
	b, err := io.ReadAll(out.Content)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// raw sends one plain HTTP request to an IMDS.
func raw(t *testing.T, method, url string, hdr ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func token(t *testing.T, base string, ttl string) string {
	t.Helper()
	code, tok, h := raw(t, http.MethodPut, base+"/latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds", ttl)
	if code != 200 || tok == "" || h.Get("X-Aws-Ec2-Metadata-Token-Ttl-Seconds") != ttl {
		t.Fatalf("token PUT: %d %q %v", code, tok, h)
	}
	return tok
}

// TestIMDSWithTheSDK: the SDK's IMDS client (IMDSv2) reads the instance's
// metadata.
func TestIMDSWithTheSDK(t *testing.T) {
	e := newEnv(t)
	in := e.instance("node2")
	eniID := e.eni("node2")
	eni, _ := e.w.NetworkInterface(eniID)
	c := imdsClient(e.imdsURL("node2"))

	if got := metadata(t, c, "instance-id"); got != in.ID {
		t.Fatalf("instance-id %q, want %q", got, in.ID)
	}
	reg := must[*imds.GetRegionOutput](t)(c.GetRegion(ctx, &imds.GetRegionInput{}))
	if reg.Region != DefaultRegion {
		t.Fatalf("GetRegion: %q", reg.Region)
	}
	doc := must[*imds.GetInstanceIdentityDocumentOutput](t)(c.GetInstanceIdentityDocument(ctx, &imds.GetInstanceIdentityDocumentInput{}))
	if d := doc.InstanceIdentityDocument; d.InstanceID != in.ID || d.Region != DefaultRegion || d.AccountID != DefaultAccountID ||
		d.AvailabilityZone != in.AvailabilityZone || d.PrivateIP != in.PrivateIP || d.PendingTime.IsZero() || d.InstanceType != "t3.micro" {
		t.Fatalf("identity document: %+v", d)
	}
	info := must[*imds.GetIAMInfoOutput](t)(c.GetIAMInfo(ctx, &imds.GetIAMInfoInput{}))
	if info.InstanceProfileArn != "arn:aws:iam::123456789012:instance-profile/lifeboat-node2" || !strings.HasPrefix(info.InstanceProfileID, "AIPA") || info.LastUpdated.IsZero() {
		t.Fatalf("GetIAMInfo: %+v", info.IAMInfo)
	}
	for path, want := range map[string]string{
		"placement/region":            DefaultRegion,
		"placement/availability-zone": "us-east-1b",
		"local-ipv4":                  "10.0.2.10",
		"mac":                         eni.MAC,
		"network/interfaces/macs/":    eni.MAC + "/",
		"network/interfaces/macs/" + eni.MAC + "/interface-id":  eniID,
		"network/interfaces/macs/" + eni.MAC + "/local-ipv4s":   "10.0.2.10",
		"network/interfaces/macs/" + eni.MAC + "/subnet-id":     in.SubnetID,
		"network/interfaces/macs/" + eni.MAC + "/vpc-id":        e.w.State().VPCs[0].ID,
		"network/interfaces/macs/" + eni.MAC + "/device-number": "0",
		"iam/security-credentials/":                             "lifeboat-node2",
	} {
		if got := metadata(t, c, path); got != want {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
	list := strings.Split(metadata(t, c, "/"), "\n")
	for _, want := range []string{"instance-id", "iam/", "placement/", "network/", "local-ipv4", "mac"} {
		if !slices.Contains(list, want) {
			t.Errorf("meta-data/ listing %q lacks %q", list, want)
		}
	}

	// A second ENI with a secondary IP and an Elastic IP shows up.
	eni2 := must[string](t)(e.w.AddNetworkInterface(in.ID))
	adm := e.adminEC2()
	must[*ec2.AssociateAddressOutput](t)(adm.AssociateAddress(ctx, &ec2.AssociateAddressInput{AllocationId: aws.String(e.eip()), NetworkInterfaceId: &eniID}))
	macs := strings.Split(metadata(t, c, "network/interfaces/macs/"), "\n")
	e2, _ := e.w.NetworkInterface(eni2)
	if len(macs) != 2 || !slices.Contains(macs, e2.MAC+"/") {
		t.Fatalf("macs after attaching %s: %q", eni2, macs)
	}
	if got := metadata(t, c, "network/interfaces/macs/"+e2.MAC+"/device-number"); got != "1" {
		t.Fatalf("device-number of the second ENI: %q", got)
	}
	addr, _ := e.w.Address(e.eip())
	if got := metadata(t, c, "public-ipv4"); got != addr.PublicIP {
		t.Fatalf("public-ipv4 %q, want %q", got, addr.PublicIP)
	}
	if got := metadata(t, c, "mac"); got != eni.MAC {
		t.Fatalf("mac must stay the primary ENI's: %q", got)
	}

	_, err := c.GetMetadata(ctx, &imds.GetMetadataInput{Path: "no/such/thing"})
	if httpStatus(err) != 404 {
		t.Fatalf("unknown path: %v", err)
	}
}

// TestIMDSInstanceRole: credentials from ec2rolecreds work against the EC2
// and STS APIs of the same server, as the instance's role.
func TestIMDSInstanceRole(t *testing.T) {
	e := newEnv(t)
	in := e.instance("node1")
	prov := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = imdsClient(e.imdsURL("node1")) })
	creds := must[aws.Credentials](t)(prov.Retrieve(ctx))
	if !strings.HasPrefix(creds.AccessKeyID, "ASIA") || creds.SessionToken == "" || !creds.CanExpire {
		t.Fatalf("credentials: %+v", creds)
	}
	cfg := aws.Config{Region: DefaultRegion, Credentials: aws.NewCredentialsCache(prov), BaseEndpoint: aws.String(e.url), RetryMaxAttempts: 1}
	id := must[*sts.GetCallerIdentityOutput](t)(sts.NewFromConfig(cfg).GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{}))
	if want := "arn:aws:sts::123456789012:assumed-role/lifeboat-node1/" + in.ID; aws.ToString(id.Arn) != want {
		t.Fatalf("caller %q, want %q", aws.ToString(id.Arn), want)
	}
	c := ec2.NewFromConfig(cfg)
	di := must[*ec2.DescribeInstancesOutput](t)(c.DescribeInstances(ctx, &ec2.DescribeInstancesInput{InstanceIds: []string{in.ID}}))
	if len(di.Reservations) != 1 {
		t.Fatalf("DescribeInstances as the instance role: %+v", di)
	}
	eni := e.eni("node1")
	_, err := c.ModifyNetworkInterfaceAttribute(ctx, &ec2.ModifyNetworkInterfaceAttributeInput{DryRun: aws.Bool(true),
		NetworkInterfaceId: &eni, SourceDestCheck: &types.AttributeBooleanValue{Value: aws.Bool(false)}})
	wantErr(t, err, "DryRunOperation", 412, "")

	// The ExpireCredentials fault makes EC2 reject them.
	e.srv.SetFaults(Faults{ExpireCredentials: true})
	_, err = ec2.NewFromConfig(cfg).DescribeInstances(ctx, &ec2.DescribeInstancesInput{})
	wantErr(t, err, "ExpiredToken", 400, "expired")
}

// TestIMDSTokens: IMDSv2 sessions as AWS enforces them.
func TestIMDSTokens(t *testing.T) {
	e := newEnv(t)
	u1, u2 := e.imdsURL("node1"), e.imdsURL("node2")
	id := u1 + "/latest/meta-data/instance-id"
	in1 := e.instance("node1").ID

	if code, _, _ := raw(t, http.MethodGet, id); code != 401 {
		t.Fatalf("GET without a token: %d, want 401", code)
	}
	for _, ttl := range []string{"", "0", "21601", "-5", "ten"} {
		if code, _, _ := raw(t, http.MethodPut, u1+"/latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds", ttl); code != 400 {
			t.Errorf("token TTL %q: %d, want 400", ttl, code)
		}
	}
	if code, _, _ := raw(t, http.MethodPut, u1+"/latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds", "60", "X-Forwarded-For", "192.0.2.1"); code != 403 {
		t.Fatalf("token PUT through a proxy: %d, want 403", code)
	}
	if code, _, _ := raw(t, http.MethodGet, u1+"/latest/api/token"); code != 405 {
		t.Fatalf("GET of the token path: %d, want 405", code)
	}
	tok := token(t, u1, "10")
	_ = token(t, u1, "21600")
	if code, body, _ := raw(t, http.MethodGet, id, "X-aws-ec2-metadata-token", tok); code != 200 || body != in1 {
		t.Fatalf("GET with a token: %d %q", code, body)
	}
	if code, _, _ := raw(t, http.MethodGet, id, "X-aws-ec2-metadata-token", "AQAEAbogus=="); code != 401 {
		t.Fatalf("bogus token: %d, want 401", code)
	}
	if code, _, _ := raw(t, http.MethodGet, u2+"/latest/meta-data/instance-id", "X-aws-ec2-metadata-token", tok); code != 401 {
		t.Fatalf("another instance's token: %d, want 401", code)
	}
	if code, _, _ := raw(t, http.MethodGet, u1+"/latest/meta-data/nope", "X-aws-ec2-metadata-token", tok); code != 404 {
		t.Fatalf("unknown path: %d, want 404", code)
	}
	if code, _, _ := raw(t, http.MethodPost, id, "X-aws-ec2-metadata-token", tok); code != 405 {
		t.Fatalf("POST: %d, want 405", code)
	}
	e.advance(11 * time.Second)
	if code, _, _ := raw(t, http.MethodGet, id, "X-aws-ec2-metadata-token", tok); code != 401 {
		t.Fatalf("expired token: %d, want 401", code)
	}

	// The SDK caches its token by its own clock; when IMDS says 401 it
	// fetches a new one and retries.
	c := imdsClient(u1)
	if got := metadata(t, c, "instance-id"); got != in1 {
		t.Fatal(got)
	}
	e.advance(6 * time.Hour)
	if got := metadata(t, c, "instance-id"); got != in1 {
		t.Fatalf("after the SDK's token expired on the server: %q", got)
	}
	// IMDSv2 only: the SDK without fallback still works (it always sends
	// a token).
	c = imdsClient(u1, func(o *imds.Options) { o.EnableFallback = aws.FalseTernary })
	if got := metadata(t, c, "instance-id"); got != in1 {
		t.Fatal(got)
	}
}

// TestIMDSv1Options: AllowV1 (HttpTokens optional) and V1Only (no IMDSv2).
func TestIMDSv1Options(t *testing.T) {
	e := newEnv(t)
	u := e.imdsURL("node1")
	in1 := e.instance("node1").ID
	id := u + "/latest/meta-data/instance-id"

	e.srv.SetIMDSOptions(in1, IMDSOptions{AllowV1: true})
	if code, body, _ := raw(t, http.MethodGet, id); code != 200 || body != in1 {
		t.Fatalf("IMDSv1 GET with AllowV1: %d %q", code, body)
	}
	if code, _, _ := raw(t, http.MethodGet, id, "X-aws-ec2-metadata-token", "stale"); code != 401 {
		t.Fatalf("invalid token with AllowV1: %d, want 401", code)
	}
	tok := token(t, u, "60")
	if code, _, _ := raw(t, http.MethodGet, id, "X-aws-ec2-metadata-token", tok); code != 200 {
		t.Fatalf("token with AllowV1: %d", code)
	}

	e.srv.SetIMDSOptions(in1, IMDSOptions{V1Only: true})
	if code, _, _ := raw(t, http.MethodPut, u+"/latest/api/token", "X-aws-ec2-metadata-token-ttl-seconds", "60"); code != 403 {
		t.Fatalf("token PUT on an IMDSv1-only service: %d, want 403", code)
	}
	if code, body, _ := raw(t, http.MethodGet, id); code != 200 || body != in1 {
		t.Fatalf("IMDSv1 GET: %d %q", code, body)
	}
	// The SDK falls back to IMDSv1 by default, and fails without fallback.
	if got := metadata(t, imdsClient(u), "instance-id"); got != in1 {
		t.Fatal(got)
	}
	strict := imdsClient(u, func(o *imds.Options) { o.EnableFallback = aws.FalseTernary })
	if _, err := strict.GetMetadata(ctx, &imds.GetMetadataInput{Path: "instance-id"}); err == nil {
		t.Fatal("the SDK without fallback got metadata from an IMDSv1-only service")
	}
	prov := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = imdsClient(u) })
	must[aws.Credentials](t)(prov.Retrieve(ctx))

	e.srv.ResetIMDSOptions(in1)
	if code, _, _ := raw(t, http.MethodGet, id); code != 401 {
		t.Fatalf("after reset: %d, want 401", code)
	}
}

// TestIMDSCredentialRotation: the same credentials until they are within
// RefreshBefore of expiry, then a new set.
func TestIMDSCredentialRotation(t *testing.T) {
	e := newEnv(t)
	in1 := e.instance("node1").ID
	e.srv.SetIMDSOptions(in1, IMDSOptions{CredentialTTL: time.Hour}) // refresh 15 minutes before expiry
	u := e.imdsURL("node1")
	prov := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = imdsClient(u) })
	type credJSON struct{ Code, LastUpdated, Type, AccessKeyId, SecretAccessKey, Token, Expiration string }
	get := func() credJSON {
		t.Helper()
		tok := token(t, u, "21600")
		code, body, h := raw(t, http.MethodGet, u+"/latest/meta-data/iam/security-credentials/lifeboat-node1", "X-aws-ec2-metadata-token", tok)
		var c credJSON
		if err := json.Unmarshal([]byte(body), &c); code != 200 || err != nil || c.Code != "Success" || c.Type != "AWS-HMAC" || h.Get("Content-Type") != "text/plain" {
			t.Fatalf("credentials: %d %s %v", code, body, err)
		}
		return c
	}

	a := must[aws.Credentials](t)(prov.Retrieve(ctx))
	first := get()
	if first.AccessKeyId != a.AccessKeyID {
		t.Fatalf("IMDS handed out %s after %s", first.AccessKeyId, a.AccessKeyID)
	}
	exp, err := time.Parse(time.RFC3339, first.Expiration)
	if err != nil || exp.Sub(e.srv.Now()) > time.Hour || exp.Sub(e.srv.Now()) < 59*time.Minute {
		t.Fatalf("Expiration %q (now %v): %v", first.Expiration, e.srv.Now(), err)
	}
	e.advance(44 * time.Minute)
	if b := must[aws.Credentials](t)(prov.Retrieve(ctx)); b.AccessKeyID != a.AccessKeyID {
		t.Fatal("rotated 16 minutes before expiry")
	}
	e.advance(2 * time.Minute)
	b := must[aws.Credentials](t)(prov.Retrieve(ctx))
	if b.AccessKeyID == a.AccessKeyID || b.SessionToken == a.SessionToken {
		t.Fatal("not rotated 14 minutes before expiry")
	}
	second := get()
	if second.AccessKeyId != b.AccessKeyID || second.LastUpdated == first.LastUpdated || second.Expiration <= first.Expiration {
		t.Fatalf("after rotation: %+v, before %+v", second, first)
	}
	// the old set stays valid until it expires
	creds := e.w.State().Credentials
	if !slices.ContainsFunc(creds, func(c Credential) bool { return c.AccessKeyID == a.AccessKeyID }) {
		t.Fatal("old credentials dropped")
	}

	// RefreshBefore explicitly; with a short TTL the default is a quarter.
	if got := (IMDSOptions{CredentialTTL: 10 * time.Minute}).refreshBefore(); got != 150*time.Second {
		t.Fatalf("default refresh before for 10m: %v", got)
	}
	e.srv.SetIMDSOptions(in1, IMDSOptions{CredentialTTL: time.Hour, RefreshBefore: 50 * time.Minute})
	e.advance(5 * time.Minute) // b was issued 5 minutes ago: 55 minutes left
	if c := get(); c.AccessKeyId != b.AccessKeyID {
		t.Fatal("rotated with 55 minutes left and RefreshBefore 50m")
	}
	e.advance(6 * time.Minute)
	if c := get(); c.AccessKeyId == b.AccessKeyID {
		t.Fatal("not rotated with 49 minutes left and RefreshBefore 50m")
	}
}

// TestIMDSDownAndLatency: the IMDS faults.
func TestIMDSDownAndLatency(t *testing.T) {
	e := newEnv(t)
	in1 := e.instance("node1").ID
	u := e.imdsURL("node1")
	c := imdsClient(u, func(o *imds.Options) { o.Retryer = aws.NopRetryer{} })

	e.srv.SetIMDSOptions(in1, IMDSOptions{Down: true})
	if _, err := http.Get(u + "/latest/meta-data/instance-id"); err == nil {
		t.Fatal("a down IMDS answered")
	}
	if _, err := c.GetMetadata(ctx, &imds.GetMetadataInput{Path: "instance-id"}); err == nil {
		t.Fatal("the SDK got metadata from a down IMDS")
	}
	e.srv.SetIMDSOptions(in1, IMDSOptions{Latency: 100 * time.Millisecond})
	start := time.Now()
	c = imdsClient(u)
	if got := metadata(t, c, "instance-id"); got != in1 {
		t.Fatal(got)
	}
	if d := time.Since(start); d < 200*time.Millisecond { // token PUT + GET
		t.Fatalf("two calls took %v", d)
	}
	// EC2 faults do not touch IMDS
	e.srv.SetIMDSOptions(in1, IMDSOptions{})
	e.srv.SetFaults(Faults{ErrorRate: 1, Latency: time.Hour})
	if got := metadata(t, c, "instance-id"); got != in1 {
		t.Fatal(got)
	}
}

// TestIMDSControl: /_sim/imds/NODE reads and sets an instance's options.
func TestIMDSControl(t *testing.T) {
	e := newEnv(t)
	in1 := e.instance("node1").ID
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := do(http.MethodPut, "/_sim/imds/node1", `{"allowV1":true,"credentialTtl":"10m","latency":"1ms"}`); code != 200 || !strings.Contains(body, `"credentialTtl": "10m0s"`) {
		t.Fatalf("PUT: %d %s", code, body)
	}
	if o := e.srv.IMDSOptions(in1); !o.AllowV1 || o.CredentialTTL != 10*time.Minute || o.Latency != time.Millisecond {
		t.Fatalf("options: %+v", o)
	}
	if code, body := do(http.MethodGet, "/_sim/imds/"+in1, ""); code != 200 || !strings.Contains(body, `"allowV1": true`) {
		t.Fatalf("GET by instance id: %d %s", code, body)
	}
	for _, bad := range []string{`{"credentialTtl":"soon"}`, `{"latency":"-1s"}`, `{"colour":1}`} {
		if code, _ := do(http.MethodPut, "/_sim/imds/node1", bad); code != 400 {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
	if code, _ := do(http.MethodGet, "/_sim/imds/node9", ""); code != 404 {
		t.Fatalf("unknown instance: %d", code)
	}
	if code, body := do(http.MethodDelete, "/_sim/imds/node1", ""); code != 200 || strings.TrimSpace(body) != "{}" {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	var back IMDSOptions
	if err := json.Unmarshal([]byte(`{"v1Only":true,"refreshBefore":"1m","down":true}`), &back); err != nil || !back.V1Only || !back.Down || back.RefreshBefore != time.Minute {
		t.Fatalf("unmarshal: %+v %v", back, err)
	}
}

// TestIMDSWithoutRole: an instance without an instance profile has no iam/
// metadata; Options.IMDS sets every instance's defaults.
func TestIMDSWithoutRole(t *testing.T) {
	st := DefaultWorld([]string{"node1"}).State()
	st.Instances[0].Role = ""
	data, _ := json.Marshal(st)
	w := must[*World](t)(ParseWorld(data))
	srv := New(w, Options{IMDS: IMDSOptions{AllowV1: true}})
	ts := httptest.NewServer(srv.IMDSHandler(st.Instances[0].ID))
	defer ts.Close()
	for _, p := range []string{"iam/info", "iam/security-credentials/", "iam/"} {
		if code, _, _ := raw(t, http.MethodGet, ts.URL+"/latest/meta-data/"+p); code != 404 {
			t.Errorf("%s: %d, want 404", p, code)
		}
	}
	if code, body, _ := raw(t, http.MethodGet, ts.URL+"/latest/meta-data/"); code != 200 || strings.Contains(body, "iam/") {
		t.Fatalf("listing: %d %q", code, body)
	}
	if _, err := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = imdsClient(ts.URL) }).Retrieve(ctx); err == nil {
		t.Fatal("credentials for an instance without a profile")
	}
	// an unknown instance's IMDS answers 404
	ts2 := httptest.NewServer(srv.IMDSHandler("i-0000000000000dead"))
	defer ts2.Close()
	if code, _, _ := raw(t, http.MethodGet, ts2.URL+"/latest/meta-data/instance-id"); code != 404 {
		t.Fatalf("unknown instance: %d", code)
	}
}

// TestIMDSConcurrent: instances' metadata services used in parallel while
// their options change (run with -race).
func TestIMDSConcurrent(t *testing.T) {
	e := newEnv(t)
	var wg sync.WaitGroup
	for _, node := range []string{"node1", "node2"} {
		u, id := e.imdsURL(node), e.instance(node).ID
		for range 4 {
			wg.Go(func() {
				c := imdsClient(u)
				prov := ec2rolecreds.New(func(o *ec2rolecreds.Options) { o.Client = c })
				for range 10 {
					out, err := c.GetMetadata(ctx, &imds.GetMetadataInput{Path: "instance-id"})
					if err != nil {
						t.Error(err)
						continue
					}
					got, _ := io.ReadAll(out.Content)
					out.Content.Close()
					if string(got) != id {
						t.Errorf("instance-id %q", got)
					}
					if _, err := prov.Retrieve(ctx); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Go(func() {
			for i := range 20 {
				e.srv.SetIMDSOptions(id, IMDSOptions{AllowV1: i%2 == 0, CredentialTTL: time.Duration(1+i) * time.Minute})
				e.advance(time.Minute)
			}
		})
	}
	wg.Wait()
}

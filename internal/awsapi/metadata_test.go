package awsapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// What cannot change is asked of the metadata service once, by every copy
// of the clients; an error is not remembered.
func TestStaticMetadataAskedOnce(t *testing.T) {
	var mu sync.Mutex
	asked := map[string]int{}
	fail := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut { // IMDSv2 session token
			_, _ = w.Write([]byte("token"))
			return
		}
		mu.Lock()
		asked[r.URL.Path]++
		f := fail
		mu.Unlock()
		if f {
			http.Error(w, "busy", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("0a:00:00:00:00:01\n"))
	}))
	defer srv.Close()
	c, err := New(context.Background(), Settings{Region: "us-east-1", MaxAttempts: 1,
		Credentials: aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")),
		Endpoints:   Endpoints{IMDS: srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.StaticMetadata(context.Background(), "mac"); err == nil {
		t.Fatal("an error from the metadata service was not returned")
	}
	mu.Lock()
	fail, failed := false, asked["/latest/meta-data/mac"]
	mu.Unlock()
	for _, cl := range []*Clients{c, c, c.Metered(func() {})} {
		v, err := cl.StaticMetadata(context.Background(), "mac")
		if err != nil || v != "0a:00:00:00:00:01" {
			t.Fatalf("mac: %q, %v", v, err)
		}
	}
	if n := asked["/latest/meta-data/mac"] - failed; n != 1 {
		t.Errorf("metadata service asked %d times for the MAC after it answered, want once", n)
	}
}

package awsapi

import (
	"context"
	"io"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
)

// metaMemo keeps the instance metadata answers that cannot change while the
// instance runs, shared by every copy of the Clients (see Metered).
type metaMemo struct {
	mu sync.Mutex
	v  map[string]string
}

// StaticMetadata returns the instance metadata at path, asked of the
// metadata service once and then remembered: only for paths whose answer
// is fixed for the instance's life, such as its primary MAC ("mac") and
// that interface's id (the primary interface cannot be detached). A check
// that needs this node's interface every few seconds would otherwise make
// two metadata calls each time (issue 11: the owner's idle cost), and a
// takeover would wait for them.
func (c *Clients) StaticMetadata(ctx context.Context, path string) (string, error) {
	m := c.meta
	if m != nil {
		m.mu.Lock()
		v, ok := m.v[path]
		m.mu.Unlock()
		if ok {
			return v, nil
		}
	}
	var v string
	err := c.Call(ctx, func(ctx context.Context) error {
		out, err := c.IMDS.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
		if err != nil {
			return err
		}
		defer out.Content.Close()
		b, err := io.ReadAll(io.LimitReader(out.Content, 4096))
		if err != nil {
			return err
		}
		v = strings.TrimSpace(string(b))
		return nil
	})
	if err != nil {
		return "", err
	}
	if m != nil && v != "" {
		m.mu.Lock()
		if m.v == nil {
			m.v = map[string]string{}
		}
		m.v[path] = v
		m.mu.Unlock()
	}
	return v, nil
}

package agenttest

import (
	"context"
	"io"
	"net"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
)

// Fetch sends an operator's GET for path to node and copies the answer (a
// file, such as the support bundle of GET /v1/report) to w. It waits up to
// two minutes (the operator's client in Status waits 5 s).
func (c *Cluster) Fetch(node, path string, w io.Writer) error {
	cl, err := api.NewClient(c.node(node).cfg.Self().API, c.token, 2*time.Minute, c.tls.ClientConfig())
	if err != nil {
		return err
	}
	cl.WithDialer(func(ctx context.Context, addr string) (net.Conn, error) { return c.net.DialAPI(ctx, "", addr) })
	defer cl.CloseIdle()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err = cl.Fetch(ctx, path, w, 256<<20)
	return err
}

// Key is the cluster key every node's config holds (inline, as
// cluster.key), for tests that prove it never leaks.
func (c *Cluster) Key() []byte { return append([]byte(nil), c.key...) }

package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Fetch sends a GET and copies the answer's body (a file, such as the
// support bundle) to w, at most limit bytes; an answer that is longer is
// an error. It returns the number of bytes copied.
func (c *Client) Fetch(ctx context.Context, path string, w io.Writer, limit int64) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+path, nil)
	if err != nil {
		return 0, fmt.Errorf("build request GET %s: %w", path, err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("connect to agent at %s: %w", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e Error
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return 0, &StatusError{Code: resp.StatusCode, Msg: e.Error}
		}
		return 0, &StatusError{Code: resp.StatusCode, Msg: strings.TrimSpace(string(b))}
	}
	n, err := io.Copy(w, io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return n, fmt.Errorf("read answer of GET %s: %w", path, err)
	}
	if n > limit {
		return n, fmt.Errorf("answer of GET %s is longer than %d bytes", path, limit)
	}
	return n, nil
}

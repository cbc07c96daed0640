package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Types of the messages of the event stream, GET /v1/events?follow=1
// (server-sent events). Every message carries an id: the cursor
// ("node:seq,node:seq") that resumes the stream after it, as the
// Last-Event-ID header or ?cursor=.
const (
	// StreamEvent: data is one events.Event.
	StreamEvent = "event"
	// StreamUnreachable: data is a StreamNotice; the node's events are
	// missing until a StreamReachable for it (the agent keeps retrying).
	StreamUnreachable = "unreachable"
	// StreamReachable: the node answers again; its events resume from
	// the cursor, none lost or repeated.
	StreamReachable = "reachable"
	// StreamDropped: data is a StreamNotice with the number of the
	// node's events the reader will not see: it fell behind by more
	// than the node's history holds.
	StreamDropped = "dropped"
)

// StreamNotice is the data of the stream's messages other than events.
type StreamNotice struct {
	Node    string `json:"node"`
	Error   string `json:"error,omitempty"`
	Dropped uint64 `json:"dropped,omitempty"`
}

// StreamMessage is one server-sent event.
type StreamMessage struct {
	ID   string
	Type string
	Data []byte
}

// maxStreamLine bounds one line of the stream (an event is a few KB).
const maxStreamLine = 1 << 20

// ReadStream reads server-sent events from r and calls fn for each
// message with data, until r ends, fn returns an error or a line exceeds
// 1 MiB. Comments (heartbeats) are skipped.
func ReadStream(r io.Reader, fn func(StreamMessage) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxStreamLine)
	var m StreamMessage
	var data bytes.Buffer
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if data.Len() > 0 {
				m.Data = bytes.TrimSuffix(data.Bytes(), []byte("\n"))
				if m.Type == "" {
					m.Type = "message"
				}
				if err := fn(m); err != nil {
					return err
				}
			}
			m, data = StreamMessage{}, bytes.Buffer{}
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			m.ID = value
		case "event":
			m.Type = value
		case "data":
			data.WriteString(value)
			data.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read event stream: %w", err)
	}
	return io.ErrUnexpectedEOF
}

// Stream opens a server-sent event stream at path (a GET), resuming after
// lastID when set. It has no overall timeout: it lasts until ctx ends or
// the agent closes it. The caller closes the body.
func (c *Client) Stream(ctx context.Context, path, lastID string) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("build request GET %s: %w", path, err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := &http.Client{Transport: c.tr} // no Timeout: a stream is long
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("connect to agent at %s: %w", c.base, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e Error
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			return nil, &StatusError{Code: resp.StatusCode, Msg: e.Error}
		}
		return nil, &StatusError{Code: resp.StatusCode, Msg: strings.TrimSpace(string(b))}
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: the agent answered %q, not an event stream (an agent older than this CLI?)", path, ct)
	}
	return resp.Body, nil
}

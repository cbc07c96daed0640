package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/lifeboat-ha/lifeboat/internal/api"
	"github.com/lifeboat-ha/lifeboat/internal/events"
)

func encodeLine(e events.Event) string {
	b, _ := json.Marshal(e)
	return string(b)
}

func formatEvent(e events.Event) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %-8s %-8s", e.Time.Format("2006-01-02 15:04:05.000"), e.Node, e.Kind)
	if e.Hierarchy != "" {
		b.WriteString(" " + e.Hierarchy)
		if e.Resource != "" {
			b.WriteString("/" + e.Resource)
		}
	}
	if e.Action != "" {
		b.WriteString(" " + e.Action)
	}
	if e.Phase != "" {
		b.WriteString(" " + e.Phase)
	}
	if e.Epoch != 0 {
		fmt.Fprintf(&b, " epoch=%d", e.Epoch)
	}
	if e.Duration != "" {
		b.WriteString(" took " + e.Duration)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if e.Error != "" {
		b.WriteString(" ERROR: " + e.Error)
	}
	if e.Count > 1 {
		fmt.Fprintf(&b, " (%d times since %s)", e.Count, e.First.Format("15:04:05.000"))
	}
	return b.String()
}

func printEvent(e events.Event) {
	if g.json {
		fmt.Fprintln(stdout, encodeLine(e))
		return
	}
	fmt.Fprintln(stdout, formatEvent(e))
}

// followEvents prints the agent's event stream from cursor on until ctx
// ends, reconnecting with the last cursor when the agent goes away (a
// restart): events are neither lost nor repeated. Notes about nodes go to
// stderr.
func followEvents(ctx context.Context, cursor string) error {
	c, err := client()
	if err != nil {
		return err
	}
	retry := 200 * time.Millisecond
	for {
		body, err := c.Stream(ctx, "/v1/events?follow=1", cursor)
		if err == nil {
			retry = 200 * time.Millisecond
			err = api.ReadStream(body, func(m api.StreamMessage) error {
				if m.ID != "" {
					cursor = m.ID
				}
				switch m.Type {
				case api.StreamEvent:
					var e events.Event
					if err := json.Unmarshal(m.Data, &e); err != nil {
						return fmt.Errorf("decode a streamed event: %w", err)
					}
					printEvent(e)
				case api.StreamUnreachable, api.StreamReachable, api.StreamDropped:
					var n api.StreamNotice
					if json.Unmarshal(m.Data, &n) == nil {
						fmt.Fprintln(stderr, "note:", noticeText(m.Type, n))
					}
				}
				return nil
			})
			body.Close()
		}
		if ctx.Err() != nil {
			return nil
		}
		var se *api.StatusError
		if errors.As(err, &se) && se.Code/100 == 4 {
			return codeErr{exitFailure, err}
		}
		fmt.Fprintf(stderr, "note: event stream interrupted (%v); reconnecting\n", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
		retry = min(2*retry, 5*time.Second)
	}
}

func noticeText(typ string, n api.StreamNotice) string {
	switch typ {
	case api.StreamUnreachable:
		return fmt.Sprintf("events of %s not available (retrying): %s", n.Node, n.Error)
	case api.StreamReachable:
		return fmt.Sprintf("events of %s available again", n.Node)
	}
	return fmt.Sprintf("%d events of %s dropped: this reader fell behind", n.Dropped, n.Node)
}

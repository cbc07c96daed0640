package main

import (
	"encoding/json"
	"fmt"
	"strings"

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
	return b.String()
}

package netlab

import (
	"errors"
	"fmt"
	"sort"
	"time"
)

// Sample is one probe request and its answer. Times carry the monotonic
// clock, so differences between them are immune to wall-clock steps.
type Sample struct {
	Seq  uint64
	Sent time.Time
	// Answered is when the answer arrived; zero if none did.
	Answered time.Time
	// From is the name the answering host gave.
	From string
}

// OK reports whether the request was answered.
func (s Sample) OK() bool { return !s.Answered.IsZero() }

// Outage is a silence in the answers: between the answer to LastBefore and
// the answer to FirstAfter, Lost requests got none.
type Outage struct {
	LastBefore, FirstAfter Sample
	// Duration is FirstAfter.Answered - LastBefore.Answered.
	Duration time.Duration
	Lost     int
}

// Before and After name the hosts that answered on each side.
func (o Outage) Before() string { return o.LastBefore.From }
func (o Outage) After() string  { return o.FirstAfter.From }

func (o Outage) String() string {
	return fmt.Sprintf("%v outage, %d requests lost, %s before, %s after", o.Duration.Round(time.Millisecond), o.Lost, o.Before(), o.After())
}

// ErrNoAnswer is wrapped by OutageAt's error when no answer bounds the
// outage on one side.
var ErrNoAnswer = errors.New("no answer")

// OutageAt measures the outage a fault at time fault caused, from samples
// in the order they were sent. It runs from the last answer before the
// first request lost at or after the fault (that answer may come after
// the fault, when the fault took a moment to bite) to the first answer
// after that request. With no request lost after the fault, it spans the
// answers to the last request sent before the fault and the first sent at
// or after it. Record the fault time once the fault is in effect: a
// request lost in flight just before is still counted.
func OutageAt(samples []Sample, fault time.Time) (Outage, error) {
	first := sort.Search(len(samples), func(i int) bool { return !samples[i].Sent.Before(fault) })
	pivot := first
	for i := first; i < len(samples); i++ {
		if !samples[i].OK() {
			pivot = i
			break
		}
	}
	before := -1
	for j := pivot - 1; j >= 0; j-- {
		if samples[j].OK() {
			before = j
			break
		}
	}
	after := -1
	for k := pivot; k < len(samples); k++ {
		if samples[k].OK() {
			after = k
			break
		}
	}
	var o Outage
	if before >= 0 {
		o.LastBefore = samples[before]
	}
	if after >= 0 {
		o.FirstAfter = samples[after]
	}
	end := after // every request between the two answers went unanswered
	if end < 0 {
		end = len(samples)
	}
	o.Lost = end - before - 1
	switch {
	case before < 0:
		return o, fmt.Errorf("measure outage at %s: %w before the fault (%d requests sent)", fault.Format(time.TimeOnly), ErrNoAnswer, len(samples))
	case after < 0:
		return o, fmt.Errorf("measure outage at %s: %w after the fault (%d requests lost since the last answer, from %s)", fault.Format(time.TimeOnly), ErrNoAnswer, o.Lost, o.Before())
	}
	o.Duration = o.FirstAfter.Answered.Sub(o.LastBefore.Answered)
	return o, nil
}

// Gaps lists every silence longer than min between the answers to two
// requests answered one after the other (requests between them lost), in
// the order sent.
func Gaps(samples []Sample, min time.Duration) []Outage {
	var out []Outage
	prev := -1
	for i, s := range samples {
		if !s.OK() {
			continue
		}
		if prev >= 0 {
			if d := s.Answered.Sub(samples[prev].Answered); d > min {
				out = append(out, Outage{LastBefore: samples[prev], FirstAfter: s, Duration: d, Lost: i - prev - 1})
			}
		}
		prev = i
	}
	return out
}

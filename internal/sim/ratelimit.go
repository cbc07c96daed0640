package sim

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// EC2 request-rate throttling, as AWS documents it in "Request throttling
// for the Amazon EC2 API"
// (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html,
// "Request token bucket sizes and refill rates"):
//
//   - throttling is per account and Region, and per API: each action has a
//     token bucket of its own, so ReplaceRoute calls never use up the
//     tokens of DescribeRouteTables;
//   - each request takes one token; a request that finds the bucket empty
//     is answered RequestLimitExceeded (HTTP 503) and takes none;
//   - a bucket refills at a set rate up to its capacity; the size and rate
//     depend on the action's category:
//
//     | category                                  | capacity | refill / s |
//     |-------------------------------------------|----------|------------|
//     | mutating (ReplaceRoute, AssociateAddress…)|      200 |          5 |
//     | non-mutating (Describe* with ids/filters) |      100 |         20 |
//     | unfiltered and unpaginated non-mutating   |       50 |         10 |
//
// AWS adds the refill every second; the simulator refills continuously at
// the same rate (the floor a burst of N calls meets is the same, (N -
// capacity) / rate, without a one-second granularity).
//
// Dry runs are requests and take a token like any other.

// Bucket is one token bucket: Capacity tokens at most, Refill tokens
// added per second.
type Bucket struct {
	Capacity float64 `json:"capacity"`
	Refill   float64 `json:"refill"`
}

// String writes the bucket as CAPACITY/REFILL ("200/5").
func (b Bucket) String() string {
	return strconv.FormatFloat(b.Capacity, 'f', -1, 64) + "/" + strconv.FormatFloat(b.Refill, 'f', -1, 64)
}

// Request-rate categories of EC2 actions.
const (
	CategoryMutating    = "mutating"
	CategoryNonMutating = "non-mutating"
	CategoryUnfiltered  = "unfiltered"
)

// AWS's default buckets per category (see the table above).
var (
	DefaultMutatingBucket    = Bucket{Capacity: 200, Refill: 5}
	DefaultNonMutatingBucket = Bucket{Capacity: 100, Refill: 20}
	DefaultUnfilteredBucket  = Bucket{Capacity: 50, Refill: 10}
)

// RateLimits turns on EC2's request-rate throttling. A zero Bucket is
// AWS's default for its category; set one to model a smaller (or a raised)
// account limit.
type RateLimits struct {
	Mutating    Bucket `json:"mutating,omitzero"`
	NonMutating Bucket `json:"nonMutating,omitzero"`
	Unfiltered  Bucket `json:"unfiltered,omitzero"`
}

// Bucket returns the bucket of a category, AWS's default unless set.
func (rl RateLimits) Bucket(category string) Bucket {
	switch category {
	case CategoryMutating:
		return orBucket(rl.Mutating, DefaultMutatingBucket)
	case CategoryUnfiltered:
		return orBucket(rl.Unfiltered, DefaultUnfilteredBucket)
	default:
		return orBucket(rl.NonMutating, DefaultNonMutatingBucket)
	}
}

func orBucket(b, def Bucket) Bucket {
	if b == (Bucket{}) {
		return def
	}
	return b
}

func (rl RateLimits) validate() error {
	for name, b := range map[string]Bucket{"mutating": rl.Mutating, "nonMutating": rl.NonMutating, "unfiltered": rl.Unfiltered} {
		if b == (Bucket{}) {
			continue
		}
		if b.Capacity < 1 || b.Refill <= 0 {
			return fmt.Errorf("rateLimits.%s: capacity must be at least 1 and refill positive (got %v, %v)", name, b.Capacity, b.Refill)
		}
	}
	return nil
}

// EC2Category returns the request-rate category of an EC2 call: Describe*
// calls are non-mutating, or unfiltered when they name no resource id, no
// filter and no page size; everything else changes something.
func EC2Category(action string, params url.Values) string {
	if !strings.HasPrefix(action, "Describe") {
		return CategoryMutating
	}
	for k := range params {
		if strings.Contains(k, "Id.") || strings.HasPrefix(k, "Filter.") || strings.HasPrefix(k, "PublicIp.") || k == "MaxResults" || k == "NetworkInterfaceId" {
			return CategoryNonMutating
		}
	}
	return CategoryUnfiltered
}

// tokenBucket is one action's bucket.
type tokenBucket struct {
	b      Bucket
	tokens float64
	at     time.Time
}

func (t *tokenBucket) take(now time.Time) bool {
	if el := now.Sub(t.at).Seconds(); el > 0 {
		t.tokens = min(t.b.Capacity, t.tokens+el*t.b.Refill)
	}
	t.at = now
	if t.tokens < 1 {
		return false
	}
	t.tokens--
	return true
}

// RateLimitStats counts, per EC2 action, the calls admitted and throttled
// since the rate limits were last set.
type RateLimitStats struct {
	Admitted  map[string]int `json:"admitted"`
	Throttled map[string]int `json:"throttled"`
}

// RateLimitStats returns the counts (empty while rate limits are off).
func (s *Server) RateLimitStats() RateLimitStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := RateLimitStats{Admitted: map[string]int{}, Throttled: map[string]int{}}
	for k, v := range s.rlAdmitted {
		st.Admitted[k] = v
	}
	for k, v := range s.rlThrottled {
		st.Throttled[k] = v
	}
	return st
}

// rateLimit takes a token for an authenticated EC2 call, or answers as
// EC2 does when the action's bucket is empty.
func (s *Server) rateLimit(svc, action string, params url.Values, rl *RateLimits) *APIError {
	if rl == nil || svc != "ec2" {
		return nil
	}
	cat := EC2Category(action, params)
	key := action
	if cat == CategoryUnfiltered {
		key += " (unfiltered)"
	}
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	tb := s.buckets[key]
	if tb == nil {
		b := rl.Bucket(cat)
		tb = &tokenBucket{b: b, tokens: b.Capacity, at: now}
		s.buckets[key] = tb
	}
	if !tb.take(now) {
		s.rlThrottled[key]++
		return errorf(http.StatusServiceUnavailable, "RequestLimitExceeded", "Request limit exceeded.")
	}
	s.rlAdmitted[key]++
	return nil
}

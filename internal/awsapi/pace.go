package awsapi

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go/middleware"
)

// EC2 throttles each account's requests per Region and per action, with a
// token bucket per action whose size and refill rate depend on the
// action's category ("Request throttling for the Amazon EC2 API",
// https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html):
// mutating actions 200 tokens, 5 added a second; non-mutating (Describe*
// naming its resources) 100 tokens, 20 a second. A request that finds its
// bucket empty is answered RequestLimitExceeded.
//
// The pacer keeps a bucket of the same shape per action on this node and
// makes every attempt of an EC2 call wait for a token of its own before it
// is sent. A node that takes over 1,000 routes then sends ReplaceRoute at
// the rate AWS refills, each call waiting its turn, instead of sending a
// burst that AWS throttles and retrying with a backoff that overshoots the
// next free token (or exhausting the SDK's retry quota and failing the
// call). The account's buckets are shared with the other nodes and
// anything else the account runs: when AWS throttles a call anyway, the
// action's local bucket is emptied, so this node slows to the refill rate
// at once.

// Bucket is a token bucket: Capacity tokens at most, Refill added per second.
type Bucket struct {
	Capacity float64
	Refill   float64
}

// AWS's default EC2 buckets (see above).
var (
	DefaultMutatingBucket = Bucket{Capacity: 200, Refill: 5}
	DefaultDescribeBucket = Bucket{Capacity: 100, Refill: 20}
)

// String writes the bucket as CAPACITY/REFILL ("off" when unset).
func (b Bucket) String() string {
	if b.Refill <= 0 {
		return "off"
	}
	return strconv.FormatFloat(b.Capacity, 'f', -1, 64) + "/" + strconv.FormatFloat(b.Refill, 'f', -1, 64)
}

// ParseBucket reads CAPACITY/REFILL ("200/5"), or "off" (no pacing: the
// zero Bucket).
func ParseBucket(s string) (Bucket, error) {
	if strings.TrimSpace(s) == "off" {
		return Bucket{}, nil
	}
	c, r, ok := strings.Cut(s, "/")
	capacity, err1 := strconv.ParseFloat(strings.TrimSpace(c), 64)
	refill, err2 := strconv.ParseFloat(strings.TrimSpace(r), 64)
	if !ok || err1 != nil || err2 != nil || capacity < 1 || refill <= 0 {
		return Bucket{}, fmt.Errorf("%q is not CAPACITY/REFILL (tokens, tokens per second; for example 200/5) or off", s)
	}
	return Bucket{Capacity: capacity, Refill: refill}, nil
}

// pacer holds this node's bucket per EC2 action.
type pacer struct {
	mutating, describe Bucket
	now                func() time.Time

	mu      sync.Mutex
	buckets map[string]*localBucket
}

type localBucket struct {
	b      Bucket
	tokens float64 // negative: reserved ahead by callers waiting
	at     time.Time
}

func newPacer(mutating, describe Bucket) *pacer {
	return &pacer{mutating: mutating, describe: describe, now: time.Now, buckets: map[string]*localBucket{}}
}

func (p *pacer) bucketLocked(action string, now time.Time) *localBucket {
	lb := p.buckets[action]
	if lb == nil {
		b := p.mutating
		if strings.HasPrefix(action, "Describe") {
			b = p.describe
		}
		if b.Refill <= 0 {
			return nil
		}
		lb = &localBucket{b: b, tokens: b.Capacity, at: now}
		p.buckets[action] = lb
	}
	if el := now.Sub(lb.at).Seconds(); el > 0 {
		lb.tokens = min(lb.b.Capacity, lb.tokens+el*lb.b.Refill)
	}
	lb.at = now
	return lb
}

// wait takes a token for one attempt of action, waiting for it as long as
// ctx allows.
func (p *pacer) wait(ctx context.Context, action string) error {
	p.mu.Lock()
	now := p.now()
	lb := p.bucketLocked(action, now)
	if lb == nil {
		p.mu.Unlock()
		return nil
	}
	lb.tokens--
	var d time.Duration
	if lb.tokens < 0 {
		d = time.Duration(-lb.tokens / lb.b.Refill * float64(time.Second))
	}
	p.mu.Unlock()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		// Give the reservation back: the callers behind move up.
		p.mu.Lock()
		if lb := p.bucketLocked(action, p.now()); lb != nil {
			lb.tokens = min(lb.b.Capacity, lb.tokens+1)
		}
		p.mu.Unlock()
		return &Failure{Kind: KindThrottled, Code: "Paced", Err: ctx.Err(),
			Message: fmt.Sprintf("the call's time ran out while it waited for a token to call ec2:%s (this node paces it at %s, EC2's request limit)", action, p.bucketFor(action))}
	}
}

func (p *pacer) bucketFor(action string) Bucket {
	if strings.HasPrefix(action, "Describe") {
		return p.describe
	}
	return p.mutating
}

// throttled: AWS answered RequestLimitExceeded, the account's bucket is
// empty whatever this node counted.
func (p *pacer) throttled(action string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if lb := p.bucketLocked(action, p.now()); lb != nil && lb.tokens > 0 {
		lb.tokens = 0
	}
}

// middleware paces every attempt of an EC2 call (it sits after the retry
// middleware, before signing).
func (p *pacer) middleware() middleware.FinalizeMiddleware {
	return middleware.FinalizeMiddlewareFunc("LifeboatPacer", func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
		action := awsmiddleware.GetOperationName(ctx)
		if err := p.wait(ctx, action); err != nil {
			return middleware.FinalizeOutput{}, middleware.Metadata{}, err
		}
		out, md, err := next.HandleFinalize(ctx, in)
		if f := Classify(err); f != nil && f.Kind == KindThrottled {
			p.throttled(action)
		}
		return out, md, err
	})
}

// addPacer puts the pacer into an EC2 client's stack.
func (p *pacer) addPacer(stack *middleware.Stack) error {
	if _, ok := stack.Finalize.Get("Retry"); ok {
		return stack.Finalize.Insert(p.middleware(), "Retry", middleware.After)
	}
	return stack.Finalize.Add(p.middleware(), middleware.Before)
}

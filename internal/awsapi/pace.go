package awsapi

import (
	"context"
	"fmt"
	"reflect"
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

// Dry runs (readiness, doctor, upgrade check) count against the same
// buckets at AWS, but they can wait and a failover cannot: a dry run takes
// a token only while the bucket is at least half full, so a node taking
// over many hierarchies does not find half its ReplaceRoute tokens spent
// proving it could.

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
// ctx allows. A dry run waits until the bucket is at least half full.
func (p *pacer) wait(ctx context.Context, action string, dryRun bool) error {
	p.mu.Lock()
	now := p.now()
	lb := p.bucketLocked(action, now)
	if lb == nil {
		p.mu.Unlock()
		return nil
	}
	if dryRun {
		return p.waitHalf(ctx, action, lb)
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

// maxDryRunWait: a dry run that would wait longer for its half bucket is
// not sent (answered as throttled).
const maxDryRunWait = time.Second

// waitHalf takes a token once the bucket holds more than half its
// capacity, or gives up at once if that is more than maxDryRunWait away
// (p.mu held on entry, released).
func (p *pacer) waitHalf(ctx context.Context, action string, lb *localBucket) error {
	for {
		need := lb.b.Capacity/2 + 1
		if lb.tokens >= need {
			lb.tokens--
			p.mu.Unlock()
			return nil
		}
		d := max(time.Duration((need-lb.tokens)/lb.b.Refill*float64(time.Second)), time.Millisecond)
		if d > maxDryRunWait {
			// Busy (a takeover) or just throttled: a readiness probe
			// that cannot tell is "unknown" and keeps its last answer,
			// better than holding a readiness round for many seconds.
			p.mu.Unlock()
			return &Failure{Kind: KindThrottled, Code: "Paced",
				Message: fmt.Sprintf("dry run not sent: this node's ec2:%s bucket is under half full for another %s (dry runs leave that half to real calls)", action, d.Round(time.Millisecond))}
		}
		p.mu.Unlock()
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return &Failure{Kind: KindThrottled, Code: "Paced", Err: ctx.Err(),
				Message: fmt.Sprintf("the dry run's time ran out while it waited for ec2:%s's bucket to be half full (dry runs leave the other half to real calls)", action)}
		}
		p.mu.Lock()
		lb = p.bucketLocked(action, p.now())
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
		dry, _ := middleware.GetStackValue(ctx, dryRunKey{}).(bool)
		if err := p.wait(ctx, action, dry); err != nil {
			return middleware.FinalizeOutput{}, middleware.Metadata{}, err
		}
		out, md, err := next.HandleFinalize(ctx, in)
		if f := Classify(err); f != nil && f.Kind == KindThrottled {
			p.throttled(action)
		}
		return out, md, err
	})
}

// dryRunKey marks, in a call's stack values, a call with DryRun=true.
type dryRunKey struct{}

// markDryRun notes whether the call's input asks for a dry run (every EC2
// input that can has a DryRun *bool field).
var markDryRun = middleware.InitializeMiddlewareFunc("LifeboatDryRun", func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
	if v := reflect.ValueOf(in.Parameters); v.Kind() == reflect.Pointer && !v.IsNil() && v.Elem().Kind() == reflect.Struct {
		if f := v.Elem().FieldByName("DryRun"); f.IsValid() && f.Kind() == reflect.Pointer && !f.IsNil() && f.Elem().Kind() == reflect.Bool && f.Elem().Bool() {
			ctx = middleware.WithStackValue(ctx, dryRunKey{}, true)
		}
	}
	return next.HandleInitialize(ctx, in)
})

// addPacer puts the pacer into an EC2 client's stack.
func (p *pacer) addPacer(stack *middleware.Stack) error {
	if err := stack.Initialize.Add(markDryRun, middleware.After); err != nil {
		return err
	}
	if _, ok := stack.Finalize.Get("Retry"); ok {
		return stack.Finalize.Insert(p.middleware(), "Retry", middleware.After)
	}
	return stack.Finalize.Add(p.middleware(), middleware.Before)
}

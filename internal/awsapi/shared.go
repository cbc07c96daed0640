package awsapi

import (
	"context"
	"sync"
)

// Shared reads. A node that runs 1,000 route-table virtual IPs in one
// table would otherwise describe that table 1,000 times per round of
// checks, and 1,000 times when it takes them all over: far beyond EC2's
// Describe bucket (100 tokens, 20 a second). Callers that need the same
// read (the same key: the action and what it names) share one call.
//
// A shared answer is never older than the question: a caller joins only a
// call that has not been sent yet. While a call for the key is in flight,
// newcomers gather for the next one, sent the moment the current one
// answers; so each caller gets the answer of a call sent after it asked,
// exactly as if it had made the call itself, and a key costs at most one
// call in flight (plus one waiting) however many callers ask. A restore
// that reads "the route already points here" can trust the read as much
// as its own.

// flight is one shared call.
type flight struct {
	done chan struct{}
	val  any
	err  error
}

// sharer holds the calls in flight and the ones gathering, by key.
type sharer struct {
	mu       sync.Mutex
	inflight map[string]*flight
	next     map[string]*flight
	calls    int // calls sent, for tests
}

func newSharer() *sharer {
	return &sharer{inflight: map[string]*flight{}, next: map[string]*flight{}}
}

// Shared runs fn for key once for every caller that asked before it was
// sent (see above) and returns its answer. fn runs with ctx's values but
// not its cancellation (others may wait on it): it must bound itself, as
// Call does. A caller whose ctx ends stops waiting.
func (c *Clients) Shared(ctx context.Context, key string, fn func(context.Context) (any, error)) (any, error) {
	if c.share == nil {
		return fn(ctx)
	}
	return c.share.do(ctx, key, fn)
}

func (s *sharer) do(ctx context.Context, key string, fn func(context.Context) (any, error)) (any, error) {
	s.mu.Lock()
	f := s.next[key]
	switch {
	case f != nil:
		// gathering for the next call: join it
	case s.inflight[key] != nil:
		f = &flight{done: make(chan struct{})}
		s.next[key] = f
		cur := s.inflight[key]
		go func() {
			<-cur.done
			s.mu.Lock()
			delete(s.next, key)
			s.inflight[key] = f
			s.calls++
			s.mu.Unlock()
			s.run(ctx, key, f, fn)
		}()
	default:
		f = &flight{done: make(chan struct{})}
		s.inflight[key] = f
		s.calls++
		go s.run(ctx, key, f, fn)
	}
	s.mu.Unlock()
	select {
	case <-f.done:
		return f.val, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (s *sharer) run(ctx context.Context, key string, f *flight, fn func(context.Context) (any, error)) {
	f.val, f.err = fn(context.WithoutCancel(ctx))
	s.mu.Lock()
	if s.inflight[key] == f {
		delete(s.inflight, key)
	}
	s.mu.Unlock()
	close(f.done)
}

package awsapi

import (
	"context"
	"sync"
	"time"
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

//
// A caller may accept older answers, back to a moment it names
// (WithReadsSince): a restore accepts any read sent after its hierarchy
// was assigned to this node. By then the previous owner's lease had run
// out, and its last change was made under that lease, so such a read
// shows every change the previous owner made; after it, only this node
// changes what the hierarchy owns. 1,000 restores assigned in one commit
// then read their route table once, not once each.

// flight is one shared call.
type flight struct {
	done chan struct{}
	sent time.Time
	val  any
	err  error
}

// sharer holds the calls in flight and the ones gathering, by key, and
// the last answer of each key.
type sharer struct {
	mu       sync.Mutex
	inflight map[string]*flight
	next     map[string]*flight
	last     map[string]*flight
	calls    int // calls sent, for tests
}

func newSharer() *sharer {
	return &sharer{inflight: map[string]*flight{}, next: map[string]*flight{}, last: map[string]*flight{}}
}

type readsSinceKey struct{}

// WithReadsSince lets the shared reads of ctx's calls come from calls sent
// at or after t (by default: after the caller asked).
func WithReadsSince(ctx context.Context, t time.Time) context.Context {
	return context.WithValue(ctx, readsSinceKey{}, t)
}

// ReadsSince returns the moment WithReadsSince set (zero: none).
func ReadsSince(ctx context.Context) time.Time {
	t, _ := ctx.Value(readsSinceKey{}).(time.Time)
	return t
}

// Forget drops key's last answer: the caller changed what it read.
func (c *Clients) Forget(key string) {
	if c.share == nil {
		return
	}
	c.share.mu.Lock()
	delete(c.share.last, key)
	c.share.mu.Unlock()
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
	since := ReadsSince(ctx)
	s.mu.Lock()
	f := s.next[key]
	switch {
	case !since.IsZero() && s.last[key] != nil && s.last[key].sent.After(since):
		f = s.last[key] // answered, sent late enough
	case !since.IsZero() && s.inflight[key] != nil && s.inflight[key].sent.After(since):
		f = s.inflight[key] // in flight, sent late enough
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
			f.sent = time.Now()
			s.calls++
			s.mu.Unlock()
			s.run(ctx, key, f, fn)
		}()
	default:
		f = &flight{done: make(chan struct{}), sent: time.Now()}
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
	if f.err == nil && (s.last[key] == nil || s.last[key].sent.Before(f.sent)) {
		s.last[key] = f
	}
	s.mu.Unlock()
	close(f.done)
}

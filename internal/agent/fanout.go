package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"
)

// Runs that cost cloud calls on every node (status --refresh, doctor) are
// shared: a request that arrives while the same run is in progress waits
// for it and gets its answer, so that concurrent API clients cannot
// multiply the AWS calls. At most maxSharedRuns different runs of a kind
// go on at once; a request beyond waits for a slot, as long as its own
// context allows. A run belongs to the agent, not to the request that
// started it: it goes on (bounded by its own timeout) when that client
// goes away, for the others waiting on it.
//
// Two kinds, with a bound each: a fan-out (this node asks every node) and
// a local run (a peer asks this node for its part). A fan-out never waits
// for a slot a local run needs, so two nodes fanning out to each other
// cannot hold each other's slots.
const maxSharedRuns = 4

type sharedRuns struct {
	group singleflight.Group
	sem   func() *semaphore.Weighted
}

func newSharedRuns() *sharedRuns {
	return &sharedRuns{sem: sync.OnceValue(func() *semaphore.Weighted { return semaphore.NewWeighted(maxSharedRuns) })}
}

// do runs fn once for every caller asking for key meanwhile, within
// timeout and the agent's life, and returns its answer to ctx's caller.
func (s *sharedRuns) do(ctx, agentCtx context.Context, key string, timeout time.Duration, fn func(context.Context) (any, error)) (any, error) {
	ch := s.group.DoChan(key, func() (any, error) {
		rctx, cancel := context.WithTimeout(agentCtx, timeout)
		defer cancel()
		if err := s.sem().Acquire(rctx, 1); err != nil {
			return nil, fmt.Errorf("%s: %d other runs in progress took too long: %w", key, maxSharedRuns, err)
		}
		defer s.sem().Release(1)
		return fn(rctx)
	})
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: %w", key, ctx.Err())
	}
}

// shared is do for a typed answer.
func shared[T any](ctx context.Context, a *Agent, runs *sharedRuns, key string, timeout time.Duration, fn func(context.Context) (T, error)) (T, error) {
	v, err := runs.do(ctx, a.ctx, key, timeout, func(ctx context.Context) (any, error) { return fn(ctx) })
	t, _ := v.(T)
	return t, err
}

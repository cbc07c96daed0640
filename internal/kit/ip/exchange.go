package ip

import (
	"context"
	"errors"
	"os"
	"time"
)

// deadliner is a connection whose blocked reads a deadline ends.
type deadliner interface {
	SetReadDeadline(t time.Time) error
}

// aLongTimeAgo is a read deadline that ends a blocked read at once.
var aLongTimeAgo = time.Unix(1, 0)

// exchange is the query loop shared by the probes: it sends a query in
// rounds spread evenly over wait (a lost packet is sent again) and hands
// every packet read to recv until recv reports the answer (true), or until
// wait has passed without one (false, nil).
//
// When ctx ends first, a blocked read is cut short and exchange returns
// ctx's error: the probe could not tell. Errors from send, from recv (other
// than the read deadline passing) and from setting the deadline are
// returned as they are: they are the probe machinery failing, not an
// answer.
func exchange(ctx context.Context, c deadliner, wait time.Duration, rounds int, send func() error, recv func() (bool, error)) (bool, error) {
	if rounds < 1 {
		rounds = 1
	}
	// Wake a blocked read when ctx ends.
	stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(aLongTimeAgo) })
	defer stop()

	start := time.Now()
	end := start.Add(wait)
	step := wait / time.Duration(rounds)
	for sent := 0; ; {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		if sent < rounds {
			if err := send(); err != nil {
				return false, err
			}
			sent++
		}
		until := end
		if sent < rounds {
			until = start.Add(step * time.Duration(sent))
		}
		if err := c.SetReadDeadline(until); err != nil {
			return false, err
		}
		// ctx may have ended before the deadline above replaced the one
		// the AfterFunc set.
		if err := ctx.Err(); err != nil {
			return false, err
		}
		for {
			ok, err := recv()
			if err == nil {
				if ok {
					return true, nil
				}
				continue
			}
			if cerr := ctx.Err(); cerr != nil {
				return false, cerr
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				return false, err
			}
			break
		}
		if sent >= rounds && !time.Now().Before(end) {
			return false, nil
		}
	}
}

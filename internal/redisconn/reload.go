package redisconn

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// reloadOnFailure makes a cluster client re-read the cluster's layout after
// a command fails for want of a node.
//
// go-redis re-reads it when a node answers MOVED (a slot moved) and
// otherwise only every ClusterStateReloadInterval, a minute by default. A
// primary that died answers nothing at all, so without this hook the client
// keeps sending that primary's slots to its dead address for up to a
// minute after a replica has taken over. ReloadState runs in the
// background and go-redis coalesces calls to at most one reload per 200ms,
// so a burst of failures costs one CLUSTER SLOTS, not one per request.
type reloadOnFailure struct {
	c *redis.ClusterClient
}

// DialHook implements redis.Hook. A failed dial fails the command that
// needed it, which the other hooks see.
func (h reloadOnFailure) DialHook(next redis.DialHook) redis.DialHook {
	return next
}

// ProcessHook implements redis.Hook.
func (h reloadOnFailure) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.after(ctx, err)
		return err
	}
}

// ProcessPipelineHook implements redis.Hook.
func (h reloadOnFailure) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.after(ctx, err)
		return err
	}
}

// after asks for a reload when err is not an answer from Redis: a refused
// or broken connection, or a node that did not answer in time.
func (h reloadOnFailure) after(ctx context.Context, err error) {
	if err == nil || errors.Is(err, redis.Nil) {
		return
	}
	if _, ok := errors.AsType[redis.Error](err); ok {
		return
	}
	h.c.ReloadState(ctx)
}

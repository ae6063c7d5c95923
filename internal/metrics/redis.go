package metrics

import (
	"context"
	"errors"
	"net"

	"github.com/redis/go-redis/v9"
)

// RedisHook counts failed Redis commands and dials. A missing key (redis.Nil)
// is an answer, not an error.
type RedisHook struct {
	Metrics *Metrics
}

// DialHook implements redis.Hook.
func (h RedisHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := next(ctx, network, addr)
		if err != nil {
			h.Metrics.DependencyError("redis")
		}
		return c, err
	}
}

// ProcessHook implements redis.Hook.
func (h RedisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err != nil && !errors.Is(err, redis.Nil) && ctx.Err() == nil {
			h.Metrics.DependencyError("redis")
		}
		return err
	}
}

// ProcessPipelineHook implements redis.Hook.
func (h RedisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		if err != nil && !errors.Is(err, redis.Nil) && ctx.Err() == nil {
			h.Metrics.DependencyError("redis")
		}
		return err
	}
}

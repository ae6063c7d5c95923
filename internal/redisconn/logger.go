package redisconn

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
)

// Logger passes go-redis's own messages (a failed dial, a broken pooled
// connection) to a slog.Logger, so they come out as structured records like
// every other line the program writes, instead of as plain text on stderr,
// which is where the library's default logger prints them.
//
// go-redis holds its logger in a package-level variable, set with
// redis.SetLogger; a Logger does nothing until it is installed there.
type Logger struct {
	logger *slog.Logger
}

// NewLogger returns a Logger writing to l.
func NewLogger(l *slog.Logger) *Logger {
	return &Logger{logger: l}
}

// Printf implements go-redis's logging interface. The library logs only
// trouble, and callers of this package fall back when Redis fails, so each
// message is a warning rather than an error.
func (l *Logger) Printf(ctx context.Context, format string, v ...any) {
	detail := strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")
	l.logger.LogAttrs(ctx, slog.LevelWarn, "redis client", slog.String("detail", detail))
}

// Package redisconn builds the go-redis client that the rate limiter and the
// response cache share, tuned for calls made on the request path.
//
// go-redis defaults suit batch jobs: a 5s dial timeout tried up to 5 times,
// 5s read and write timeouts, a pool wait of 6s and 3 command retries. Behind
// an HTTP request that means a hung or unreachable Redis costs seconds. The
// limits here make the same failure cost a request milliseconds, so callers
// can fall back (local limiter, cache miss) instead of stalling.
package redisconn

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"
)

// The numbers below bound one command against a Redis in the same region.
// A healthy Redis answers in well under a millisecond, so each limit leaves
// two orders of magnitude of headroom for GC pauses and busy networks while
// keeping the worst case of a dead Redis small.
const (
	// dialTimeout bounds one TCP (and TLS) connect. A connect within a
	// region takes about a millisecond; TLS adds a round trip or two.
	dialTimeout = 200 * time.Millisecond
	// dialAttempts is the number of dials per new connection. go-redis
	// tries 5 times 100ms apart by default; once is enough because the
	// command-level retry below covers a transient failure, and the pool's
	// own circuit breaker stops dialling a Redis that keeps refusing.
	dialAttempts = 1
	// readTimeout and writeTimeout bound one command's socket I/O. Our
	// commands are O(1): one Lua script over one small hash, or GET/SET of
	// a cached response.
	readTimeout  = 100 * time.Millisecond
	writeTimeout = 100 * time.Millisecond
	// poolTimeout bounds the wait for a free connection when every pooled
	// one is busy; beyond it the caller is better served by its fallback.
	poolTimeout = 100 * time.Millisecond
	// maxRetries is one: it rides over a connection that died between the
	// pool's health check and the command (a Redis restart, an idle
	// timeout). go-redis does not retry read timeouts, so a hung Redis is
	// not waited for twice.
	maxRetries = 1
	// minRetryBackoff and maxRetryBackoff keep that one retry quick.
	minRetryBackoff = 5 * time.Millisecond
	maxRetryBackoff = 20 * time.Millisecond
)

// Options says which Redis to connect to: either URL, or Addr with DB and
// Password.
type Options struct {
	// URL is a redis://, rediss:// (TLS) or unix:// URL, e.g.
	// redis://:secret@redis:6379/0. When set, Addr, DB and Password are
	// ignored. Timeouts and retries given as URL query parameters
	// (dial_timeout=1s, max_retries=-1, ...) take precedence over this
	// package's defaults.
	URL string
	// Addr is host:port, used when URL is empty.
	Addr string
	// DB is the database number, used when URL is empty.
	DB int
	// Password authenticates the connection, used when URL is empty.
	Password string
	// IOTimeout bounds one command's socket reads and writes; 0 means
	// 100ms. A caller's context deadline shortens it but cannot lengthen
	// it (go-redis uses the earlier of the two), so it must be at least
	// the longest deadline any caller gives a command.
	IOTimeout time.Duration
}

// Open returns a client for the Redis o describes, with request-path
// deadlines. It does not connect: the first command dials, so the service
// starts even while Redis is down and recovers when it comes up.
func Open(o Options) (*redis.Client, error) {
	opts, err := o.redisOptions()
	if err != nil {
		return nil, err
	}
	if o.IOTimeout > 0 {
		setIfZero(&opts.ReadTimeout, o.IOTimeout)
		setIfZero(&opts.WriteTimeout, o.IOTimeout)
	}
	applyDefaults(opts)
	return redis.NewClient(opts), nil
}

// redisOptions turns o into go-redis options without timeouts applied.
func (o Options) redisOptions() (*redis.Options, error) {
	if o.URL == "" {
		if o.Addr == "" {
			return nil, errors.New("redisconn: neither URL nor Addr is set")
		}
		return &redis.Options{Addr: o.Addr, DB: o.DB, Password: o.Password}, nil
	}
	// url.Parse errors quote the whole URL, password included; parse here
	// first so the error we return names only what is wrong with it.
	if _, err := url.Parse(o.URL); err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("redisconn: invalid URL: %w", err)
	}
	opts, err := redis.ParseURL(o.URL)
	if err != nil {
		return nil, fmt.Errorf("redisconn: invalid URL: %w", err)
	}
	return opts, nil
}

// applyDefaults sets this package's limits on every field the caller (via
// URL query parameters) left at zero, which go-redis reads as "use my
// default".
func applyDefaults(opts *redis.Options) {
	setIfZero(&opts.DialTimeout, dialTimeout)
	setIfZero(&opts.ReadTimeout, readTimeout)
	setIfZero(&opts.WriteTimeout, writeTimeout)
	setIfZero(&opts.PoolTimeout, poolTimeout)
	setIfZero(&opts.MinRetryBackoff, minRetryBackoff)
	setIfZero(&opts.MaxRetryBackoff, maxRetryBackoff)
	setIfZero(&opts.MaxRetries, maxRetries)
	setIfZero(&opts.DialerRetries, dialAttempts)
	// Without this, go-redis ignores the caller's context deadline for
	// socket I/O and uses only ReadTimeout/WriteTimeout; with it, a caller
	// that allows 30ms for its Redis call gets 30ms.
	opts.ContextTimeoutEnabled = true
	// MinIdleConns stays 0 so that NewClient does not dial.
	opts.MinIdleConns = 0
}

// setIfZero stores def in *p when *p is the zero value.
func setIfZero[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

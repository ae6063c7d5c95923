// Package redisconn builds the go-redis client that the rate limiter, the
// response cache, the token budgets and the revocation list share, tuned
// for calls made on the request path. It speaks to one Redis, to a Redis
// Cluster, or to a primary found through Sentinel, chosen by the URL's
// scheme (see [Options.URL]).
//
// go-redis defaults suit batch jobs: a 5s dial timeout tried up to 5 times,
// 5s read and write timeouts, a pool wait of 6s and 3 command retries. Behind
// an HTTP request that means a hung or unreachable Redis costs seconds. The
// limits here make the same failure cost a request milliseconds, so callers
// can fall back (local limiter, cache miss) instead of stalling. They apply
// alike to every node of a cluster and to the Sentinels.
package redisconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
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

// Mode is the kind of Redis deployment a URL names.
type Mode string

// The deployments Open connects to.
const (
	// ModeSingle is one Redis server (redis://, rediss://, unix://).
	ModeSingle Mode = "single"
	// ModeCluster is a Redis Cluster reached through seed nodes
	// (redis+cluster://, rediss+cluster://).
	ModeCluster Mode = "cluster"
	// ModeSentinel is a primary with replicas whose address Sentinel
	// gives (redis+sentinel://, rediss+sentinel://).
	ModeSentinel Mode = "sentinel"
)

// Query parameters this package reads itself; every other parameter goes
// to go-redis, which refuses the ones it does not know.
const (
	// paramCAFile names a PEM file of the certificate authorities that
	// sign the servers' certificates, for TLS URLs whose servers use a
	// private CA. Without it the system's roots are used.
	paramCAFile = "tls_ca_file"
	// paramSentinelUser and paramSentinelPassword authenticate to the
	// Sentinels when they require it; the URL's user and password are for
	// the Redis servers holding the data.
	paramSentinelUser     = "sentinel_username"
	paramSentinelPassword = "sentinel_password"
)

// Options says which Redis to connect to: either URL, or Addr with DB and
// Password.
type Options struct {
	// URL names the Redis and, by its scheme, the kind of deployment:
	//
	//	redis://[user:password@]host:port[/db]            one server
	//	redis+cluster://[user:password@]host:port,host:port  a cluster, by seed nodes
	//	redis+sentinel://[user:password@]host:port,host:port/primary-name[/db]
	//
	// and the same with rediss, rediss+cluster and rediss+sentinel for TLS
	// (unix:///path also names one server). The user and password are an
	// ACL user's (or just a password) on the Redis servers; Sentinels that
	// require their own take sentinel_username and sentinel_password
	// query parameters. tls_ca_file=/path/ca.pem trusts a private CA.
	// More seed nodes may be given as addr=host:port parameters (the way
	// to list several IPv6 literals). Timeouts and retries given as query
	// parameters (dial_timeout=1s, max_retries=-1, ...) take precedence
	// over this package's defaults. When URL is set, Addr, DB and Password
	// are ignored.
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
// deadlines: a *redis.Client for one server or for Sentinel (which
// follows the primary across failovers), a *redis.ClusterClient for a
// cluster. It does not connect: the first command dials, so the service
// starts even while Redis is down and recovers when it comes up.
func Open(o Options) (redis.UniversalClient, error) {
	if o.URL == "" {
		if o.Addr == "" {
			return nil, errors.New("redisconn: neither URL nor Addr is set")
		}
		opts := &redis.Options{Addr: o.Addr, DB: o.DB, Password: o.Password}
		tune(o.IOTimeout, clientTunables(opts))
		return redis.NewClient(opts), nil
	}
	u, err := parse(o.URL)
	if err != nil {
		return nil, err
	}
	switch u.mode {
	case ModeCluster:
		opts, err := u.clusterOptions()
		if err != nil {
			return nil, err
		}
		tune(o.IOTimeout, clusterTunables(opts))
		c := redis.NewClusterClient(opts)
		c.AddHook(reloadOnFailure{c})
		return c, nil
	case ModeSentinel:
		opts, err := u.failoverOptions()
		if err != nil {
			return nil, err
		}
		tune(o.IOTimeout, failoverTunables(opts))
		return redis.NewFailoverClient(opts), nil
	default:
		opts, err := u.singleOptions()
		if err != nil {
			return nil, err
		}
		tune(o.IOTimeout, clientTunables(opts))
		return redis.NewClient(opts), nil
	}
}

// ModeOf returns the kind of deployment rawURL names, or an error saying
// what is wrong with it (never quoting its password).
func ModeOf(rawURL string) (Mode, error) {
	u, err := parse(rawURL)
	if err != nil {
		return "", err
	}
	return u.mode, nil
}

// parsedURL is a REDIS_URL taken apart.
type parsedURL struct {
	mode  Mode
	tls   bool
	url   *url.URL
	hosts []string   // the seeds (cluster) or Sentinels, host:port
	query url.Values // what is left for go-redis
	// Read from the query by this package.
	caFile                       string
	sentinelUser, sentinelPasswd string
}

// parse splits rawURL into its parts. url.Parse errors quote the whole URL,
// password included, so the errors returned here name only what is wrong.
func parse(rawURL string) (*parsedURL, error) {
	// A host list ("a:1,b:2") is not one host to url.Parse, which checks
	// only what follows the last colon as a port: the list is taken out
	// first, and the URL parsed with its first host in its place.
	hostList, single := "", rawURL
	if scheme, rest, ok := strings.Cut(rawURL, "://"); ok && strings.Contains(scheme, "+") {
		end := strings.IndexAny(rest, "/?#")
		if end < 0 {
			end = len(rest)
		}
		at := strings.LastIndex(rest[:end], "@") + 1
		hostList = rest[at:end]
		first, _, _ := strings.Cut(hostList, ",")
		single = scheme + "://" + rest[:at] + first + rest[end:]
	}
	u, err := url.Parse(single)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("redisconn: invalid URL: %w", err)
	}
	p := &parsedURL{url: u}
	switch u.Scheme {
	case "redis", "unix":
		p.mode = ModeSingle
	case "rediss":
		p.mode, p.tls = ModeSingle, true
	case "redis+cluster":
		p.mode = ModeCluster
	case "rediss+cluster":
		p.mode, p.tls = ModeCluster, true
	case "redis+sentinel":
		p.mode = ModeSentinel
	case "rediss+sentinel":
		p.mode, p.tls = ModeSentinel, true
	default:
		return nil, fmt.Errorf("redisconn: invalid URL: unknown scheme %q (want redis, rediss, unix, redis+cluster, rediss+cluster, redis+sentinel or rediss+sentinel)", u.Scheme)
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("redisconn: invalid URL query: %w", err)
	}
	p.caFile = take(q, paramCAFile)
	if p.caFile != "" && !p.tls {
		return nil, fmt.Errorf("redisconn: invalid URL: %s needs a TLS scheme (rediss...)", paramCAFile)
	}
	p.sentinelUser, p.sentinelPasswd = take(q, paramSentinelUser), take(q, paramSentinelPassword)
	if (p.sentinelUser != "" || p.sentinelPasswd != "") && p.mode != ModeSentinel {
		return nil, fmt.Errorf("redisconn: invalid URL: %s and %s apply to redis+sentinel URLs only", paramSentinelUser, paramSentinelPassword)
	}
	if p.mode != ModeSingle {
		port := "6379"
		if p.mode == ModeSentinel {
			port = "26379"
		}
		for h := range strings.SplitSeq(hostList, ",") {
			if h == "" {
				return nil, errors.New("redisconn: invalid URL: empty host in the host list")
			}
			h = withDefaultPort(h, port)
			if _, port, err := net.SplitHostPort(h); err != nil || strings.Trim(port, "0123456789") != "" {
				return nil, fmt.Errorf("redisconn: invalid URL: %q in the host list is not host:port", h)
			}
			p.hosts = append(p.hosts, h)
		}
	} else if strings.Contains(u.Host, ",") {
		return nil, errors.New("redisconn: invalid URL: several hosts need redis+cluster:// or redis+sentinel://")
	}
	p.query = q
	return p, nil
}

// take removes the query parameter name from q and returns its last value.
func take(q url.Values, name string) string {
	v := q[name]
	delete(q, name)
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// withDefaultPort adds port to a host given without one.
func withDefaultPort(h, port string) string {
	if _, _, err := net.SplitHostPort(h); err == nil {
		return h
	}
	return net.JoinHostPort(strings.Trim(h, "[]"), port)
}

// goRedisURL rebuilds the URL in the plain redis:// or rediss:// form that
// go-redis's parsers take, with host as its only host, path as its path and
// the query parameters left over plus extra.
func (p *parsedURL) goRedisURL(host, path string, user *url.Userinfo, extra url.Values) string {
	scheme := "redis"
	if p.tls {
		scheme = "rediss"
	}
	q := url.Values{}
	for k, v := range p.query {
		q[k] = v
	}
	for k, v := range extra {
		q[k] = append(q[k], v...)
	}
	u := url.URL{Scheme: scheme, User: user, Host: host, Path: path, RawQuery: q.Encode()}
	return u.String()
}

// singleOptions is go-redis's reading of a one-server URL.
func (p *parsedURL) singleOptions() (*redis.Options, error) {
	u := *p.url
	u.RawQuery = p.query.Encode()
	raw := u.String()
	opts, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("redisconn: invalid URL: %w", err)
	}
	if err := p.trust(opts.TLSConfig); err != nil {
		return nil, err
	}
	return opts, nil
}

// clusterOptions reads a redis+cluster URL: every host is a seed node, from
// which the client learns the whole cluster. A cluster has database 0 only.
func (p *parsedURL) clusterOptions() (*redis.ClusterOptions, error) {
	if path := strings.Trim(p.url.Path, "/"); path != "" && path != "0" {
		return nil, fmt.Errorf("redisconn: invalid URL: a cluster has database 0 only, the path names %q", path)
	}
	extra := url.Values{"addr": p.hosts[1:]}
	opts, err := redis.ParseClusterURL(p.goRedisURL(p.hosts[0], "", p.url.User, extra))
	if err != nil {
		return nil, fmt.Errorf("redisconn: invalid URL: %w", err)
	}
	if err := p.trust(opts.TLSConfig); err != nil {
		return nil, err
	}
	return opts, nil
}

// failoverOptions reads a redis+sentinel URL: the hosts are Sentinels, the
// path names the primary (as the Sentinels know it) and optionally a
// database.
func (p *parsedURL) failoverOptions() (*redis.FailoverOptions, error) {
	parts := strings.Split(strings.Trim(p.url.Path, "/"), "/")
	if parts[0] == "" || len(parts) > 2 {
		return nil, errors.New("redisconn: invalid URL: a redis+sentinel URL's path is /primary-name or /primary-name/db")
	}
	path := ""
	if len(parts) == 2 {
		path = "/" + parts[1]
	}
	extra := url.Values{"addr": p.hosts[1:], "master_name": {parts[0]}}
	opts, err := redis.ParseFailoverURL(p.goRedisURL(p.hosts[0], path, nil, extra))
	if err != nil {
		return nil, fmt.Errorf("redisconn: invalid URL: %w", err)
	}
	if p.url.User != nil {
		opts.Username = p.url.User.Username()
		opts.Password, _ = p.url.User.Password()
	}
	opts.SentinelUsername, opts.SentinelPassword = p.sentinelUser, p.sentinelPasswd
	if err := p.trust(opts.TLSConfig); err != nil {
		return nil, err
	}
	return opts, nil
}

// trust adds the tls_ca_file roots to c, if one was given.
func (p *parsedURL) trust(c *tls.Config) error {
	if c == nil || p.caFile == "" {
		return nil
	}
	pem, err := os.ReadFile(p.caFile)
	if err != nil {
		return fmt.Errorf("redisconn: %s: %w", paramCAFile, err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return fmt.Errorf("redisconn: %s: %s holds no PEM certificate", paramCAFile, p.caFile)
	}
	c.RootCAs = roots
	c.MinVersion = max(c.MinVersion, tls.VersionTLS12)
	return nil
}

// tunables points at the fields of one of go-redis's option structs that
// this package sets.
type tunables struct {
	dialTimeout, readTimeout, writeTimeout, poolTimeout *time.Duration
	minRetryBackoff, maxRetryBackoff                    *time.Duration
	maxRetries, dialerRetries, minIdleConns             *int
	contextTimeoutEnabled                               *bool
}

func clientTunables(o *redis.Options) tunables {
	return tunables{&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout,
		&o.MinRetryBackoff, &o.MaxRetryBackoff, &o.MaxRetries, &o.DialerRetries, &o.MinIdleConns, &o.ContextTimeoutEnabled}
}

func clusterTunables(o *redis.ClusterOptions) tunables {
	return tunables{&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout,
		&o.MinRetryBackoff, &o.MaxRetryBackoff, &o.MaxRetries, &o.DialerRetries, &o.MinIdleConns, &o.ContextTimeoutEnabled}
}

func failoverTunables(o *redis.FailoverOptions) tunables {
	return tunables{&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout,
		&o.MinRetryBackoff, &o.MaxRetryBackoff, &o.MaxRetries, &o.DialerRetries, &o.MinIdleConns, &o.ContextTimeoutEnabled}
}

// tune sets this package's limits on every field the caller (via URL query
// parameters) left at zero, which go-redis reads as "use my default".
// ioTimeout, when positive, replaces the default read and write timeouts.
func tune(ioTimeout time.Duration, t tunables) {
	if ioTimeout > 0 {
		setIfZero(t.readTimeout, ioTimeout)
		setIfZero(t.writeTimeout, ioTimeout)
	}
	setIfZero(t.dialTimeout, dialTimeout)
	setIfZero(t.readTimeout, readTimeout)
	setIfZero(t.writeTimeout, writeTimeout)
	setIfZero(t.poolTimeout, poolTimeout)
	setIfZero(t.minRetryBackoff, minRetryBackoff)
	setIfZero(t.maxRetryBackoff, maxRetryBackoff)
	setIfZero(t.maxRetries, maxRetries)
	setIfZero(t.dialerRetries, dialAttempts)
	// Without this, go-redis ignores the caller's context deadline for
	// socket I/O and uses only ReadTimeout/WriteTimeout; with it, a caller
	// that allows 30ms for its Redis call gets 30ms.
	*t.contextTimeoutEnabled = true
	// MinIdleConns stays 0 so that creating the client does not dial.
	*t.minIdleConns = 0
}

// setIfZero stores def in *p when *p is the zero value.
func setIfZero[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

package config

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/shopspring/decimal"

	"github.com/agentapi/agentapi/internal/ratelimit"
)

// loader parses variables and collects every problem instead of stopping at the first.
type loader struct {
	// values holds every variable of Variables that is set (the
	// environment first, then the .env file), blanks left out.
	values map[string]string
	// declared is the set of Variables; reading any other name is a bug.
	declared map[string]bool
	problems []string
}

// lookup returns a variable's value and whether it is set. It panics on a
// name missing from Variables, so the list cannot fall behind the loader.
func (l *loader) lookup(name string) (string, bool) {
	if !l.declared[name] {
		panic("config: " + name + " is read but missing from Variables")
	}
	v, ok := l.values[name]
	return v, ok
}

func (l *loader) fail(name, msg string) {
	l.problems = append(l.problems, name+": "+msg)
}

func (l *loader) str(name, def string) string {
	if v, ok := l.lookup(name); ok {
		return strings.TrimSpace(v)
	}
	return def
}

func (l *loader) boolean(name string, def bool) bool {
	v, ok := l.lookup(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		l.fail(name, fmt.Sprintf("%q is not a boolean (use true or false)", v))
		return def
	}
	return b
}

func (l *loader) integer(name string, def, lo, hi int64) int64 {
	v, ok := l.lookup(name)
	if !ok {
		return def
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil {
		l.fail(name, fmt.Sprintf("%q is not a whole number", v))
		return def
	}
	if n < lo || n > hi {
		l.fail(name, fmt.Sprintf("%d is out of range [%d, %d]", n, lo, hi))
		return def
	}
	return n
}

// bodyCap reads a per-tier body bound, which may not exceed ceiling (the
// server-wide MAX_BODY_BYTES); an unset one defaults to def or ceiling,
// whichever is smaller.
func (l *loader) bodyCap(name string, def, ceiling int64) int64 {
	v := l.integer(name, min(def, ceiling), 1, 1<<30)
	if v > ceiling {
		l.fail(name, fmt.Sprintf("%d is above MAX_BODY_BYTES (%d), which bounds every request first", v, ceiling))
		return ceiling
	}
	return v
}

func (l *loader) float(name string, def float64) float64 {
	v, ok := l.lookup(name)
	if !ok {
		return def
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || f <= 0 || f > 1e9 {
		l.fail(name, fmt.Sprintf("%q must be a positive number", v))
		return def
	}
	return f
}

func (l *loader) duration(name string, def, min time.Duration) time.Duration {
	v, ok := l.lookup(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil {
		l.fail(name, fmt.Sprintf("%q is not a duration (examples: 30s, 5m, 1h)", v))
		return def
	}
	if d < min {
		l.fail(name, fmt.Sprintf("%s is below the minimum %s", d, min))
		return def
	}
	return d
}

func (l *loader) oneOf(name, def string, allowed ...string) string {
	v, ok := l.lookup(name)
	if !ok {
		return def
	}
	v = strings.TrimSpace(v)
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	l.fail(name, fmt.Sprintf("%q is not one of %s", v, strings.Join(allowed, ", ")))
	return def
}

func (l *loader) level(name string, def slog.Level) slog.Level {
	v, ok := l.lookup(name)
	if !ok {
		return def
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.TrimSpace(v))); err != nil {
		l.fail(name, fmt.Sprintf("%q is not a log level (debug, info, warn, error)", v))
		return def
	}
	return lv
}

// prefixes parses a comma-separated list of CIDR networks or single addresses.
func (l *loader) prefixes(name string) []netip.Prefix {
	v, ok := l.lookup(name)
	if !ok {
		return nil
	}
	var out []netip.Prefix
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			a, aerr := netip.ParseAddr(part)
			if aerr != nil {
				l.fail(name, fmt.Sprintf("%q is not a network such as 10.0.0.0/8 or an address such as 10.0.0.7", part))
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out
}

// optionalHTTPURL is an http(s) URL when set, "" otherwise.
func (l *loader) optionalHTTPURL(name string) string {
	if _, ok := l.lookup(name); !ok {
		return ""
	}
	return l.httpURL(name, "")
}

func (l *loader) hostPort(name string) string {
	v, ok := l.lookup(name)
	if !ok {
		return ""
	}
	v = strings.TrimSpace(v)
	_, port, err := net.SplitHostPort(v)
	if n, perr := strconv.Atoi(port); err != nil || perr != nil || n < 0 || n > 65535 {
		l.fail(name, fmt.Sprintf("%q is not a host:port address such as 127.0.0.1:9090", v))
		return ""
	}
	return v
}

func (l *loader) httpURL(name, def string) string {
	v := l.str(name, def)
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		l.fail(name, fmt.Sprintf("%q is not an http(s) URL", redactURL(v)))
		return def
	}
	return strings.TrimRight(v, "/")
}

func (l *loader) origins(name string) []string {
	v, ok := l.lookup(name)
	if !ok {
		return nil
	}
	var out []string
	for _, o := range strings.Split(v, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if o != "*" {
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
				l.fail(name, fmt.Sprintf("%q is not an origin like https://app.example.com", o))
				continue
			}
			o = u.Scheme + "://" + u.Host
		}
		out = append(out, o)
	}
	return out
}

// DefaultRedisKeyPrefix is REDIS_KEY_PREFIX when unset.
const DefaultRedisKeyPrefix = "agentapi:"

// maxRedisKeyPrefix bounds REDIS_KEY_PREFIX; it is repeated in every key.
const maxRedisKeyPrefix = 100

// redisKeyPrefix reads REDIS_KEY_PREFIX. Redis accepts any bytes in a key,
// but whitespace or control characters in a prefix are almost certainly a
// quoting mistake in the environment, and they make keys hard to inspect
// with redis-cli, so they are refused.
func (l *loader) redisKeyPrefix() string {
	v := l.str("REDIS_KEY_PREFIX", DefaultRedisKeyPrefix)
	switch {
	case v == "":
		l.fail("REDIS_KEY_PREFIX", "must not be blank")
		return DefaultRedisKeyPrefix
	case len(v) > maxRedisKeyPrefix:
		l.fail("REDIS_KEY_PREFIX", fmt.Sprintf("is %d bytes, at most %d allowed", len(v), maxRedisKeyPrefix))
		return DefaultRedisKeyPrefix
	case !utf8.ValidString(v) || strings.IndexFunc(v, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		l.fail("REDIS_KEY_PREFIX", fmt.Sprintf("%q is not valid UTF-8 without whitespace or control characters", v))
		return DefaultRedisKeyPrefix
	}
	return v
}

// redisScheme reports whether s is a REDIS_URL scheme package redisconn
// connects with: one server, a cluster, or Sentinel, each plain or TLS.
func redisScheme(s string) bool {
	switch s {
	case "redis", "rediss", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel":
		return true
	}
	return false
}

// redisURL prefers REDIS_URL; otherwise an explicitly set REDIS_HOST (the
// legacy /chat deployment's variables) selects Redis. Neither means in-process backends.
func (l *loader) redisURL() string {
	if v, ok := l.lookup("REDIS_URL"); ok {
		v = strings.TrimSpace(v)
		u, err := url.Parse(v)
		if err != nil || !redisScheme(u.Scheme) || u.Host == "" {
			l.fail("REDIS_URL", fmt.Sprintf("%q is not a redis://, rediss://, redis+cluster:// or redis+sentinel:// URL", redactURL(v)))
			return ""
		}
		return v
	}
	host, ok := l.lookup("REDIS_HOST")
	port := l.integer("REDIS_PORT", 6379, 1, 65535)
	db := l.integer("REDIS_DB", 0, 0, 1<<20)
	if !ok {
		return ""
	}
	u := url.URL{Scheme: "redis", Host: net.JoinHostPort(strings.TrimSpace(host), strconv.FormatInt(port, 10)), Path: "/" + strconv.FormatInt(db, 10)}
	if pw, ok := l.lookup("REDIS_PASSWORD"); ok {
		u.User = url.UserPassword("", pw)
	}
	return u.String()
}

// maxModels bounds LLM_MODELS; a longer allowlist is surely a mistake.
const maxModels = 1000

// models reads a comma-separated list of model names; blanks between commas
// are ignored and duplicates kept once.
func (l *loader) models(name string) []string {
	v, ok := l.lookup(name)
	if !ok {
		return nil
	}
	var out []string
	for _, m := range strings.Split(v, ",") {
		m = strings.TrimSpace(m)
		switch {
		case m == "":
			continue
		case len(m) > 200 || strings.ContainsAny(m, " \t\r\n"):
			l.fail(name, fmt.Sprintf("%q is not a model name (no spaces, at most 200 characters)", m))
			continue
		case slices.Contains(out, m):
			continue
		}
		out = append(out, m)
	}
	if len(out) > maxModels {
		l.fail(name, fmt.Sprintf("lists %d models, at most %d allowed", len(out), maxModels))
		return nil
	}
	return out
}

// upstreams reads UPSTREAM_FALLBACKS: comma-separated entries, each a base
// URL, optionally followed by "|" and that upstream's API key, as in
// "https://a.example/v1|sk-a,http://localhost:11434/v1". Messages about a
// bad entry name its position and its URL, never its key.
func (l *loader) upstreams(name string) []Upstream {
	v, ok := l.lookup(name)
	if !ok {
		return nil
	}
	var out []Upstream
	for i, entry := range strings.Split(v, ",") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		base, key, _ := strings.Cut(entry, "|")
		base, key = strings.TrimSpace(base), strings.TrimSpace(key)
		u, err := url.Parse(base)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			shown := "(unparsable)"
			if err == nil {
				shown = redactURL(base)
			}
			l.fail(name, fmt.Sprintf("entry %d %q is not an http(s) base URL; the format is URL|KEY,URL|KEY", i+1, shown))
			continue
		}
		out = append(out, Upstream{BaseURL: strings.TrimRight(base, "/"), APIKey: key})
	}
	return out
}

// fallbackMode reads what the limiter does while Redis fails.
func (l *loader) fallbackMode(name string, def ratelimit.FallbackMode) ratelimit.FallbackMode {
	modes := []string{string(ratelimit.FallbackLocal), string(ratelimit.FallbackAllow), string(ratelimit.FallbackDeny)}
	return ratelimit.FallbackMode(l.oneOf(name, string(def), modes...))
}

// MaxSpendLimit is the largest daily spend limit in USD: budgets count
// picodollars, exactly, in Redis scripts whose numbers are exact up to
// 2^53 (about 9007 USD).
const MaxSpendLimit = 9000

// usd reads an amount of US dollars with at most 6 decimal places, from
// 0 to MaxSpendLimit; unset is 0.
func (l *loader) usd(name string) decimal.Decimal {
	v, ok := l.lookup(name)
	if !ok {
		return decimal.Zero
	}
	d, err := decimal.NewFromString(strings.TrimSpace(v))
	if err != nil || d.IsNegative() || d.GreaterThan(decimal.NewFromInt(MaxSpendLimit)) || -d.Exponent() > 6 {
		l.fail(name, fmt.Sprintf("must be an amount in USD from 0 to %d with at most 6 decimal places, got %q", MaxSpendLimit, v))
		return decimal.Zero
	}
	return d
}

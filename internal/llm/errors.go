package llm

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Sentinel kinds of upstream failure. Each *UpstreamError unwraps to exactly
// one of them, so the HTTP layer can pick a status with errors.Is.
var (
	// ErrUpstreamUnavailable means the upstream could not be reached or did
	// not answer usefully: connection refused, DNS failure, reset, a 5xx
	// status, a redirect, or a body that is not the JSON we expect.
	// Suggested mapping: 502 Bad Gateway.
	ErrUpstreamUnavailable = errors.New("llm: upstream unavailable")

	// ErrUpstreamRateLimited means the upstream answered 429. The
	// *UpstreamError carries RetryAfter when the upstream said how long to
	// wait. Suggested mapping: 503 Service Unavailable with Retry-After.
	ErrUpstreamRateLimited = errors.New("llm: upstream rate limited")

	// ErrUpstreamTimeout means the upstream sent no response headers within
	// the client's first-byte budget (Options.Timeout), or sent the headers
	// of a plain answer but not its body within the same time again.
	// Suggested mapping: 504 Gateway Timeout.
	ErrUpstreamTimeout = errors.New("llm: upstream timeout")

	// ErrUpstreamRejected means the upstream refused the request with a 4xx
	// status other than 429, such as 400 for an unknown model or 401 for a
	// bad upstream key. The *UpstreamError keeps the upstream's error body.
	ErrUpstreamRejected = errors.New("llm: upstream rejected request")
)

// maxErrorBody caps how much of an upstream error body is kept: enough for
// any OpenAI-shaped error object, small enough that a misbehaving upstream
// cannot make us buffer megabytes of HTML.
const maxErrorBody = 64 << 10

// UpstreamError describes a failed call to an upstream. It unwraps to its
// Kind, so errors.Is(err, ErrUpstreamTimeout) and friends work on it.
type UpstreamError struct {
	// Kind is one of ErrUpstreamUnavailable, ErrUpstreamRateLimited,
	// ErrUpstreamTimeout or ErrUpstreamRejected.
	Kind error
	// Status is the upstream's HTTP status, or 0 when no response arrived.
	Status int
	// RetryAfter is the wait the upstream asked for (Retry-After in seconds
	// or as an HTTP date, or OpenAI's retry-after-ms), or 0 when it gave none.
	RetryAfter time.Duration
	// Body is the upstream's error body, capped at 64 KiB, so a 4xx can be
	// passed through to the caller in OpenAI's own shape. The upstream API
	// key, should the upstream echo it, is already redacted. Beware that a
	// 401 or 403 here concerns the gateway's upstream key, not the caller's.
	Body []byte
	// Upstream is the configured name of the upstream (Options.Name).
	Upstream string

	// detail is a short, already sanitised summary (a network error
	// without its URL, or the upstream's error type and code) for logs.
	detail string
	// connection is set when the call failed in the network (refused,
	// reset, cut off) rather than with an answer, so a Router knows a
	// second attempt may fare better.
	connection bool
}

// Error returns a one-line summary that is safe to log: it names the kind,
// upstream and status and never includes the request, the upstream's error
// message text or any credential.
func (e *UpstreamError) Error() string {
	var b strings.Builder
	if e.Kind != nil {
		b.WriteString(e.Kind.Error())
	} else {
		b.WriteString("llm: upstream error")
	}
	if e.Upstream != "" {
		b.WriteString(" (")
		b.WriteString(e.Upstream)
		b.WriteString(")")
	}
	if e.Status != 0 {
		b.WriteString(": status ")
		b.WriteString(strconv.Itoa(e.Status))
	}
	if e.RetryAfter > 0 {
		b.WriteString(", retry after ")
		b.WriteString(e.RetryAfter.String())
	}
	if e.detail != "" {
		b.WriteString(": ")
		b.WriteString(e.detail)
	}
	return b.String()
}

// Unwrap returns the Kind so that errors.Is matches the sentinels.
func (e *UpstreamError) Unwrap() error { return e.Kind }

// kindForStatus sorts a non-2xx upstream status into one of the sentinels.
func kindForStatus(status int) error {
	switch {
	case status == http.StatusTooManyRequests:
		return ErrUpstreamRateLimited
	case status >= 400 && status < 500:
		return ErrUpstreamRejected
	default:
		// 5xx, and 1xx/3xx which an API endpoint has no business sending
		// (redirects are deliberately not followed, see newHTTPClient).
		return ErrUpstreamUnavailable
	}
}

// parseRetryAfter reads how long the upstream wants us to wait. OpenAI sends
// a millisecond-precise retry-after-ms next to the standard header, so that
// one wins when valid. Negative or unparsable values give 0.
func parseRetryAfter(h http.Header, now time.Time) time.Duration {
	if v := h.Get("Retry-After-Ms"); v != "" {
		if ms, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && ms > 0 && ms < float64(time.Duration(1<<62)/time.Millisecond) {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		// Guard the multiplication: an absurd value must not overflow
		// into a negative duration.
		if secs <= 0 || secs > int64(time.Duration(1<<62)/time.Second) {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// errorSummary extracts the machine-readable "type" and "code" of an
// OpenAI-shaped error body for the log line. The human "message" is left
// out on purpose: upstreams echo request content and key fragments there.
func errorSummary(body []byte) string {
	var envelope struct {
		Error struct {
			Type json.RawMessage `json:"type"`
			Code json.RawMessage `json:"code"`
		} `json:"error"`
	}
	if len(body) == 0 || json.Unmarshal(body, &envelope) != nil {
		return ""
	}
	var parts []string
	if s := safeToken(envelope.Error.Type); s != "" {
		parts = append(parts, "type="+s)
	}
	if s := safeToken(envelope.Error.Code); s != "" {
		parts = append(parts, "code="+s)
	}
	return strings.Join(parts, " ")
}

// safeToken returns a JSON string or number as text when it looks like an
// identifier (short, letters, digits and a few separators); anything else
// is dropped rather than risk logging free text.
func safeToken(raw json.RawMessage) string {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		// Some upstreams send numeric codes.
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return ""
		}
		s = n.String()
	}
	if s == "" || len(s) > 64 {
		return ""
	}
	for _, r := range s {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
			r == '_' || r == '-' || r == '.'
		if !ok {
			return ""
		}
	}
	return s
}

// redactKey removes every occurrence of key from b. The upstream key is
// ours, not the end user's, so it must not travel back to them inside a
// passed-through error body.
func redactKey(b []byte, key string) []byte {
	if key == "" || !bytes.Contains(b, []byte(key)) {
		return b
	}
	return bytes.ReplaceAll(b, []byte(key), []byte("[redacted]"))
}

// redactKeyString is redactKey for strings.
func redactKeyString(s, key string) string {
	if key == "" {
		return s
	}
	return strings.ReplaceAll(s, key, "[redacted]")
}

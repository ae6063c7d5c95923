package llm

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultTimeout is the first-byte budget used when Options.Timeout is zero.
// It is generous because a non-streamed completion only sends its headers
// once the whole answer has been generated.
const DefaultTimeout = 60 * time.Second

// maxResponseBody caps a plain (non-streamed) response body. Real chat and
// embedding answers are far smaller; the cap stops a broken upstream from
// exhausting our memory.
const maxResponseBody = 32 << 20

// Options configures a Client.
type Options struct {
	// BaseURL is the API root including its version path, for example
	// "https://api.openai.com/v1". A trailing slash is ignored.
	BaseURL string
	// APIKey is the gateway's own upstream key, sent as a bearer token.
	// Empty means no Authorization header (for local upstreams).
	APIKey string
	// Timeout is the whole budget from sending the request until the
	// upstream's response headers arrive. Once they have, the timer stops,
	// so a long stream is not cut; only the caller's context ends it.
	// A plain (non-streamed) answer's body, which a real upstream sends
	// right after its headers, gets a second budget of the same length.
	// Zero means DefaultTimeout.
	Timeout time.Duration
	// Transport overrides the HTTP transport, mainly for tests. When nil,
	// the client builds one transport tuned for many concurrent calls to a
	// single host and keeps it for its lifetime.
	Transport http.RoundTripper
	// Name identifies the upstream in errors and logs. When empty, the
	// BaseURL's host is used.
	Name string
}

// Client calls one OpenAI-compatible upstream. It is safe for concurrent
// use; build one per upstream and share it so connections are reused.
//
// The client takes no headers from the caller: only the gateway's own key is
// ever sent, so an end user's credentials cannot leak upstream.
type Client struct {
	name   string
	apiKey string // kept only to redact it from anything we report
	// The endpoints are parsed once; each request takes a copy.
	chatURL       *url.URL
	embeddingsURL *url.URL
	modelsURL     *url.URL
	timeout       time.Duration
	maxBody       int64
	transport     http.RoundTripper

	// Header values are built once and shared by every request; the
	// transport only reads them, so this saves allocations per call.
	authValue     []string
	jsonValue     []string
	sseValue      []string
	identityValue []string
}

// Response is a plain (non-streamed) upstream answer.
type Response struct {
	// Body is the upstream's JSON body, byte for byte.
	Body []byte
	// Usage is the token usage the upstream reported, or zero when it
	// reported none.
	Usage Usage
	// Model is the "model" field of the answer, which may be more specific
	// than the requested one (for example a dated snapshot).
	Model string
	// Status is the upstream's HTTP status (a 2xx).
	Status int

	// valid records that Body was checked to be well-formed JSON when it
	// was read, so Content need not check it again.
	valid bool
}

// Content returns choices[0].message.content of the answer, as
// [FirstMessageContent] does. It skips the JSON well-formedness check when
// the Client already made it while reading the answer.
func (r *Response) Content() (string, error) {
	return messageContent(r.Body, r.valid)
}

// errFirstByteTimeout is the cancellation cause set by the first-byte
// timer, so a timeout can be told apart from the caller going away.
var errFirstByteTimeout = errors.New("llm: first-byte budget exhausted")

// errBodyTimeout is the cancellation cause set when a plain answer's body
// does not arrive in time after its headers.
var errBodyTimeout = errors.New("llm: response body budget exhausted")

// errBodyTooLarge reports a plain response body beyond maxResponseBody.
var errBodyTooLarge = errors.New("response body too large")

// NewClient returns a Client for the upstream described by opts. It fails
// when BaseURL is not an absolute http or https URL or Timeout is negative.
func NewClient(opts Options) (*Client, error) {
	base := strings.TrimRight(strings.TrimSpace(opts.BaseURL), "/")
	u, err := url.Parse(base)
	if err != nil {
		// url.Error quotes the URL, which may carry credentials; say
		// only what is wrong with it.
		return nil, errors.New("llm: base URL is not a valid URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("llm: base URL must be an absolute http or https URL, got scheme %q", u.Scheme)
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("llm: timeout must not be negative, got %s", opts.Timeout)
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	name := opts.Name
	if name == "" {
		name = u.Host
	}
	transport := opts.Transport
	if transport == nil {
		transport = NewTransport()
	}
	c := &Client{
		name:          name,
		apiKey:        opts.APIKey,
		chatURL:       u.JoinPath("chat", "completions"),
		embeddingsURL: u.JoinPath("embeddings"),
		modelsURL:     u.JoinPath("models"),
		timeout:       timeout,
		maxBody:       maxResponseBody,
		// The transport is called directly, not through an http.Client:
		// a client's redirect machinery copies every request's headers
		// (a few µs per call) to offer what we refuse anyway. A redirect
		// would replay our key at another address (or turn the POST into
		// a GET); an API endpoint that redirects is misconfigured, so a
		// 3xx is reported (statusError), never followed. There is no
		// overall timeout either, which would also cut long streams: the
		// first-byte timer in send bounds the wait instead.
		transport:     transport,
		jsonValue:     []string{"application/json"},
		sseValue:      []string{"text/event-stream"},
		identityValue: []string{"identity"},
	}
	if opts.APIKey != "" {
		c.authValue = []string{"Bearer " + opts.APIKey}
	} else if u.User != nil {
		// What an http.Client does with credentials in the URL, and
		// only when no key is configured.
		pw, _ := u.User.Password()
		c.authValue = []string{"Basic " + base64.StdEncoding.EncodeToString([]byte(u.User.Username()+":"+pw))}
	}
	return c, nil
}

// NewTransport builds the transport shared by all calls of one client. The
// gateway talks to few hosts with many concurrent requests, so the idle pool
// per host is much larger than net/http's default of 2; otherwise bursts
// would open and tear down connections (and TLS sessions) constantly.
//
// No proxy is configured, because environment variables are read only by
// the config package; pass a Transport to go through a proxy.
// ResponseHeaderTimeout is left unset on purpose: the client's own
// first-byte timer covers that, including dial and TLS time.
func NewTransport() *http.Transport {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// Complete sends a chat-completions request body (JSON that already names
// the model) and returns the upstream's answer untouched, with the usage
// and model read from it.
func (c *Client) Complete(ctx context.Context, body []byte) (*Response, error) {
	return c.post(ctx, c.chatURL, body, c.timeout)
}

// Embeddings sends an embeddings request body to the upstream's
// /embeddings endpoint and returns its answer untouched, with the usage
// read from it.
func (c *Client) Embeddings(ctx context.Context, body []byte) (*Response, error) {
	return c.post(ctx, c.embeddingsURL, body, c.timeout)
}

// Models returns the body of the upstream's GET /models answer.
func (c *Client) Models(ctx context.Context) ([]byte, error) {
	return c.models(ctx, c.timeout)
}

// models is Models with an explicit budget, which a Router shrinks to what
// is left of its own.
func (c *Client) models(ctx context.Context, budget time.Duration) ([]byte, error) {
	raw, status, err := c.fetch(ctx, http.MethodGet, c.modelsURL, nil, budget)
	if err != nil {
		return nil, err
	}
	if !json.Valid(raw) {
		return nil, &UpstreamError{Kind: ErrUpstreamUnavailable, Status: status, Upstream: c.name, detail: "model list is not valid JSON"}
	}
	return raw, nil
}

// Stream sends a chat-completions request body that already has
// "stream": true and returns as soon as the upstream has answered 200 with
// its headers, before any event is read. Errors before that point are
// returned here, so the caller can still choose an HTTP status; errors
// after it come from Stream.Next. The caller must Close the stream.
func (c *Client) Stream(ctx context.Context, body []byte) (*Stream, error) {
	return c.stream(ctx, body, c.timeout)
}

// stream is Stream with an explicit first-byte budget.
func (c *Client) stream(ctx context.Context, body []byte, budget time.Duration) (*Stream, error) {
	resp, cancel, err := c.send(ctx, http.MethodPost, c.chatURL, body, true, budget)
	if err != nil {
		return nil, err
	}
	if mediaType(resp.Header.Get("Content-Type")) == "application/json" {
		// An upstream that ignored "stream": true (or reports an error
		// with a 200) sends one JSON document. Read as events it would
		// look like an empty answer, so say what happened instead.
		e := &UpstreamError{Kind: ErrUpstreamUnavailable, Status: resp.StatusCode, Upstream: c.name, detail: "expected an event stream, got JSON"}
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		e.Body = redactKey(raw, c.apiKey)
		resp.Body.Close()
		cancel(nil)
		return nil, e
	}
	return newStream(ctx, resp.Body, cancel, c.name), nil
}

// mediaType returns the lower-cased media type of a Content-Type value,
// without parameters such as charset.
func mediaType(contentType string) string {
	if i := strings.IndexByte(contentType, ';'); i >= 0 {
		contentType = contentType[:i]
	}
	return strings.ToLower(strings.TrimSpace(contentType))
}

// post sends a JSON body and reads the plain JSON answer within budget
// (first byte) plus budget again (body).
func (c *Client) post(ctx context.Context, target *url.URL, body []byte, budget time.Duration) (*Response, error) {
	raw, status, err := c.fetch(ctx, http.MethodPost, target, body, budget)
	if err != nil {
		return nil, err
	}
	meta, err := readMeta(raw)
	if err != nil {
		return nil, &UpstreamError{Kind: ErrUpstreamUnavailable, Status: status, Upstream: c.name, detail: "response body is not a JSON object"}
	}
	// readMeta refuses a body that is not well-formed JSON.
	return &Response{Body: raw, Usage: meta.Usage, Model: meta.Model, Status: status, valid: true}, nil
}

// fetch performs a plain call and reads the whole (capped) body.
func (c *Client) fetch(ctx context.Context, method string, target *url.URL, body []byte, budget time.Duration) ([]byte, int, error) {
	resp, cancel, err := c.send(ctx, method, target, body, false, budget)
	if err != nil {
		return nil, 0, err
	}
	// Deferred calls run last-in first-out: the body is closed (after
	// having been read to EOF, which returns the connection to the pool)
	// before the request context is released.
	defer cancel(nil)
	defer resp.Body.Close()

	// A plain answer is complete when its headers are sent, so the body
	// should follow at once. An upstream that sends headers and then
	// stalls would otherwise hold the call for as long as the caller
	// waits, so the body gets a budget of its own, equal to the first.
	bodyTimer := time.AfterFunc(budget, func() { cancel(errBodyTimeout) })
	raw, err := readBody(resp.Body, c.maxBody, resp.ContentLength)
	bodyTimer.Stop()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, 0, c.callerGone(ctxErr)
		}
		if errors.Is(context.Cause(resp.Request.Context()), errBodyTimeout) {
			return nil, 0, &UpstreamError{Kind: ErrUpstreamTimeout, Status: resp.StatusCode, Upstream: c.name,
				detail: "response body not complete within " + budget.String()}
		}
		detail := "reading response body: " + c.netDetail(err)
		if errors.Is(err, errBodyTooLarge) {
			detail = fmt.Sprintf("response body exceeds %d bytes", c.maxBody)
		}
		// A body cut off by the network is a connection failure like any
		// other; one that is merely too large is not worth repeating.
		return nil, 0, &UpstreamError{Kind: ErrUpstreamUnavailable, Status: resp.StatusCode, Upstream: c.name, detail: detail,
			connection: !errors.Is(err, errBodyTooLarge)}
	}
	return raw, resp.StatusCode, nil
}

// send issues one request under the first-byte budget. On success the
// response has a 2xx status, its body is unread, and the returned cancel
// func must be called once the body is done with. The budget's timer is
// stopped as soon as headers arrive, so reading the body is bounded only by
// ctx from then on.
func (c *Client) send(ctx context.Context, method string, target *url.URL, body []byte, stream bool, budget time.Duration) (*http.Response, context.CancelCauseFunc, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, c.callerGone(err)
	}
	reqCtx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(budget, func() { cancel(errFirstByteTimeout) })

	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	// An empty URL here and the endpoint's copy below spare parsing the
	// endpoint again on every call.
	req, err := http.NewRequestWithContext(reqCtx, method, "", reader)
	if err != nil {
		timer.Stop()
		cancel(nil)
		return nil, nil, fmt.Errorf("llm: %s: build request: %w", c.name, err)
	}
	*req.URL = *target
	req.Host = target.Host
	if body != nil {
		req.Header["Content-Type"] = c.jsonValue
	}
	if stream {
		req.Header["Accept"] = c.sseValue
		// Compressed event streams get buffered by the decompressor and
		// arrive in bursts; ask for plain bytes so deltas flow at once.
		req.Header["Accept-Encoding"] = c.identityValue
	} else {
		req.Header["Accept"] = c.jsonValue
	}
	if c.authValue != nil {
		req.Header["Authorization"] = c.authValue
	}

	resp, err := c.transport.RoundTrip(req)
	if err != nil {
		timer.Stop()
		// Classify before cancel(nil): afterwards the cause would read
		// as a plain cancellation.
		e := c.transportError(ctx, reqCtx, err, budget)
		cancel(nil)
		return nil, nil, e
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		// The error body is read while the timer still runs, so an
		// upstream that sends a status and then stalls cannot hold us.
		e := c.statusError(resp)
		timer.Stop()
		resp.Body.Close()
		cancel(nil)
		return nil, nil, e
	}
	if !timer.Stop() {
		// The timer fired just as the headers arrived; the request
		// context is cancelled and the body unreadable. It is the
		// timeout it looks like.
		resp.Body.Close()
		cancel(nil)
		if err := ctx.Err(); err != nil {
			return nil, nil, c.callerGone(err)
		}
		return nil, nil, c.timeoutError(budget)
	}
	return resp, cancel, nil
}

// transportError classifies a failure of http.Client.Do.
func (c *Client) transportError(parent, reqCtx context.Context, err error, budget time.Duration) error {
	// The caller leaving wins: nobody is waiting for a 5xx any more, and
	// the HTTP layer must not count it against the upstream.
	if ctxErr := parent.Err(); ctxErr != nil {
		return c.callerGone(ctxErr)
	}
	if errors.Is(context.Cause(reqCtx), errFirstByteTimeout) {
		return c.timeoutError(budget)
	}
	return &UpstreamError{Kind: ErrUpstreamUnavailable, Upstream: c.name, detail: c.netDetail(err), connection: true}
}

// statusError builds the error for a non-2xx answer, keeping its body.
func (c *Client) statusError(resp *http.Response) *UpstreamError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	body = redactKey(body, c.apiKey)
	if len(body) == 0 {
		body = nil
	}
	detail := errorSummary(body)
	if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode >= 300 && resp.StatusCode < 400 {
		detail = "redirect not followed"
	}
	return &UpstreamError{
		Kind:       kindForStatus(resp.StatusCode),
		Status:     resp.StatusCode,
		RetryAfter: parseRetryAfter(resp.Header, time.Now()),
		Body:       body,
		Upstream:   c.name,
		detail:     detail,
	}
}

func (c *Client) timeoutError(budget time.Duration) *UpstreamError {
	return &UpstreamError{
		Kind:     ErrUpstreamTimeout,
		Upstream: c.name,
		detail:   "no response headers within " + budget.String(),
	}
}

// callerGone wraps the caller's own context error (context.Canceled when
// the client disconnected), which is deliberately not an UpstreamError.
func (c *Client) callerGone(ctxErr error) error {
	return fmt.Errorf("llm: %s: call abandoned by caller: %w", c.name, ctxErr)
}

// netDetail describes a transport error for logs. The *url.Error wrapper is
// dropped because it repeats the full URL, which for some upstreams carries
// a key in its query string; the key itself is redacted as a last resort.
func (c *Client) netDetail(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := redactKeyString(err.Error(), c.apiKey)
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	return msg
}

// readBody reads r to EOF, failing with errBodyTooLarge past limit bytes.
// When the length is known up front the buffer is allocated once, with one
// spare byte so the final zero-length read that sees EOF needs no growth.
// Reading to EOF (rather than exactly Content-Length bytes) is what lets
// net/http put the connection back into the idle pool.
func readBody(r io.Reader, limit, sizeHint int64) ([]byte, error) {
	size := int64(512)
	if sizeHint >= 0 && sizeHint <= limit {
		size = sizeHint + 1
	}
	buf := make([]byte, 0, size)
	lr := io.LimitReader(r, limit+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := lr.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if int64(len(buf)) > limit {
		return nil, errBodyTooLarge
	}
	return buf, nil
}

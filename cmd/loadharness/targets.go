package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
)

// target is one thing the harness loads: the upstream itself, the bare
// reverse proxy, or a gateway route. Each has its own HTTP client so that its
// connections stay warm across phases and never mix with another target's.
type target struct {
	id     string // short name, used by -targets and in the tables
	about  string // one line for the legend
	url    string
	header http.Header
	// body returns the n-th request body. Unique targets never repeat one,
	// so the gateway's cache always misses; cache-hit targets cycle through
	// a small pre-warmed pool.
	body   func(n uint64) []byte
	check  func(status int, body []byte) error // validates one answer before the run
	stream bool
	client *http.Client
	warm   func() error // pre-warms caches (cache-hit targets only)
}

// runNonce keeps bodies unique across runs against a shared Redis cache.
var runNonce = strconv.FormatInt(time.Now().UnixNano(), 36)

// prompt is the user message of request n: unique per run and request, and
// about as long as a short real prompt.
func prompt(buf []byte, n uint64) []byte {
	buf = append(buf, "harness "...)
	buf = append(buf, runNonce...)
	buf = append(buf, ' ')
	buf = strconv.AppendUint(buf, n, 10)
	buf = append(buf, ": summarise the trade-offs of token-bucket rate limiting for an API gateway in three sentences, "+
		"mentioning burst capacity, refill rate and fairness between users."...)
	return buf
}

// openAIBody is a chat-completions request, the shape direct, proxy and
// /v1 targets send.
func openAIBody(stream bool) func(n uint64) []byte {
	return func(n uint64) []byte {
		b := make([]byte, 0, 320)
		b = append(b, `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"`...)
		b = prompt(b, n)
		b = append(b, `"}]`...)
		if stream {
			b = append(b, `,"stream":true`...)
		}
		return append(b, '}')
	}
}

// responsesBody is a /v1/responses request with the same prompt, stored
// (the default), so the target pays the store's write per response.
func responsesBody(stream bool) func(n uint64) []byte {
	return func(n uint64) []byte {
		b := make([]byte, 0, 320)
		b = append(b, `{"model":"gpt-4o-mini","input":"`...)
		b = prompt(b, n)
		b = append(b, '"')
		if stream {
			b = append(b, `,"stream":true`...)
		}
		return append(b, '}')
	}
}

// checkResponse accepts a completed Responses API answer with text.
func checkResponse(status int, body []byte) error {
	if status != http.StatusOK {
		return fmt.Errorf("status %d: %.300s", status, body)
	}
	var r struct {
		Status string `json:"status"`
		Output []struct {
			Content []struct {
				Text string `json:"text"`
			} `json:"content"`
		} `json:"output"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Status != "completed" || len(r.Output) == 0 ||
		len(r.Output[0].Content) == 0 || r.Output[0].Content[0].Text == "" {
		return fmt.Errorf("not a completed response: %.300s", body)
	}
	return nil
}

// checkResponsesStream accepts a Responses event stream that ends in
// response.completed after some text.
func checkResponsesStream(status int, body []byte) error {
	if status != http.StatusOK {
		return fmt.Errorf("status %d: %.300s", status, body)
	}
	if !bytes.Contains(body, []byte(`data: {"type":"response.completed"`)) || !bytes.Contains(body, []byte(`"response.output_text.delta"`)) {
		return fmt.Errorf("not a complete Responses event stream: %.300s", body)
	}
	return nil
}

// chatBody is a /chat request.
func chatBody(n uint64) []byte {
	b := make([]byte, 0, 256)
	b = append(b, `{"message":"`...)
	b = prompt(b, n)
	return append(b, `"}`...)
}

// pooled turns a unique body function into one cycling through size bodies.
func pooled(body func(uint64) []byte, size uint64) func(uint64) []byte {
	return func(n uint64) []byte { return body(n % size) }
}

func newClient(conns int) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil, // loopback only, whatever the environment says
			DialContext:         dialer.DialContext,
			MaxIdleConns:        conns,
			MaxIdleConnsPerHost: conns,
			IdleConnTimeout:     2 * time.Minute,
			DisableCompression:  true,
		},
	}
}

// newProxy is the floor: the standard library's reverse proxy with a
// transport tuned like the gateway's own upstream client, so a small idle
// pool does not make the floor look worse than it is.
func newProxy(upstreamBase string) (string, func(), error) {
	u, err := url.Parse(upstreamBase)
	if err != nil {
		return "", nil, err
	}
	u.Path = ""
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			if pr.Out.ContentLength > 0 {
				pr.Out.Body = &exactBody{ReadCloser: pr.Out.Body, left: pr.Out.ContentLength}
			}
		},
		Transport: &http.Transport{
			DialContext:         dialer.DialContext,
			MaxIdleConns:        1024,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     90 * time.Second,
		},
		ErrorLog: nil,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go labelled("server", "proxy", func() { srv.Serve(ln) })
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// exactBody ends a request body after its declared length without reading
// the underlying body again. Without it about 1% of proxied streams are cut:
// the transport reads once more past Content-Length, the server has already
// closed the inbound body because the response began, and the transport
// drops the upstream connection mid-stream (golang/go#40747).
type exactBody struct {
	io.ReadCloser
	left int64
}

func (b *exactBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	if b.left <= 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

// checkChatCompletion accepts an OpenAI chat completion.
func checkChatCompletion(status int, body []byte) error {
	if status != http.StatusOK {
		return fmt.Errorf("status %d: %.300s", status, body)
	}
	var c struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(body, &c); err != nil || len(c.Choices) == 0 || c.Choices[0].Message.Content == "" {
		return fmt.Errorf("not a chat completion: %.300s", body)
	}
	return nil
}

// checkChat accepts a /chat answer that came from the model, or, with hit,
// from the cache.
func checkChat(hit bool) func(int, []byte) error {
	return func(status int, body []byte) error {
		if status != http.StatusOK {
			return fmt.Errorf("status %d: %.300s", status, body)
		}
		var c struct {
			Response  string `json:"response"`
			FromCache bool   `json:"from_cache"`
		}
		if err := json.Unmarshal(body, &c); err != nil || c.Response == "" {
			return fmt.Errorf("not a /chat answer: %.300s", body)
		}
		if c.FromCache != hit {
			return fmt.Errorf("from_cache = %v, want %v", c.FromCache, hit)
		}
		return nil
	}
}

// checkStream accepts an event stream that ends in [DONE].
func checkStream(status int, body []byte) error {
	if status != http.StatusOK {
		return fmt.Errorf("status %d: %.300s", status, body)
	}
	if !bytes.Contains(body, []byte("data: [DONE]")) || !bytes.Contains(body, []byte(`"delta"`)) {
		return fmt.Errorf("not a complete event stream: %.300s", body)
	}
	return nil
}

// do sends one request of t and returns the answer.
func (t *target) do(n uint64) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, t.url, bytes.NewReader(t.body(n)))
	if err != nil {
		return 0, nil, err
	}
	for k, v := range t.header {
		req.Header[k] = v
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// preflight sends one request and checks the answer, so a misconfigured
// target fails the run at once instead of producing a table of errors.
func (t *target) preflight(seq *atomic.Uint64) error {
	if t.warm != nil {
		if err := t.warm(); err != nil {
			return fmt.Errorf("%s: warming: %w", t.id, err)
		}
	}
	status, body, err := t.do(seq.Add(1))
	if err != nil {
		return fmt.Errorf("%s: %w", t.id, err)
	}
	if err := t.check(status, body); err != nil {
		return fmt.Errorf("%s: %w", t.id, err)
	}
	return nil
}

// warmPool sends every body of a pool once, so later requests hit the cache.
func warmPool(t *target, size uint64) func() error {
	return func() error {
		for i := uint64(0); i < size; i++ {
			status, body, err := t.do(i)
			if err != nil {
				return err
			}
			if status != http.StatusOK {
				return fmt.Errorf("status %d: %.300s", status, body)
			}
		}
		return nil
	}
}

// probe reports whether a route exists on a gateway: anything but 404/405.
func probe(client *http.Client, url string, header http.Header, body []byte) (bool, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed, nil
}

var errNoTargets = errors.New("no targets selected")

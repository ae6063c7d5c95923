package llm

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/google/go-cmp/cmp"
)

const testKey = "sk-test-0123456789-secret"

// provider is the method set handlers rely on; both providers must keep it.
type provider interface {
	Complete(ctx context.Context, body []byte) (*Response, error)
	Stream(ctx context.Context, body []byte) (*Stream, error)
	Embeddings(ctx context.Context, body []byte) (*Response, error)
	Models(ctx context.Context) ([]byte, error)
}

var (
	_ provider = (*Client)(nil)
	_ provider = (*Mock)(nil)
)

// upstream starts an httptest server for h and closes it with the test.
func upstream(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// clientFor builds a Client for srv with the test key and a short budget;
// change adjusts the options first.
func clientFor(t *testing.T, srv *httptest.Server, change func(*Options)) *Client {
	t.Helper()
	opts := Options{BaseURL: srv.URL + "/v1/", APIKey: testKey, Timeout: 2 * time.Second, Name: "test-upstream"}
	if change != nil {
		change(&opts)
	}
	c, err := NewClient(opts)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c
}

// signal records that something happened, without blocking twice.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// hangUntilCancelled is a handler that never answers and reports when its
// request context is cancelled (the client gave up on the call). It reads
// the request body first, as a real upstream does; net/http only watches
// the connection for a disconnect once the body has been consumed.
func hangUntilCancelled(started, cancelled chan struct{}) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		signal(started)
		select {
		case <-r.Context().Done():
			signal(cancelled)
		case <-time.After(5 * time.Second):
		}
	}
}

func TestCompletePassesBodyThroughAndReadsUsage(t *testing.T) {
	t.Parallel()
	request := []byte(`{"model":"gpt-test","messages":[{"role":"user","content":"hi"}]}`)
	// Odd spacing and field order on purpose: the body must come back as
	// sent, not re-encoded.
	answer := []byte(`{ "id":"chatcmpl-1","object":"chat.completion","model":"gpt-test-2025",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12},"x_extra":{"kept":true}}` + "\n")

	var gotHeader http.Header
	var gotBody []byte
	var gotMethod, gotPath string
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		gotHeader, gotMethod, gotPath = r.Header.Clone(), r.Method, r.URL.Path
		gotBody, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(answer)
	})
	c := clientFor(t, srv, nil)

	resp, err := c.Complete(context.Background(), request)
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if !bytes.Equal(resp.Body, answer) {
		t.Errorf("body changed in transit:\n got %q\nwant %q", resp.Body, answer)
	}
	// valid: the Client checked the body, so Content need not.
	want := Response{Body: answer, Usage: Usage{PromptTokens: 9, CompletionTokens: 3, TotalTokens: 12}, Model: "gpt-test-2025", Status: 200, valid: true}
	if diff := cmp.Diff(want, *resp, cmp.AllowUnexported(Response{})); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
	if gotMethod != http.MethodPost || gotPath != "/v1/chat/completions" {
		t.Errorf("request went to %s %s, want POST /v1/chat/completions", gotMethod, gotPath)
	}
	if !bytes.Equal(gotBody, request) {
		t.Errorf("upstream got body %q, want %q", gotBody, request)
	}
	if got := gotHeader.Get("Authorization"); got != "Bearer "+testKey {
		t.Errorf("Authorization = %q, want the configured key", got)
	}
	if got := gotHeader.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
	// Only headers the client itself decides may reach the upstream.
	allowed := map[string]bool{"Authorization": true, "Content-Type": true, "Content-Length": true,
		"Accept": true, "Accept-Encoding": true, "User-Agent": true}
	for name := range gotHeader {
		if !allowed[name] {
			t.Errorf("unexpected header %q sent upstream", name)
		}
	}
}

func TestNoAuthorizationWithoutKey(t *testing.T) {
	t.Parallel()
	var auth []string
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Values("Authorization")
		w.Write([]byte(`{"model":"m"}`))
	})
	c := clientFor(t, srv, func(o *Options) { o.APIKey = "" })
	if _, err := c.Complete(context.Background(), []byte(`{}`)); err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if len(auth) != 0 {
		t.Errorf("Authorization sent without a key: %q", auth)
	}
}

// TestCredentialsInBaseURL: user and password in OPENAI_BASE_URL (some
// self-hosted upstreams sit behind basic auth) are sent as basic auth when no
// key is configured, and a key wins over them.
func TestCredentialsInBaseURL(t *testing.T) {
	t.Parallel()
	var auth atomic.Value
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		auth.Store(strings.Join(r.Header.Values("Authorization"), ","))
		w.Write([]byte(`{"model":"m"}`))
	})
	withUser := strings.Replace(srv.URL, "http://", "http://gw:p%40ss@", 1) + "/v1"
	for _, tc := range []struct{ key, want string }{
		{"", "Basic " + base64.StdEncoding.EncodeToString([]byte("gw:p@ss"))},
		{testKey, "Bearer " + testKey},
	} {
		c := clientFor(t, srv, func(o *Options) { o.BaseURL, o.APIKey = withUser, tc.key })
		if _, err := c.Complete(context.Background(), []byte(`{}`)); err != nil {
			t.Fatalf("Complete: %v", err)
		}
		if got := auth.Load(); got != tc.want {
			t.Errorf("key %q: Authorization = %q, want %q", tc.key, got, tc.want)
		}
	}
}

func TestCompleteWithoutUsage(t *testing.T) {
	t.Parallel()
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"model":"m","choices":[],"usage":null}`))
	})
	resp, err := clientFor(t, srv, nil).Complete(context.Background(), []byte(`{}`))
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if resp.Usage != (Usage{}) {
		t.Errorf("usage = %+v, want zero", resp.Usage)
	}
}

func TestUsageTotalFilledWhenMissing(t *testing.T) {
	t.Parallel()
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"model":"m","usage":{"prompt_tokens":4,"completion_tokens":5}}`))
	})
	resp, err := clientFor(t, srv, nil).Complete(context.Background(), []byte(`{}`))
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if want := (Usage{PromptTokens: 4, CompletionTokens: 5, TotalTokens: 9}); resp.Usage != want {
		t.Errorf("usage = %+v, want %+v", resp.Usage, want)
	}
}

func TestStatusErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		kind       error
		retryAfter time.Duration
	}{
		{name: "500", status: 500, body: `{"error":{"message":"boom"}}`, kind: ErrUpstreamUnavailable},
		{name: "502", status: 502, body: "<html>bad gateway</html>", kind: ErrUpstreamUnavailable},
		{name: "503 with retry-after", status: 503, header: map[string]string{"Retry-After": "3"}, kind: ErrUpstreamUnavailable, retryAfter: 3 * time.Second},
		{name: "429", status: 429, header: map[string]string{"Retry-After": "7"}, body: `{"error":{"type":"rate_limit_exceeded"}}`, kind: ErrUpstreamRateLimited, retryAfter: 7 * time.Second},
		{name: "429 ms", status: 429, header: map[string]string{"Retry-After": "7", "Retry-After-Ms": "1500"}, kind: ErrUpstreamRateLimited, retryAfter: 1500 * time.Millisecond},
		{name: "429 without retry-after", status: 429, kind: ErrUpstreamRateLimited},
		{name: "400", status: 400, body: `{"error":{"message":"The model x does not exist","type":"invalid_request_error","code":"model_not_found"}}`, kind: ErrUpstreamRejected},
		{name: "401", status: 401, body: `{"error":{"message":"Incorrect API key"}}`, kind: ErrUpstreamRejected},
		{name: "404", status: 404, kind: ErrUpstreamRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tt.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			_, err := clientFor(t, srv, nil).Complete(context.Background(), []byte(`{"model":"x"}`))
			if !errors.Is(err, tt.kind) {
				t.Fatalf("err = %v, want kind %v", err, tt.kind)
			}
			var ue *UpstreamError
			if !errors.As(err, &ue) {
				t.Fatalf("err is %T, want *UpstreamError", err)
			}
			if ue.Status != tt.status {
				t.Errorf("Status = %d, want %d", ue.Status, tt.status)
			}
			if ue.RetryAfter != tt.retryAfter {
				t.Errorf("RetryAfter = %v, want %v", ue.RetryAfter, tt.retryAfter)
			}
			if string(ue.Body) != tt.body {
				t.Errorf("Body = %q, want %q", ue.Body, tt.body)
			}
			if ue.Upstream != "test-upstream" {
				t.Errorf("Upstream = %q", ue.Upstream)
			}
		})
	}
}

func TestErrorBodyIsCapped(t *testing.T) {
	t.Parallel()
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(400)
		w.Write(bytes.Repeat([]byte("x"), maxErrorBody+1000))
	})
	_, err := clientFor(t, srv, nil).Complete(context.Background(), []byte(`{}`))
	var ue *UpstreamError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v, want *UpstreamError", err)
	}
	if len(ue.Body) != maxErrorBody {
		t.Errorf("kept %d bytes of error body, want %d", len(ue.Body), maxErrorBody)
	}
}

func TestRedirectIsNotFollowed(t *testing.T) {
	t.Parallel()
	var followed atomic.Bool
	target := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		followed.Store(true)
		w.Write([]byte(`{}`))
	})
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/v1/chat/completions", http.StatusTemporaryRedirect)
	})
	_, err := clientFor(t, srv, nil).Complete(context.Background(), []byte(`{}`))
	if !errors.Is(err, ErrUpstreamUnavailable) {
		t.Fatalf("err = %v, want ErrUpstreamUnavailable", err)
	}
	if followed.Load() {
		t.Error("redirect was followed, replaying the upstream key elsewhere")
	}
}

func TestConnectionRefused(t *testing.T) {
	t.Parallel()
	c, err := NewClient(Options{BaseURL: "http://" + testkit.ClosedAddr(t) + "/v1", APIKey: testKey, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Complete(context.Background(), []byte(`{}`))
	if !errors.Is(err, ErrUpstreamUnavailable) {
		t.Fatalf("err = %v, want ErrUpstreamUnavailable", err)
	}
	var ue *UpstreamError
	if !errors.As(err, &ue) || ue.Status != 0 {
		t.Errorf("want *UpstreamError with status 0, got %#v", err)
	}
	if _, err := c.Stream(context.Background(), []byte(`{}`)); !errors.Is(err, ErrUpstreamUnavailable) {
		t.Errorf("Stream err = %v, want ErrUpstreamUnavailable", err)
	}
}

func TestMalformedBody(t *testing.T) {
	t.Parallel()
	for _, body := range []string{"not json", "null", `[1,2]`, `{"model":`, ""} {
		t.Run(body, func(t *testing.T) {
			t.Parallel()
			srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, body)
			})
			_, err := clientFor(t, srv, nil).Complete(context.Background(), []byte(`{}`))
			if !errors.Is(err, ErrUpstreamUnavailable) {
				t.Fatalf("err = %v, want ErrUpstreamUnavailable", err)
			}
		})
	}
}

func TestBodyTooLarge(t *testing.T) {
	t.Parallel()
	body := `{"model":"m","padding":"` + strings.Repeat("x", 200) + `"}`
	for _, chunked := range []bool{false, true} {
		t.Run(fmt.Sprintf("chunked=%v", chunked), func(t *testing.T) {
			t.Parallel()
			srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
				if !chunked {
					w.Header().Set("Content-Length", fmt.Sprint(len(body)))
				}
				io.WriteString(w, body)
			})
			c := clientFor(t, srv, nil)
			c.maxBody = 100
			_, err := c.Complete(context.Background(), []byte(`{}`))
			if !errors.Is(err, ErrUpstreamUnavailable) {
				t.Fatalf("err = %v, want ErrUpstreamUnavailable", err)
			}
			c.maxBody = int64(len(body))
			if _, err := c.Complete(context.Background(), []byte(`{}`)); err != nil {
				t.Fatalf("body exactly at the cap: %v", err)
			}
		})
	}
}

func TestFirstByteTimeout(t *testing.T) {
	t.Parallel()
	started, cancelled := make(chan struct{}, 1), make(chan struct{}, 1)
	srv := upstream(t, hangUntilCancelled(started, cancelled))
	c := clientFor(t, srv, func(o *Options) { o.Timeout = 150 * time.Millisecond })

	_, err := c.Complete(context.Background(), []byte(`{}`))
	if !errors.Is(err, ErrUpstreamTimeout) {
		t.Fatalf("err = %v, want ErrUpstreamTimeout", err)
	}
	if errors.Is(err, context.Canceled) {
		t.Errorf("a timeout must not look like the caller leaving: %v", err)
	}
	testkit.Await(t, cancelled, 5*time.Second, "upstream seeing its request cancelled")
}

func TestStalledBodyTimesOut(t *testing.T) {
	t.Parallel()
	cancelled := make(chan struct{}, 1)
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"model":"m","choices":[`)
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
			signal(cancelled)
		case <-time.After(5 * time.Second):
		}
	})
	c := clientFor(t, srv, func(o *Options) { o.Timeout = 150 * time.Millisecond })

	_, err := c.Complete(context.Background(), []byte(`{}`))
	var ue *UpstreamError
	if !errors.Is(err, ErrUpstreamTimeout) || !errors.As(err, &ue) || ue.Status != 200 {
		t.Fatalf("err = %v, want ErrUpstreamTimeout with status 200", err)
	}
	testkit.Await(t, cancelled, 5*time.Second, "upstream seeing its request cancelled")
}

func TestStreamFirstByteTimeout(t *testing.T) {
	t.Parallel()
	started, cancelled := make(chan struct{}, 1), make(chan struct{}, 1)
	srv := upstream(t, hangUntilCancelled(started, cancelled))
	c := clientFor(t, srv, func(o *Options) { o.Timeout = 150 * time.Millisecond })

	_, err := c.Stream(context.Background(), []byte(`{"stream":true}`))
	if !errors.Is(err, ErrUpstreamTimeout) {
		t.Fatalf("err = %v, want ErrUpstreamTimeout", err)
	}
	testkit.Await(t, cancelled, 5*time.Second, "upstream seeing its request cancelled")
}

func TestCallerCancelStopsUpstream(t *testing.T) {
	t.Parallel()
	started, cancelled := make(chan struct{}, 1), make(chan struct{}, 1)
	srv := upstream(t, hangUntilCancelled(started, cancelled))
	c := clientFor(t, srv, nil)

	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	_, err := c.Complete(ctx, []byte(`{}`))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	var ue *UpstreamError
	if errors.As(err, &ue) || errors.Is(err, ErrUpstreamTimeout) {
		t.Errorf("caller cancellation reported as an upstream failure: %v", err)
	}
	testkit.Await(t, cancelled, 5*time.Second, "upstream seeing its request cancelled")
}

func TestAlreadyCancelledContextSendsNothing(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) { calls.Add(1) })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := clientFor(t, srv, nil).Complete(ctx, []byte(`{}`))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if calls.Load() != 0 {
		t.Errorf("upstream called %d times for a dead context", calls.Load())
	}
}

// sse writes one event and flushes it to the client.
func sse(w http.ResponseWriter, payload string) {
	fmt.Fprintf(w, "data: %s\n\n", payload)
	http.NewResponseController(w).Flush()
}

func TestStreamIsNotCutByFirstByteTimer(t *testing.T) {
	t.Parallel()
	const events = 6
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		for i := range events {
			time.Sleep(40 * time.Millisecond) // 240ms in total, beyond the 100ms budget
			sse(w, fmt.Sprintf(`{"choices":[{"delta":{"content":"%d"}}]}`, i))
		}
		sse(w, "[DONE]")
	})
	c := clientFor(t, srv, func(o *Options) { o.Timeout = 100 * time.Millisecond })

	s, err := c.Stream(context.Background(), []byte(`{"stream":true}`))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	defer s.Close()
	var got strings.Builder
	for {
		payload, err := s.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Next after %q: %v", got.String(), err)
		}
		delta, err := StreamDelta(payload)
		if err != nil {
			t.Fatal(err)
		}
		got.WriteString(delta)
	}
	if got.String() != "012345" {
		t.Errorf("deltas = %q, want all six", got.String())
	}
}

func TestStreamRequestHeaders(t *testing.T) {
	t.Parallel()
	var accept, encoding string
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		accept, encoding = r.Header.Get("Accept"), r.Header.Get("Accept-Encoding")
		sse(w, "[DONE]")
	})
	s, err := clientFor(t, srv, nil).Stream(context.Background(), []byte(`{"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if accept != "text/event-stream" || encoding != "identity" {
		t.Errorf("Accept = %q, Accept-Encoding = %q", accept, encoding)
	}
}

func TestStreamErrorStatusBeforeFirstEvent(t *testing.T) {
	t.Parallel()
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "2")
		w.WriteHeader(429)
		io.WriteString(w, `{"error":{"message":"slow down"}}`)
	})
	s, err := clientFor(t, srv, nil).Stream(context.Background(), []byte(`{"stream":true}`))
	if s != nil {
		t.Fatal("got a stream for a 429")
	}
	var ue *UpstreamError
	if !errors.As(err, &ue) || !errors.Is(err, ErrUpstreamRateLimited) || ue.RetryAfter != 2*time.Second {
		t.Fatalf("err = %#v, want rate limited with RetryAfter 2s", err)
	}
}

func TestStreamAnsweredWithJSON(t *testing.T) {
	t.Parallel()
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		io.WriteString(w, `{"choices":[{"message":{"content":"not streamed"}}]}`)
	})
	s, err := clientFor(t, srv, nil).Stream(context.Background(), []byte(`{"stream":true}`))
	if s != nil || !errors.Is(err, ErrUpstreamUnavailable) {
		t.Fatalf("Stream = %v, %v; want ErrUpstreamUnavailable instead of an empty stream", s, err)
	}
}

func TestStreamCutByServer(t *testing.T) {
	t.Parallel()
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		sse(w, `{"choices":[{"delta":{"content":"a"}}]}`)
		sse(w, `{"choices":[{"delta":{"content":"b"}}]}`)
		// Drop the connection without finishing the chunked body.
		panic(http.ErrAbortHandler)
	})
	s, err := clientFor(t, srv, nil).Stream(context.Background(), []byte(`{"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 2 {
		if _, err := s.Next(); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	_, err = s.Next()
	if err == nil || err == io.EOF {
		t.Fatalf("Next after a cut = %v, want an error other than io.EOF", err)
	}
	if !errors.Is(err, ErrUpstreamUnavailable) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("err = %v, want it to wrap ErrUpstreamUnavailable and io.ErrUnexpectedEOF", err)
	}
	if _, again := s.Next(); again != err {
		t.Errorf("error is not sticky: %v then %v", err, again)
	}
}

func TestStreamCallerCancelMidway(t *testing.T) {
	t.Parallel()
	cancelled := make(chan struct{}, 1)
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		sse(w, `{"choices":[{"delta":{"content":"a"}}]}`)
		select {
		case <-r.Context().Done():
			signal(cancelled)
		case <-time.After(5 * time.Second):
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := clientFor(t, srv, nil).Stream(ctx, []byte(`{"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	// Cancel while Next is blocked waiting for the next event.
	go func() {
		time.Sleep(20 * time.Millisecond)
		cancel()
	}()
	_, err = s.Next()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if errors.Is(err, ErrUpstreamUnavailable) {
		t.Errorf("caller cancellation blamed on the upstream: %v", err)
	}
	testkit.Await(t, cancelled, 5*time.Second, "upstream seeing its request cancelled")
}

func TestStreamCloseCancelsUnfinishedUpstream(t *testing.T) {
	t.Parallel()
	cancelled := make(chan struct{}, 1)
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		sse(w, `{"choices":[{"delta":{"content":"a"}}]}`)
		select {
		case <-r.Context().Done():
			signal(cancelled)
		case <-time.After(5 * time.Second):
		}
	})
	s, err := clientFor(t, srv, nil).Stream(context.Background(), []byte(`{"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Next(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	testkit.Await(t, cancelled, 5*time.Second, "upstream seeing its request cancelled")
	if _, err := s.Next(); err == nil || err == io.EOF {
		t.Errorf("Next after Close = %v, want an error", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestConnectionsAreReused(t *testing.T) {
	t.Parallel()
	var dials atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.Header.Get("Accept"), "event-stream") {
			sse(w, `{"choices":[{"delta":{"content":"a"}}],"usage":null}`)
			sse(w, "[DONE]")
			return
		}
		io.WriteString(w, `{"model":"m"}`)
	}))
	srv.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			dials.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := clientFor(t, srv, nil)

	for range 3 {
		if _, err := c.Complete(context.Background(), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		s, err := c.Stream(context.Background(), []byte(`{"stream":true}`))
		if err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := s.Next(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatal(err)
			}
		}
		s.Close()
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("opened %d connections for 6 sequential calls, want 1", n)
	}
}

func TestEmbeddings(t *testing.T) {
	t.Parallel()
	answer := `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2]}],"model":"emb-1","usage":{"prompt_tokens":5,"total_tokens":5}}`
	var path string
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		io.WriteString(w, answer)
	})
	resp, err := clientFor(t, srv, nil).Embeddings(context.Background(), []byte(`{"model":"emb-1","input":"hello"}`))
	if err != nil {
		t.Fatal(err)
	}
	if path != "/v1/embeddings" {
		t.Errorf("path = %q", path)
	}
	want := Response{Body: []byte(answer), Usage: Usage{PromptTokens: 5, TotalTokens: 5}, Model: "emb-1", Status: 200, valid: true}
	if diff := cmp.Diff(want, *resp, cmp.AllowUnexported(Response{})); diff != "" {
		t.Errorf("response (-want +got):\n%s", diff)
	}
}

func TestModels(t *testing.T) {
	t.Parallel()
	answer := `{"object":"list","data":[{"id":"gpt-x","object":"model"}]}`
	var method, path, contentType string
	srv := upstream(t, func(w http.ResponseWriter, r *http.Request) {
		method, path, contentType = r.Method, r.URL.Path, r.Header.Get("Content-Type")
		io.WriteString(w, answer)
	})
	got, err := clientFor(t, srv, nil).Models(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != answer {
		t.Errorf("body = %q", got)
	}
	if method != http.MethodGet || path != "/v1/models" || contentType != "" {
		t.Errorf("request = %s %s (Content-Type %q)", method, path, contentType)
	}

	bad := upstream(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>") })
	if _, err := clientFor(t, bad, nil).Models(context.Background()); !errors.Is(err, ErrUpstreamUnavailable) {
		t.Errorf("invalid model list: err = %v, want ErrUpstreamUnavailable", err)
	}
}

func TestAPIKeyNeverInErrors(t *testing.T) {
	t.Parallel()
	echoKey := func(status int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			auth := r.Header.Get("Authorization")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"error":{"message":"bad key %s","type":"%s","code":"%s"}}`, auth, auth, testKey)
		}
	}
	tests := []struct {
		name    string
		handler http.HandlerFunc
		stream  bool
	}{
		{name: "401 echoing key", handler: echoKey(401)},
		{name: "429 echoing key", handler: echoKey(429)},
		{name: "500 echoing key", handler: echoKey(500)},
		{name: "stream 403 echoing key", handler: echoKey(403), stream: true},
		{name: "malformed body with key", handler: func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "key="+testKey) }},
		{name: "timeout", handler: hangUntilCancelled(make(chan struct{}, 1), make(chan struct{}, 1))},
		{name: "stream cut", stream: true, handler: func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "data: {\"k\":\"%s\"", testKey)
			http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv := upstream(t, tt.handler)
			c := clientFor(t, srv, func(o *Options) { o.Timeout = 150 * time.Millisecond })
			var err error
			if tt.stream {
				var s *Stream
				s, err = c.Stream(context.Background(), []byte(`{"stream":true}`))
				if err == nil {
					defer s.Close()
					for err == nil {
						_, err = s.Next()
					}
				}
			} else {
				_, err = c.Complete(context.Background(), []byte(`{}`))
			}
			if err == nil || err == io.EOF {
				t.Fatalf("want an error, got %v", err)
			}
			for _, text := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
				if strings.Contains(text, testKey) {
					t.Errorf("error text contains the API key: %s", text)
				}
			}
			var ue *UpstreamError
			if errors.As(err, &ue) && bytes.Contains(ue.Body, []byte(testKey)) {
				t.Errorf("error body contains the API key: %s", ue.Body)
			}
		})
	}
}

func TestConnectionRefusedErrorHasNoKey(t *testing.T) {
	t.Parallel()
	c, err := NewClient(Options{BaseURL: "http://" + testkit.ClosedAddr(t) + "/v1", APIKey: testKey})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Complete(context.Background(), []byte(`{}`))
	if err == nil || strings.Contains(err.Error(), testKey) {
		t.Errorf("err = %v", err)
	}
}

func TestUpstreamErrorText(t *testing.T) {
	t.Parallel()
	body := []byte(`{"error":{"message":"secret prompt text","type":"invalid_request_error","code":"model_not_found"}}`)
	e := &UpstreamError{Kind: ErrUpstreamRateLimited, Status: 429, RetryAfter: 7 * time.Second, Body: body, Upstream: "openai", detail: errorSummary(body)}
	want := "llm: upstream rate limited (openai): status 429, retry after 7s: type=invalid_request_error code=model_not_found"
	if got := e.Error(); got != want {
		t.Errorf("Error() = %q\nwant      %q", got, want)
	}
	if !errors.Is(e, ErrUpstreamRateLimited) || errors.Is(e, ErrUpstreamRejected) {
		t.Error("Unwrap does not expose exactly the Kind")
	}
	if got := (&UpstreamError{}).Error(); got != "llm: upstream error" {
		t.Errorf("zero value Error() = %q", got)
	}
}

func TestErrorSummaryDropsFreeText(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		`{"error":{"type":"server_error","code":500}}`:            "type=server_error code=500",
		`{"error":{"type":"has spaces: and secrets","code":"x"}}`: "code=x",
		`{"error":"plain string"}`:                                "",
		`not json`:                                                "",
		`{"error":{"code":"` + strings.Repeat("a", 65) + `"}}`:    "",
	}
	for body, want := range tests {
		if got := errorSummary([]byte(body)); got != want {
			t.Errorf("errorSummary(%s) = %q, want %q", body, got, want)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name   string
		header map[string]string
		want   time.Duration
	}{
		{"none", nil, 0},
		{"seconds", map[string]string{"Retry-After": "7"}, 7 * time.Second},
		{"seconds with spaces", map[string]string{"Retry-After": " 12 "}, 12 * time.Second},
		{"zero", map[string]string{"Retry-After": "0"}, 0},
		{"negative", map[string]string{"Retry-After": "-5"}, 0},
		{"huge", map[string]string{"Retry-After": "99999999999999999"}, 0},
		{"http date", map[string]string{"Retry-After": now.Add(90 * time.Second).Format(http.TimeFormat)}, 90 * time.Second},
		{"past date", map[string]string{"Retry-After": now.Add(-time.Minute).Format(http.TimeFormat)}, 0},
		{"garbage", map[string]string{"Retry-After": "soon"}, 0},
		{"ms wins", map[string]string{"Retry-After": "2", "Retry-After-Ms": "250"}, 250 * time.Millisecond},
		{"bad ms falls back", map[string]string{"Retry-After": "2", "Retry-After-Ms": "x"}, 2 * time.Second},
	}
	for _, tt := range tests {
		h := http.Header{}
		for k, v := range tt.header {
			h.Set(k, v)
		}
		if got := parseRetryAfter(h, now); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestNewClient(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"", "api.openai.com/v1", "ftp://host/v1", "http://", "://x"} {
		if _, err := NewClient(Options{BaseURL: bad}); err == nil {
			t.Errorf("NewClient(%q) succeeded", bad)
		}
	}
	if _, err := NewClient(Options{BaseURL: "http://h/v1", Timeout: -time.Second}); err == nil {
		t.Error("negative timeout accepted")
	}
	c, err := NewClient(Options{BaseURL: "https://api.example.com/v1//"})
	if err != nil {
		t.Fatal(err)
	}
	if c.chatURL.String() != "https://api.example.com/v1/chat/completions" || c.name != "api.example.com" || c.timeout != DefaultTimeout {
		t.Errorf("client = url %q name %q timeout %v", c.chatURL, c.name, c.timeout)
	}
	// A query on the base URL (as some hosted deployments require) stays a
	// query of each endpoint.
	q, err := NewClient(Options{BaseURL: "https://h.example.com/openai/v1?api-version=2025-01-01"})
	if err != nil {
		t.Fatal(err)
	}
	if got := q.embeddingsURL.String(); got != "https://h.example.com/openai/v1/embeddings?api-version=2025-01-01" {
		t.Errorf("endpoint with a query = %q", got)
	}
	tr, ok := c.transport.(*http.Transport)
	if !ok {
		t.Fatalf("default transport is %T", c.transport)
	}
	if tr.MaxIdleConnsPerHost < 100 || tr.ResponseHeaderTimeout != 0 || !tr.ForceAttemptHTTP2 {
		t.Errorf("transport not tuned: %+v", tr)
	}
}

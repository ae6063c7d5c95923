package main

// The soak's mix: the kinds of request it sends, what each answer must
// look like, and the class each answer falls in.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
	"github.com/agentapi/agentapi/internal/tier"
)

// Answer classes.
type class uint8

const (
	classOK         class = iota // 2xx as asked
	classProvoked                // the 4xx the request was built to provoke
	classFault                   // a request with an injected fault, answered as documented
	classLeft                    // a stream the client left on purpose
	classStarved                 // only late (504, stream stall, timeout) while other processes took the machine
	classUnexpected              // anything else
	numClasses
)

var classNames = [numClasses]string{"ok", "4xx provoked", "fault as documented", "client left", "process starved", "UNEXPECTED"}

// soakKind is one kind of request in the mix.
type soakKind struct {
	id       string
	endpoint string
	method   string
	path     string
	weight   int  // share of the open loop, per thousand
	stream   bool // answered as server-sent events
	chat     bool // /chat's event format (else OpenAI's)
	left     bool // the client leaves after two events
	faults   bool // carries the fault schedule's markers
	model    bool // calls the upstream (so a 504 can mean it answered late)
	want     int  // status when nothing is injected
	// also is a second acceptable status: the tiny tier's 429.
	also int
	// body builds the n-th request body with an optional fault marker.
	body func(n uint64, marker string) []byte
	// auth picks the credential of request n ("" for none).
	auth func(s *soak, n uint64) string
	// check validates the body of an answer with status want.
	check func(s *soak, body []byte) error
}

// cachePoolSize is how many bodies the cache-hit kinds cycle through.
const cachePoolSize = 50

func soakKinds() []*soakKind {
	pro := func(s *soak, n uint64) string {
		if n%2 == 0 && s.gw.apiKey != "" {
			return s.gw.apiKey
		}
		return s.gw.token
	}
	free := func(s *soak, _ uint64) string { return s.freeToken }
	none := func(*soak, uint64) string { return "" }
	v1Body := func(stream bool, pool uint64) func(uint64, string) []byte {
		return func(n uint64, marker string) []byte {
			what := "unique"
			if pool > 0 {
				n %= pool
				what = "pooled"
			}
			s := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"soak ` + runNonce + ` ` + what + ` ` +
				strconv.FormatUint(n, 10) + marker + `: summarise the trade-offs of token buckets in three sentences."}]`
			if stream {
				s += `,"stream":true`
			}
			return []byte(s + "}")
		}
	}
	chatBody := func(stream bool, pool uint64) func(uint64, string) []byte {
		return func(n uint64, marker string) []byte {
			what := "unique"
			if pool > 0 {
				n %= pool
				what = "pooled"
			}
			s := `{"message":"soak ` + runNonce + ` ` + what + ` ` + strconv.FormatUint(n, 10) + marker +
				`: summarise the trade-offs of token buckets in three sentences."`
			if stream {
				s += `,"stream":true`
			}
			return []byte(s + "}")
		}
	}
	fixed := func(b string) func(uint64, string) []byte { return func(uint64, string) []byte { return []byte(b) } }
	tooLarge := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("x", soakMaxBody+1) + `"}]}`
	const v1, chat = "/v1/chat/completions", "/chat"
	return []*soakKind{
		{id: "v1", model: true, endpoint: "POST " + v1, method: "POST", path: v1, weight: 200, faults: true, want: 200,
			body: v1Body(false, 0), auth: pro, check: checkCompletion},
		{id: "v1-hit", model: true, endpoint: "POST " + v1, method: "POST", path: v1, weight: 150, want: 200,
			body: v1Body(false, cachePoolSize), auth: pro, check: checkCompletion},
		{id: "chat", model: true, endpoint: "POST " + chat, method: "POST", path: chat, weight: 140, faults: true, want: 200,
			body: chatBody(false, 0), auth: pro, check: checkChatAnswer},
		{id: "chat-hit", model: true, endpoint: "POST " + chat, method: "POST", path: chat, weight: 130, want: 200,
			body: chatBody(false, cachePoolSize), auth: pro, check: checkChatAnswer},
		{id: "v1-stream", model: true, endpoint: "POST " + v1 + " (stream)", method: "POST", path: v1, weight: 60, stream: true, faults: true, want: 200,
			body: v1Body(true, 0), auth: pro},
		{id: "chat-stream", model: true, endpoint: "POST " + chat + " (stream)", method: "POST", path: chat, weight: 50, stream: true, chat: true, faults: true, want: 200,
			body: chatBody(true, 0), auth: pro},
		{id: "v1-leave", model: true, endpoint: "POST " + v1 + " (stream)", method: "POST", path: v1, weight: 20, stream: true, left: true, want: 200,
			body: v1Body(true, 0), auth: pro},
		{id: "chat-leave", model: true, endpoint: "POST " + chat + " (stream)", method: "POST", path: chat, weight: 15, stream: true, chat: true, left: true, want: 200,
			body: chatBody(true, 0), auth: pro},
		{id: "quota", endpoint: "GET /chat/quota", method: "GET", path: "/chat/quota", weight: 60, want: 200, auth: pro, check: checkQuota},
		{id: "models", endpoint: "GET /v1/models", method: "GET", path: "/v1/models", weight: 40, want: 200, auth: pro, check: checkModels},
		{id: "bad-json", endpoint: "POST " + v1, method: "POST", path: v1, weight: 20, want: 400,
			body: fixed(`{"model":"gpt-4o-mini","messages":[`), auth: pro},
		{id: "empty-message", endpoint: "POST " + chat, method: "POST", path: chat, weight: 20, want: 422,
			body: fixed(`{"message":""}`), auth: pro},
		{id: "unknown-model", endpoint: "POST " + v1, method: "POST", path: v1, weight: 20, want: 404,
			body: fixed(`{"model":"no-such-model","messages":[{"role":"user","content":"hi"}]}`), auth: pro},
		{id: "no-auth", endpoint: "POST " + chat, method: "POST", path: chat, weight: 20, want: 401,
			body: chatBody(false, cachePoolSize), auth: none},
		{id: "too-large", endpoint: "POST " + v1, method: "POST", path: v1, weight: 5, want: 413,
			body: fixed(tooLarge), auth: pro},
		{id: "tiny-tier", model: true, endpoint: "POST " + chat, method: "POST", path: chat, weight: 50, want: 200, also: 429,
			body: chatBody(false, cachePoolSize), auth: free, check: checkChatAnswer},
	}
}

// soakMaxBody is the gateway's MAX_BODY_BYTES in the soak run.
const soakMaxBody = 64 << 10

// soakCacheBytes is the in-process cache's bound in the soak run: the
// warm-up's misses (about 50 KiB/s at the default rate) fill it, so it
// does not grow between the baseline and the end.
const soakCacheBytes = 1 << 20

// checkCompletion accepts an OpenAI chat completion.
func checkCompletion(_ *soak, body []byte) error { return checkChatCompletion(200, body) }

// checkChatAnswer accepts a /chat answer, from the model or the cache.
func checkChatAnswer(_ *soak, body []byte) error {
	var c struct {
		Response *string `json:"response"`
	}
	if err := json.Unmarshal(body, &c); err != nil || c.Response == nil || *c.Response == "" {
		return fmt.Errorf("not a /chat answer: %.200s", body)
	}
	return nil
}

func checkQuota(_ *soak, body []byte) error {
	var q struct {
		Tier  string `json:"tier"`
		Limit int64  `json:"limit"`
	}
	if err := json.Unmarshal(body, &q); err != nil || q.Tier != tier.Pro || q.Limit <= 0 {
		return fmt.Errorf("not the pro user's quota: %.200s", body)
	}
	return nil
}

func checkModels(_ *soak, body []byte) error {
	var m struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &m); err != nil || len(m.Data) == 0 || m.Data[0].ID == "" {
		return fmt.Errorf("not a model list: %.200s", body)
	}
	return nil
}

// checkErrorBody accepts the gateway's error shapes: OpenAI's on /v1,
// {"error", "path"} elsewhere, and a request id on every 5xx.
func checkErrorBody(path string, status int, body []byte) error {
	if strings.HasPrefix(path, "/v1/") {
		var e struct {
			Error *struct {
				Message string `json:"message"`
				Type    string `json:"type"`
			} `json:"error"`
		}
		if err := json.Unmarshal(body, &e); err != nil || e.Error == nil || e.Error.Message == "" || e.Error.Type == "" {
			return fmt.Errorf("not an OpenAI error: %.200s", body)
		}
		if status >= 500 && !strings.Contains(e.Error.Message, "request id") {
			return fmt.Errorf("5xx without its request id: %.200s", body)
		}
		return nil
	}
	var e struct {
		Error     json.RawMessage `json:"error"`
		Path      string          `json:"path"`
		RequestID string          `json:"request_id"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Error) == 0 || e.Path != path {
		return fmt.Errorf("not a gateway error: %.200s", body)
	}
	if status >= 500 && e.RequestID == "" {
		return fmt.Errorf("5xx without its request id: %.200s", body)
	}
	return nil
}

// outcome is what one request got.
type outcome struct {
	status int
	header http.Header
	body   []byte // a plain answer, or a stream's error answer (capped)
	err    error  // a transport error, not counting a deliberate leave

	events   int           // stream: content events
	done     bool          // stream: ended with [DONE] or "event: done"
	errEvent bool          // stream: ended with the documented error event
	trailing bool          // stream: anything after its closing event, or an unknown event
	stalled  bool          // stream: no event for the stall threshold
	left     bool          // stream: the client left on purpose
	maxGap   time.Duration // stream: longest wait between events

	start, end time.Time
	requestID  string
	// starved is set when the machine was taken from this process while
	// the request ran (see machineWatch).
	starved bool
}

// wantStatus is the status the gateway documents for kind k with fault f.
func wantStatus(k *soakKind, f fakeopenai.Fault) int {
	switch f {
	case fakeopenai.Status500:
		return http.StatusBadGateway
	case fakeopenai.Status429:
		return http.StatusServiceUnavailable
	case fakeopenai.Hang:
		return http.StatusGatewayTimeout
	case fakeopenai.Cut:
		if !k.stream {
			return http.StatusBadGateway
		}
	}
	return k.want
}

// classify sorts one answer. The reason names what was wrong with an
// unexpected one; it is short and stable, so reasons can be counted.
func classify(s *soak, k *soakKind, f fakeopenai.Fault, o *outcome) (class, string) {
	// late is what a starved process explains: the fake upstream, in
	// this process too, did not answer in time.
	late := func(reason string) (class, string) {
		if o.starved {
			return classStarved, ""
		}
		return classUnexpected, reason
	}
	switch {
	case o.stalled:
		return late("stream stalled (no event within the stall threshold)")
	case o.err != nil && errorKind(o.err) == "timeout":
		return late("transport error: timeout")
	case o.err != nil:
		return classUnexpected, "transport error: " + errorKind(o.err)
	}
	want := wantStatus(k, f)
	if o.status != want && (f != fakeopenai.None || o.status != k.also) {
		if o.status == http.StatusGatewayTimeout && k.model {
			return late(fmt.Sprintf("unexplained %d (wanted %d)", o.status, want))
		}
		if o.status >= 500 {
			return classUnexpected, fmt.Sprintf("unexplained %d (wanted %d)", o.status, want)
		}
		return classUnexpected, fmt.Sprintf("status %d (wanted %d)", o.status, want)
	}
	good := classOK
	if f != fakeopenai.None {
		good = classFault
	}
	if o.status >= 400 {
		if err := checkErrorBody(k.path, o.status, o.body); err != nil {
			return classUnexpected, fmt.Sprintf("malformed %d body", o.status)
		}
		if (o.status == 429 || o.status == 503) && o.header.Get("Retry-After") == "" {
			return classUnexpected, fmt.Sprintf("%d without Retry-After", o.status)
		}
		if good == classOK {
			good = classProvoked
		}
		return good, ""
	}
	if !k.stream {
		if err := k.check(s, o.body); err != nil {
			return classUnexpected, "malformed 200 body"
		}
		return good, ""
	}
	switch {
	case o.trailing:
		return classUnexpected, "stream: events after its end, or of an unknown kind"
	case o.left:
		return classLeft, ""
	case f == fakeopenai.Cut && o.errEvent && !o.done:
		return classFault, ""
	case f == fakeopenai.Cut:
		return classUnexpected, "stream cut by the upstream did not end with the error event"
	case o.errEvent:
		return classUnexpected, "stream ended with an error event"
	case !o.done:
		return classUnexpected, "stream ended without its closing event"
	case o.events == 0:
		return classUnexpected, "stream without content"
	}
	return good, ""
}

// errorKind shortens a transport error to something countable.
func errorKind(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "connection closed"
	case strings.Contains(err.Error(), "connection reset"):
		return "connection reset"
	case strings.Contains(err.Error(), "connection refused"):
		return "connection refused"
	}
	return err.Error()
}

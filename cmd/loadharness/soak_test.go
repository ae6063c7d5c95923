package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
)

// smokeSoakArgs is a soak of a few seconds with every upstream fault: the
// fault slots are short so each comes round twice. The upstream timeout
// and stall threshold are generous, so that a loaded two-core machine
// running the race detector cannot turn a slow healthy answer into a 504
// or a stall; nothing here is timed. No warm-up: the resource figures it
// serves are not judged here.
var smokeSoakArgs = []string{"-quiet", "-duration", "3s", "-warmup", "0", "-rate", "100", "-streams", "6",
	"-fault-slot", "250ms", "-fault-share", "0.34", "-upstream-timeout", "3s", "-stall", "15s",
	"-settle", "300ms", "-sample", "1s"}

func runSmokeSoak(t *testing.T, args []string, mislabel uint64) (*soakReport, string) {
	t.Helper()
	o, err := parseSoakFlags(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o.mislabel = mislabel
	var out bytes.Buffer
	rep, err := runSoak(context.Background(), o, &out, io.Discard)
	if err != nil {
		t.Fatalf("runSoak: %v\n%s", err, out.String())
	}
	return rep, out.String()
}

// checkSmoke asserts what a short soak can honestly assert: every answer
// was one the documentation explains, faults were really injected, and
// nothing was left running. Goroutine and memory figures are printed but
// not judged: a few seconds, with other tests in the same process, say
// nothing about growth.
func checkSmoke(t *testing.T, rep *soakReport, out string) {
	t.Helper()
	if unexpected := rep.byClass[classUnexpected]; unexpected != 0 {
		t.Errorf("%d unexpected answers; report:\n%s", unexpected, out)
	}
	if rep.sent == 0 || rep.byClass[classOK] == 0 || rep.byClass[classProvoked] == 0 || rep.byClass[classLeft] == 0 {
		t.Errorf("the mix did not run: %d sent, by class %v\n%s", rep.sent, rep.byClass, out)
	}
	if rep.byClass[classFault] == 0 {
		t.Errorf("no injected fault was answered as documented\n%s", out)
	}
	if rep.leftovers != 0 || rep.unanswered {
		t.Errorf("work left at idle: %d streams or upstream calls, unanswered requests %v\n%s", rep.leftovers, rep.unanswered, out)
	}
	for _, want := range []string{"answers by kind and class", "injected upstream faults", "resources at idle", "thresholds:", "verdict: "} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestSoakSmoke(t *testing.T) {
	t.Parallel()
	rep, out := runSmokeSoak(t, smokeSoakArgs, 0)
	checkSmoke(t, rep, out)
}

func TestSoakSmokeRedis(t *testing.T) {
	url := os.Getenv("TEST_REDIS_URL")
	if url == "" {
		t.Skip("TEST_REDIS_URL is unset: the soak's Redis faults need a real Redis (SCRIPT FLUSH, a proxy to cut)")
	}
	if !loopbackRedis(url) {
		t.Skipf("TEST_REDIS_URL %q is not on loopback; the soak only runs against a local Redis", url)
	}
	t.Parallel()
	args := append([]string{"-redis", url, "-redis-every", "1s", "-redis-outage", "300ms"}, smokeSoakArgs...)
	rep, out := runSmokeSoak(t, args, 0)
	checkSmoke(t, rep, out)
	if rep.flushes == 0 || rep.outages == 0 {
		t.Errorf("Redis faults did not run: %d SCRIPT FLUSH, %d outages\n%s", rep.flushes, rep.outages, out)
	}
}

// TestSoakCatchesUnaskedFailure proves the classifier can fail: requests
// carry the fake upstream's 500 marker without the classifier being told,
// and every one of them must count as unexpected and fail the verdict.
func TestSoakCatchesUnaskedFailure(t *testing.T) {
	t.Parallel()
	rep, out := runSmokeSoak(t, []string{"-quiet", "-duration", "1s", "-warmup", "0", "-rate", "50", "-streams", "2",
		"-fault-share", "0", "-upstream-timeout", "3s", "-stall", "15s", "-settle", "0s"}, 2)
	mislabelled := 0
	for reason, n := range rep.reasons {
		if strings.HasSuffix(reason, ": unexplained 502 (wanted 200)") {
			mislabelled += n
		}
	}
	if mislabelled == 0 || rep.byClass[classUnexpected] != mislabelled {
		t.Errorf("unexpected answers %d, of which unexplained 502s %d; want only, and some, unexplained 502s (%v)\n%s",
			rep.byClass[classUnexpected], mislabelled, rep.reasons, out)
	}
	if rep.pass || !strings.Contains(out, "verdict: FAIL") {
		t.Errorf("a run with unexplained 502s passed:\n%s", out)
	}
}

// TestClassify pins the classifier's reading of single answers.
func TestClassify(t *testing.T) {
	kinds := map[string]*soakKind{}
	for _, k := range soakKinds() {
		kinds[k.id] = k
	}
	completion := []byte(`{"choices":[{"message":{"content":"hi"}}]}`)
	v1Err := []byte(`{"error":{"message":"Upstream model failed (request id abc)","type":"api_error","param":null,"code":null}}`)
	chatErr := []byte(`{"error":"Internal server error","path":"/chat","request_id":"abc"}`)
	limited := []byte(`{"error":{"error":"Rate limit exceeded","tier":"free","limit":3},"path":"/chat"}`)
	retry := http.Header{"Retry-After": {"1"}}
	tests := []struct {
		name   string
		kind   string
		fault  fakeopenai.Fault
		o      outcome
		want   class
		reason string
	}{
		{"healthy answer", "v1", fakeopenai.None, outcome{status: 200, body: completion}, classOK, ""},
		{"injected 500 as 502", "v1", fakeopenai.Status500, outcome{status: 502, body: v1Err}, classFault, ""},
		{"unexplained 502", "v1", fakeopenai.None, outcome{status: 502, body: v1Err}, classUnexpected, "unexplained 502 (wanted 200)"},
		{"500 nobody injected", "chat", fakeopenai.None, outcome{status: 500, body: chatErr}, classUnexpected, "unexplained 500 (wanted 200)"},
		{"injected 500 answered 504", "chat", fakeopenai.Status500, outcome{status: 504, body: chatErr}, classUnexpected, "unexplained 504 (wanted 502)"},
		{"200 that is not a completion", "v1", fakeopenai.None, outcome{status: 200, body: []byte(`{}`)}, classUnexpected, "malformed 200 body"},
		{"upstream 429 without Retry-After", "v1", fakeopenai.Status429, outcome{status: 503, body: v1Err}, classUnexpected, "503 without Retry-After"},
		{"upstream 429 as 503", "v1", fakeopenai.Status429, outcome{status: 503, body: v1Err, header: retry}, classFault, ""},
		{"tiny tier limited", "tiny-tier", fakeopenai.None, outcome{status: 429, body: limited, header: retry}, classProvoked, ""},
		{"tiny tier 429 without Retry-After", "tiny-tier", fakeopenai.None, outcome{status: 429, body: limited}, classUnexpected, "429 without Retry-After"},
		{"bad input refused", "bad-json", fakeopenai.None, outcome{status: 400, body: []byte(`{"error":{"message":"bad","type":"invalid_request_error"}}`)}, classProvoked, ""},
		{"bad input accepted", "bad-json", fakeopenai.None, outcome{status: 200, body: completion}, classUnexpected, "status 200 (wanted 400)"},
		{"transport error", "quota", fakeopenai.None, outcome{err: io.ErrUnexpectedEOF}, classUnexpected, "transport error: connection closed"},
		{"stream complete", "v1-stream", fakeopenai.None, outcome{status: 200, events: 3, done: true}, classOK, ""},
		{"stream stalled", "v1-stream", fakeopenai.None, outcome{status: 200, events: 3, stalled: true}, classUnexpected, "stream stalled (no event within the stall threshold)"},
		{"stream without its end", "chat-stream", fakeopenai.None, outcome{status: 200, events: 3}, classUnexpected, "stream ended without its closing event"},
		{"cut stream with error event", "chat-stream", fakeopenai.Cut, outcome{status: 200, events: 3, errEvent: true}, classFault, ""},
		{"cut stream that ended normally", "v1-stream", fakeopenai.Cut, outcome{status: 200, events: 3, done: true}, classUnexpected, "stream cut by the upstream did not end with the error event"},
		{"error event on a healthy stream", "v1-stream", fakeopenai.None, outcome{status: 200, events: 3, errEvent: true}, classUnexpected, "stream ended with an error event"},
		{"slow stream completes", "v1-stream", fakeopenai.Slow, outcome{status: 200, events: 6, done: true, maxGap: 300 * time.Millisecond}, classFault, ""},
		{"client left", "v1-leave", fakeopenai.None, outcome{status: 200, events: 2, left: true}, classLeft, ""},
		{"504 while the process was starved", "v1", fakeopenai.None, outcome{status: 504, body: v1Err, starved: true}, classStarved, ""},
		{"stream stalled while the process was starved", "chat-stream", fakeopenai.None, outcome{status: 200, events: 1, stalled: true, starved: true}, classStarved, ""},
		{"502 is not excused by starvation", "v1", fakeopenai.None, outcome{status: 502, body: v1Err, starved: true}, classUnexpected, "unexplained 502 (wanted 200)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := kinds[tt.kind]
			if tt.o.header == nil {
				tt.o.header = http.Header{}
			}
			got, reason := classify(nil, k, tt.fault, &tt.o)
			if got != tt.want || reason != tt.reason {
				t.Errorf("classify = %s, %q; want %s, %q", classNames[got], reason, classNames[tt.want], tt.reason)
			}
		})
	}
}

func TestShortenError(t *testing.T) {
	for in, want := range map[string]string{
		`budget: reserve for user "01a21c3f-ab2d-7ddd-8141-e7421bec136f": read tcp 127.0.0.1:38554->127.0.0.1:40121: i/o timeout`: `budget: reserve for user "<id>": read tcp <addr>-><addr>: i/o timeout`,
		`llm: upstream timeout (openai): no response headers within 1.99999975s`:                                                  `llm: upstream timeout (openai): no response headers within <duration>`,
		`llm: upstream rate limited (openai): status 429, retry after 1s: type=requests`:                                          `llm: upstream rate limited (openai): status 429, retry after <duration>: type=requests`,
	} {
		if got := shortenError(in); got != want {
			t.Errorf("shortenError(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLatencyHist(t *testing.T) {
	var h latencyHist
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	h.add(0)
	h.add(time.Hour) // beyond the last bucket: counted there
	for _, tt := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}} {
		got := h.quantile(tt.q)
		if got < tt.want || float64(got) > float64(tt.want)*1.03 {
			t.Errorf("quantile(%v) = %v, want %v to 3%% above", tt.q, got, tt.want)
		}
	}
}

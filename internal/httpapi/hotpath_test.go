package httpapi

// Tests that pin hand-tuned helpers of the request path to the plain code
// they replace.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/iotest"
	"time"

	"github.com/agentapi/agentapi/internal/ratelimit"
)

// TestRateLimitHeadersAsFmtPrints pins setRateLimitHeaders, which appends
// its values by hand for speed, to what fmt's %q and %d print, and checks
// that the canonical header names read back under their usual spelling.
func TestRateLimitHeadersAsFmtPrints(t *testing.T) {
	t.Parallel()
	for _, pol := range []ratelimit.Policy{
		{Name: "free", Capacity: 10, RefillPerSecond: 1},
		{Name: "pro", Capacity: 1 << 40, RefillPerSecond: 1e9},
		{Name: `we"ird	tier ü`, Capacity: 7, RefillPerSecond: 0.3},
	} {
		for _, d := range []ratelimit.Decision{
			{Allowed: true, Remaining: 9, Reset: 1500 * time.Millisecond},
			{Remaining: 0, Reset: 0},
		} {
			h := http.Header{}
			setRateLimitHeaders(h, pol, d)
			window := int64(math.Ceil(float64(pol.Capacity) / pol.RefillPerSecond))
			wantPolicy := fmt.Sprintf("%q;q=%d;w=%d", pol.Name, pol.Capacity, window)
			wantLimit := fmt.Sprintf("%q;r=%d;t=%d", pol.Name, d.Remaining, ceilSeconds(d.Reset, 0))
			if got := h.Get("RateLimit-Policy"); got != wantPolicy {
				t.Errorf("RateLimit-Policy = %q, want %q", got, wantPolicy)
			}
			if got := h.Get("RateLimit"); got != wantLimit {
				t.Errorf("RateLimit = %q, want %q", got, wantLimit)
			}
			if len(h) != 2 {
				t.Errorf("headers %v, want exactly the two RateLimit fields", h)
			}
		}
	}
}

// TestCompactJSONAsCompactDoes checks that compactJSON, which skips
// json.Compact when there is nothing to remove, gives what Compact gives,
// and the body itself when Compact fails.
func TestCompactJSONAsCompactDoes(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`{"model":"m","messages":[{"role":"user","content":"hello world"}]}`,
		`{"model": "m", "messages": [ {"role":"user"} ]}`,
		"{\n\t\"a\" :\r\n 1 }\n",
		`{"a":"quote \" and space \\ ","b":[1, 2]}`,
		`{"a":"\\"}`,
		`{"a":"\\" , "b":1}`,
		`{"a":"unterminated}`,
		`{"a": "unterminated}`,
		`not json`,
		`not json at all`,
		`"just a string with spaces"`,
		``,
		` `,
	} {
		want := []byte(in)
		var b bytes.Buffer
		if json.Compact(&b, []byte(in)) == nil {
			want = b.Bytes()
		}
		if got := compactJSON([]byte(in)); !bytes.Equal(got, want) {
			t.Errorf("compactJSON(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestReadBodyAsReadAllDoes pins readBody, which sizes its buffer from the
// stated length, to io.ReadAll: the same bytes, and the same errors for a
// body cut short or over the limit, however the reader hands them out.
func TestReadBodyAsReadAllDoes(t *testing.T) {
	payload := []byte(`{"model":"m","messages":[{"role":"user","content":"hello"}]}`)
	cut := errors.New("connection cut")
	for _, tc := range []struct {
		name   string
		stated int64
		body   func() io.Reader
		limit  int64 // 0: no MaxBytesReader
	}{
		{"exact", int64(len(payload)), func() io.Reader { return bytes.NewReader(payload) }, 0},
		{"exact, a byte per read", int64(len(payload)), func() io.Reader { return iotest.OneByteReader(bytes.NewReader(payload)) }, 0},
		{"exact, EOF with the data", int64(len(payload)), func() io.Reader { return iotest.DataErrReader(bytes.NewReader(payload)) }, 0},
		{"unknown length", -1, func() io.Reader { return bytes.NewReader(payload) }, 0},
		{"longer than stated", 10, func() io.Reader { return bytes.NewReader(payload) }, 0},
		{"cut short", int64(len(payload)), func() io.Reader {
			return io.MultiReader(bytes.NewReader(payload[:20]), iotest.ErrReader(cut))
		}, 0},
		{"over the limit", int64(len(payload)), func() io.Reader { return bytes.NewReader(payload) }, 20},
		{"over a large stated length", 1 << 20, func() io.Reader { return bytes.NewReader(payload) }, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			request := func() *http.Request {
				r := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", tc.body())
				r.ContentLength = tc.stated
				if tc.limit > 0 {
					r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, tc.limit)
				}
				return r
			}
			want, wantErr := io.ReadAll(request().Body)
			got, err := readBody(request())
			if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
				t.Fatalf("err = %v, want %v", err, wantErr)
			}
			if err == nil && !bytes.Equal(got, want) {
				t.Errorf("body = %q, want %q", got, want)
			}
		})
	}
}

// TestDecodeJSONAnswers pins what decodeJSON tells a client for each kind of
// body. A good body goes through json.Unmarshal alone; a refused one is read
// again by a json.Decoder, which words the answer, so both paths are here.
func TestDecodeJSONAnswers(t *testing.T) {
	const limit = 64
	for _, tc := range []struct {
		name    string
		body    string
		status  int // 0: accepted
		message string
		field   string // of a 422 with details
	}{
		{"object", `{"message":"hi","model":"m"}`, 0, "", ""},
		{"white space around", " \n{\"message\":\"hi\"}\t ", 0, "", ""},
		{"unknown fields", `{"message":"hi","role":"admin"}`, 0, "", ""},
		{"empty", ``, 400, "Request body is empty", ""},
		{"only white space", "  \n", 400, "Request body is empty", ""},
		{"cut short", `{"message":"h`, 400, "Malformed JSON", ""},
		{"not JSON", `message=hi`, 400, "Malformed JSON", ""},
		{"byte order mark", "\xef\xbb\xbf{}", 400, "Malformed JSON", ""},
		{"two objects", `{}{}`, 400, "Request body must contain a single JSON object", ""},
		{"stray brace", `{"message":"hi"}}`, 400, "Request body must contain a single JSON object", ""},
		{"array", `[]`, 422, "Request body must be a JSON object", ""},
		{"string", `"hi"`, 422, "Request body must be a JSON object", ""},
		{"wrong type", `{"message":1}`, 422, "Validation failed", "message"},
		{"wrong type, then junk", `{"message":1} x`, 422, "Validation failed", "message"},
		{"over the limit", `{"message":"` + string(bytes.Repeat([]byte("a"), limit)) + `"}`, 413, fmt.Sprintf("Request body exceeds %d bytes", limit), ""},
		{"one object, then spaces past the limit", `{"message":"hi"}` + string(bytes.Repeat([]byte(" "), limit)), 413, fmt.Sprintf("Request body exceeds %d bytes", limit), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/chat", bytes.NewReader([]byte(tc.body)))
			r.Header.Set("Content-Type", "application/json")
			r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, limit)
			var in chatRequest
			err := decodeJSON(r, &in)
			if tc.status == 0 {
				if err != nil || in.Message == nil || *in.Message != "hi" {
					t.Fatalf("decodeJSON = %v, message %v; want accepted with message hi", err, in.Message)
				}
				return
			}
			var ae *apiError
			if !errors.As(err, &ae) {
				t.Fatalf("decodeJSON = %v, want an *apiError", err)
			}
			if ae.status != tc.status || ae.message != tc.message {
				t.Fatalf("decodeJSON = %d %v, want %d %q", ae.status, ae.message, tc.status, tc.message)
			}
			if tc.field != "" && (len(ae.details) != 1 || ae.details[0].Field != tc.field) {
				t.Fatalf("details %+v, want one about %s", ae.details, tc.field)
			}
		})
	}
}

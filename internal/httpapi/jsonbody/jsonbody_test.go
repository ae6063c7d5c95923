package jsonbody

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// chatBody has the shape of a chat request: optional fields, so that what
// the client left out can be told from what it set empty.
type chatBody struct {
	Message *string `json:"message"`
	Model   *string `json:"model"`
	Stream  *bool   `json:"stream"`
}

func request(body string, contentType string, limit int64) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "/chat", strings.NewReader(body))
	if contentType != "" {
		r.Header.Set("Content-Type", contentType)
	}
	if limit > 0 {
		r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, limit)
	}
	return r
}

func TestDecode(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body, contentType string
		limit                   int64
		status                  int
		message, field          string
	}{
		{name: "ok", body: `{"message":"hi","model":"m"}`, contentType: "application/json"},
		{name: "no content type", body: `{"message":"hi"}`},
		{name: "charset", body: `{"message":"hi"}`, contentType: "Application/JSON; charset=utf-8"},
		{name: "not json", body: `message=hi`, contentType: "application/x-www-form-urlencoded", status: 415, message: "Content-Type must be application/json"},
		{name: "empty", body: ``, status: 400, message: "Request body is empty"},
		{name: "malformed", body: `{"message":`, status: 400, message: "Malformed JSON"},
		{name: "two values", body: `{}{}`, status: 400, message: "Request body must contain a single JSON object"},
		{name: "stray brace", body: `{"message":"hi"}}`, status: 400},
		{name: "array", body: `[]`, status: 422, message: "Request body must be a JSON object"},
		{name: "wrong type", body: `{"message":1}`, status: 422, field: "message"},
		{name: "too large", body: `{"message":"` + strings.Repeat("x", 100) + `"}`, limit: 32, status: 413, message: "Request body exceeds 32 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var v chatBody
			err := Decode(request(tc.body, tc.contentType, tc.limit), &v)
			if tc.status == 0 {
				if err != nil || v.Message == nil || *v.Message != "hi" {
					t.Fatalf("Decode = %v, %+v", err, v)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Status != tc.status {
				t.Fatalf("Decode error %v, want status %d", err, tc.status)
			}
			if tc.message != "" && e.Message != tc.message {
				t.Errorf("message %q, want %q", e.Message, tc.message)
			}
			if e.Field != tc.field || (tc.field != "" && e.Problem != "must be a string") {
				t.Errorf("field %q problem %q, want %q", e.Field, e.Problem, tc.field)
			}
		})
	}
}

// TestReadStatedLength reads bodies around the preallocation bound, with
// and without a stated length, and gets every byte.
func TestReadStatedLength(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 511, bodyPrealloc - 1, bodyPrealloc, bodyPrealloc + 1} {
		body := bytes.Repeat([]byte("a"), n)
		for _, stated := range []bool{true, false} {
			r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
			if !stated {
				r.ContentLength = -1
			}
			got, err := Read(r)
			if err != nil || !bytes.Equal(got, body) {
				t.Errorf("Read of %d bytes (stated %v) = %d bytes, %v", n, stated, len(got), err)
			}
		}
	}
}

// FuzzDecode feeds arbitrary bodies to Decode, as the handlers call it
// (behind the body limit). It must not panic, must fail only with an
// *Error of a client status, and when it succeeds the body must be one
// valid JSON value whose fields land where encoding/json puts them.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"email":"a@example.com","password":"correct horse"}`,
		`{"message":"hi","model":"gpt-4o-mini","stream":true}`,
		`{"message":"hi","tier":"pro","user_id":"admin","role":"admin"}`,
		`{"message":1}`, `[]`, `null`, `{}{}`, `{"message":"\ud800"}`, ``, `{`, `"x"`,
		`{"message":"a"}   `, "\xef\xbb\xbf{}",
	} {
		f.Add([]byte(seed))
	}
	const limit = 4 << 10
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/chat", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Body = http.MaxBytesReader(httptest.NewRecorder(), r.Body, limit)
		var in chatBody
		err := Decode(r, &in)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("Decode(%q) error %T %v is not an *Error", body, err, err)
			}
			switch e.Status {
			case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
			default:
				t.Fatalf("Decode(%q) status %d", body, e.Status)
			}
			if len(body) > limit && e.Status != http.StatusRequestEntityTooLarge && json.Valid(body) {
				t.Fatalf("Decode of a valid %d-byte body over the %d limit: status %d, want 413", len(body), limit, e.Status)
			}
			return
		}
		if len(body) > limit {
			t.Fatalf("Decode accepted a %d-byte body over the %d limit", len(body), limit)
		}
		if !json.Valid(bytes.TrimSpace(body)) {
			t.Fatalf("Decode accepted %q, which is not one JSON value", body)
		}
		var want chatBody
		if err := json.Unmarshal(body, &want); err != nil {
			t.Fatalf("Decode accepted %q, which encoding/json refuses: %v", body, err)
		}
		if !samePtr(in.Message, want.Message) || !samePtr(in.Model, want.Model) || !samePtr(in.Stream, want.Stream) {
			t.Fatalf("Decode(%q) = %+v, encoding/json gives %+v", body, in, want)
		}
	})
}

func samePtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzDecodeJSON feeds arbitrary bodies to decodeJSON, as the handlers call
// it (behind the body limit). It must not panic, must fail only with an
// *apiError of a client status, and when it succeeds the body must be one
// valid JSON value whose fields land where encoding/json puts them.
func FuzzDecodeJSON(f *testing.F) {
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
		var in chatRequest
		err := decodeJSON(r, &in)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				t.Fatalf("decodeJSON(%q) error %T %v is not an *apiError", body, err, err)
			}
			switch ae.status {
			case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
			default:
				t.Fatalf("decodeJSON(%q) status %d", body, ae.status)
			}
			if len(body) > limit && ae.status != http.StatusRequestEntityTooLarge && json.Valid(body) {
				t.Fatalf("decodeJSON of a valid %d-byte body over the %d limit: status %d, want 413", len(body), limit, ae.status)
			}
			return
		}
		if len(body) > limit {
			t.Fatalf("decodeJSON accepted a %d-byte body over the %d limit", len(body), limit)
		}
		if !json.Valid(bytes.TrimSpace(body)) {
			t.Fatalf("decodeJSON accepted %q, which is not one JSON value", body)
		}
		var want chatRequest
		if err := json.Unmarshal(body, &want); err != nil {
			t.Fatalf("decodeJSON accepted %q, which encoding/json refuses: %v", body, err)
		}
		if !sameStringPtr(in.Message, want.Message) || !sameStringPtr(in.Model, want.Model) {
			t.Fatalf("decodeJSON(%q) = %+v, encoding/json gives %+v", body, in, want)
		}
	})
}

func sameStringPtr(a, b *string) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

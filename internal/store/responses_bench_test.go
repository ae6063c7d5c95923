package store

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchResponseBody is about the size of a short stored response: the
// Response object with one output message, and its one input message.
var (
	benchResponseBody = []byte(`{"id":"resp_x","object":"response","status":"completed","output":[{"type":"message","content":[{"type":"output_text","text":"` +
		strings.Repeat("word ", 60) + `","annotations":[]}]}],"usage":{"input_tokens":40,"output_tokens":60,"total_tokens":100}` +
		strings.Repeat(`,"pad":null`, 30) + `}`)
	benchResponseInput = []byte(`[{"type":"message","id":"msg_x","status":"completed","role":"user","content":[{"type":"input_text","text":"` +
		strings.Repeat("word ", 40) + `"}]}]`)
)

// BenchmarkSaveResponse is what storing one response costs the request
// that made it (the Responses API writes before it answers).
func BenchmarkSaveResponse(b *testing.B) {
	onEachBackend(b, func(b *testing.B, s *Store, u User) {
		ctx := context.Background()
		n := 0
		expires := time.Now().Add(time.Hour)
		b.ReportAllocs()
		for b.Loop() {
			n++
			if err := s.SaveResponse(ctx, StoredResponse{ID: "resp_" + strconv.Itoa(n), UserID: u.ID, Model: "m", Status: "completed",
				Body: benchResponseBody, Input: benchResponseInput, ExpiresAt: expires}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkResponseChain reads a chain of ten responses, what the
// eleventh turn of a conversation pays before it calls the model.
func BenchmarkResponseChain(b *testing.B) {
	onEachBackend(b, func(b *testing.B, s *Store, u User) {
		ctx := context.Background()
		prev := ""
		for i := range 10 {
			id := "resp_" + strconv.Itoa(i)
			if err := s.SaveResponse(ctx, StoredResponse{ID: id, UserID: u.ID, PreviousID: prev, Model: "m", Status: "completed",
				Body: benchResponseBody, Input: benchResponseInput, ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
				b.Fatal(err)
			}
			prev = id
		}
		b.ReportAllocs()
		for b.Loop() {
			chain, err := s.ResponseChain(ctx, u.ID, prev, 0)
			if err != nil || len(chain) != 10 {
				b.Fatalf("chain = %d, %v", len(chain), err)
			}
		}
	})
}

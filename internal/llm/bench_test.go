package llm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// benchAnswer is a typical plain chat answer of about 1 KiB.
func benchAnswer() []byte {
	return []byte(`{"id":"chatcmpl-bench","object":"chat.completion","created":1735689600,"model":"gpt-bench",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"` + strings.Repeat("token ", 150) + `"},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":120,"completion_tokens":150,"total_tokens":270}}`)
}

// benchRequest is a typical chat request.
func benchRequest() []byte {
	return []byte(`{"model":"gpt-bench","messages":[{"role":"user","content":"` + strings.Repeat("word ", 100) + `"}]}`)
}

// BenchmarkComplete measures one plain call through the client against a
// local upstream, so it covers request building, the first-byte timer,
// body reading and usage extraction (plus the loopback HTTP round trip).
func BenchmarkComplete(b *testing.B) {
	answer, request := benchAnswer(), benchRequest()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(answer)
	}))
	defer srv.Close()
	c, err := NewClient(Options{BaseURL: srv.URL + "/v1", APIKey: "sk-bench"})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.SetBytes(int64(len(answer)))
	for b.Loop() {
		resp, err := c.Complete(ctx, request)
		if err != nil {
			b.Fatal(err)
		}
		if resp.Usage.TotalTokens != 270 {
			b.Fatalf("usage = %+v", resp.Usage)
		}
	}
}

// benchEvents renders n OpenAI-style chunks with usage:null, as sent when
// include_usage is on, followed by a usage chunk and [DONE].
func benchEvents(n int) []byte {
	var buf bytes.Buffer
	for i := range n {
		fmt.Fprintf(&buf, "data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1735689600,"+
			"\"model\":\"gpt-bench\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok%d \"},\"finish_reason\":null}],\"usage\":null}\n\n", i)
	}
	buf.WriteString("data: {\"id\":\"chatcmpl-bench\",\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":100,\"total_tokens\":110}}\n\n")
	buf.WriteString("data: [DONE]\n\n")
	return buf.Bytes()
}

// BenchmarkStreamNext measures the SSE reader alone: the cost per event of
// Next, including the usage check on every chunk.
func BenchmarkStreamNext(b *testing.B) {
	const events = 100
	body := benchEvents(events)
	r := bytes.NewReader(body)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		r.Reset(body)
		s := newStream(context.Background(), io.NopCloser(r), nil, "bench")
		n := 0
		for {
			_, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != events+1 {
			b.Fatalf("read %d events", n)
		}
		if u, ok := s.Usage(); !ok || u.TotalTokens != 110 {
			b.Fatalf("usage = %+v, %v", u, ok)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*(events+1)), "ns/event")
}

// BenchmarkMockComplete measures the offline provider used on laptops.
func BenchmarkMockComplete(b *testing.B) {
	m := NewMock()
	request := benchRequest()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Complete(ctx, request); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadMeta is the client's own parse of every plain answer: the
// model and usage, and the check that the body is a JSON object.
func BenchmarkReadMeta(b *testing.B) {
	answer := benchAnswer()
	b.ReportAllocs()
	b.SetBytes(int64(len(answer)))
	for b.Loop() {
		m, err := readMeta(answer)
		if err != nil || m.Usage.TotalTokens != 270 {
			b.Fatalf("readMeta = %+v, %v", m, err)
		}
	}
}

// BenchmarkFirstMessageContent is what /chat reads from each answer.
func BenchmarkFirstMessageContent(b *testing.B) {
	answer := benchAnswer()
	b.ReportAllocs()
	b.SetBytes(int64(len(answer)))
	for b.Loop() {
		if s, err := FirstMessageContent(answer); err != nil || s == "" {
			b.Fatalf("FirstMessageContent = %q, %v", s, err)
		}
	}
}

// BenchmarkResponseContent is the same lookup on an answer the Client has
// read, which it checked to be well-formed JSON then.
func BenchmarkResponseContent(b *testing.B) {
	resp := &Response{Body: benchAnswer(), valid: true}
	b.ReportAllocs()
	b.SetBytes(int64(len(resp.Body)))
	for b.Loop() {
		if s, err := resp.Content(); err != nil || s == "" {
			b.Fatalf("Content = %q, %v", s, err)
		}
	}
}

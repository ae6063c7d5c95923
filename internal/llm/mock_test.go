package llm

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const mockRequest = `{"model":"gpt-4o-mini","messages":[` +
	`{"role":"system","content":"You are terse."},` +
	`{"role":"user","content":"first question"},` +
	`{"role":"assistant","content":"first answer"},` +
	`{"role":"user","content":[{"type":"text","text":"Tell me about Go channels"}]}]}`

func TestMockCompleteShapeAndDeterminism(t *testing.T) {
	t.Parallel()
	m := NewMock()
	a, err := m.Complete(context.Background(), []byte(mockRequest))
	if err != nil {
		t.Fatal(err)
	}
	b, err := m.Complete(context.Background(), []byte(mockRequest))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Body, b.Body) {
		t.Errorf("same request, different answers:\n%s\n%s", a.Body, b.Body)
	}

	var got struct {
		ID      string `json:"id"`
		Object  string `json:"object"`
		Created int64  `json:"created"`
		Model   string `json:"model"`
		Choices []struct {
			Index   int `json:"index"`
			Message struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage Usage `json:"usage"`
	}
	if err := json.Unmarshal(a.Body, &got); err != nil {
		t.Fatalf("answer is not JSON: %v", err)
	}
	if !strings.HasPrefix(got.ID, "chatcmpl-") || got.Object != "chat.completion" || got.Created == 0 || got.Model != "gpt-4o-mini" {
		t.Errorf("header fields = %+v", got)
	}
	if len(got.Choices) != 1 {
		t.Fatalf("choices = %d", len(got.Choices))
	}
	c := got.Choices[0]
	if c.Message.Role != "assistant" || c.FinishReason != "stop" {
		t.Errorf("choice = %+v", c)
	}
	if want := "Mock reply: Tell me about Go channels"; c.Message.Content != want {
		t.Errorf("content = %q, want %q", c.Message.Content, want)
	}
	if got.Usage != a.Usage || a.Model != "gpt-4o-mini" || a.Status != 200 {
		t.Errorf("Response fields disagree with body: %+v vs usage %+v", a, got.Usage)
	}
	prompt := EstimateTokens("You are terse.") + EstimateTokens("first question") +
		EstimateTokens("first answer") + EstimateTokens("Tell me about Go channels")
	want := Usage{PromptTokens: prompt, CompletionTokens: EstimateTokens(c.Message.Content)}
	want.TotalTokens = want.PromptTokens + want.CompletionTokens
	if a.Usage != want {
		t.Errorf("usage = %+v, want %+v", a.Usage, want)
	}
	if content, err := FirstMessageContent(a.Body); err != nil || content != c.Message.Content {
		t.Errorf("FirstMessageContent = %q, %v", content, err)
	}

	other, err := m.Complete(context.Background(), []byte(strings.Replace(mockRequest, "channels", "maps", 1)))
	if err != nil {
		t.Fatal(err)
	}
	var otherID struct{ ID string }
	json.Unmarshal(other.Body, &otherID)
	if otherID.ID == got.ID {
		t.Error("different requests share an id")
	}
}

func TestMockEchoIsCapped(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("ü", 300)
	body, _ := json.Marshal(map[string]any{"model": "m", "messages": []map[string]string{{"role": "user", "content": long}}})
	resp, err := NewMock().Complete(context.Background(), body)
	if err != nil {
		t.Fatal(err)
	}
	content, err := FirstMessageContent(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if want := "Mock reply: " + strings.Repeat("ü", 200); content != want {
		t.Errorf("content has %d runes, want the prefix plus 200", len([]rune(content)))
	}
}

func TestMockStreamMatchesComplete(t *testing.T) {
	t.Parallel()
	m := NewMock()
	plain, err := m.Complete(context.Background(), []byte(mockRequest))
	if err != nil {
		t.Fatal(err)
	}
	wantContent, _ := FirstMessageContent(plain.Body)

	for _, includeUsage := range []bool{false, true} {
		req := strings.Replace(mockRequest, `"model"`, `"stream":true,"stream_options":{"include_usage":`+map[bool]string{true: "true", false: "false"}[includeUsage]+`},"model"`, 1)
		s, err := m.Stream(context.Background(), []byte(req))
		if err != nil {
			t.Fatal(err)
		}
		var content strings.Builder
		var chunks, finishes, usageChunks int
		for {
			p, err := s.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			chunks++
			var c struct {
				Object  string `json:"object"`
				Choices []struct {
					FinishReason *string `json:"finish_reason"`
				} `json:"choices"`
				Usage json.RawMessage `json:"usage"`
			}
			if err := json.Unmarshal(p, &c); err != nil {
				t.Fatalf("chunk %q: %v", p, err)
			}
			if c.Object != "chat.completion.chunk" {
				t.Errorf("object = %q", c.Object)
			}
			if len(c.Choices) == 1 && c.Choices[0].FinishReason != nil {
				finishes++
			}
			if len(c.Choices) == 0 {
				usageChunks++
			}
			if includeUsage != (c.Usage != nil) {
				t.Errorf("include_usage=%v but chunk usage field is %q", includeUsage, c.Usage)
			}
			d, err := StreamDelta(p)
			if err != nil {
				t.Fatal(err)
			}
			content.WriteString(d)
		}
		s.Close()
		if content.String() != wantContent {
			t.Errorf("streamed content %q, plain %q", content.String(), wantContent)
		}
		if chunks < 4 || finishes != 1 {
			t.Errorf("chunks = %d with %d finish chunks; want several deltas and one finish", chunks, finishes)
		}
		u, ok := s.Usage()
		if includeUsage {
			if usageChunks != 1 || !ok || u != plain.Usage {
				t.Errorf("usage chunks = %d, Usage() = %+v, %v; want one chunk with %+v", usageChunks, u, ok, plain.Usage)
			}
		} else if usageChunks != 0 || ok {
			t.Errorf("usage sent without include_usage: %d chunks, %+v", usageChunks, u)
		}
	}
}

func TestMockRejectsBadRequests(t *testing.T) {
	t.Parallel()
	m := NewMock()
	for _, body := range []string{`not json`, `{"model":"m"}`, `{"model":"m","messages":[]}`} {
		_, err := m.Complete(context.Background(), []byte(body))
		var ue *UpstreamError
		if !errors.Is(err, ErrUpstreamRejected) || !errors.As(err, &ue) || ue.Status != 400 {
			t.Errorf("%s: err = %v, want 400 rejected", body, err)
			continue
		}
		var envelope struct {
			Error struct {
				Message string `json:"message"`
				Type    string `json:"type"`
			} `json:"error"`
		}
		if json.Unmarshal(ue.Body, &envelope) != nil || envelope.Error.Message == "" || envelope.Error.Type != "invalid_request_error" {
			t.Errorf("%s: body %s is not an OpenAI error", body, ue.Body)
		}
		if _, err := m.Stream(context.Background(), []byte(body)); !errors.Is(err, ErrUpstreamRejected) {
			t.Errorf("%s: Stream err = %v", body, err)
		}
	}
}

func TestMockHonoursCancelledContext(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m := NewMock()
	if _, err := m.Complete(ctx, []byte(mockRequest)); !errors.Is(err, context.Canceled) {
		t.Errorf("Complete: %v", err)
	}
	if _, err := m.Stream(ctx, []byte(mockRequest)); !errors.Is(err, context.Canceled) {
		t.Errorf("Stream: %v", err)
	}
	if _, err := m.Embeddings(ctx, []byte(`{"input":"x"}`)); !errors.Is(err, context.Canceled) {
		t.Errorf("Embeddings: %v", err)
	}
	if _, err := m.Models(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Models: %v", err)
	}
}

type embeddingList struct {
	Object string `json:"object"`
	Model  string `json:"model"`
	Data   []struct {
		Object    string          `json:"object"`
		Index     int             `json:"index"`
		Embedding json.RawMessage `json:"embedding"`
	} `json:"data"`
	Usage Usage `json:"usage"`
}

func decodeEmbeddings(t *testing.T, body []byte) ([][]float32, embeddingList) {
	t.Helper()
	var list embeddingList
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatalf("embeddings answer: %v", err)
	}
	vecs := make([][]float32, len(list.Data))
	for i, d := range list.Data {
		if d.Index != i || d.Object != "embedding" {
			t.Errorf("item %d = %+v", i, d)
		}
		var floats []float32
		if err := json.Unmarshal(d.Embedding, &floats); err == nil {
			vecs[i] = floats
			continue
		}
		var b64 string
		if err := json.Unmarshal(d.Embedding, &b64); err != nil {
			t.Fatalf("embedding %d is neither floats nor base64: %s", i, d.Embedding)
		}
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			t.Fatal(err)
		}
		for j := 0; j+4 <= len(raw); j += 4 {
			floats = append(floats, math.Float32frombits(binary.LittleEndian.Uint32(raw[j:])))
		}
		vecs[i] = floats
	}
	return vecs, list
}

func TestMockEmbeddings(t *testing.T) {
	t.Parallel()
	m := NewMock()
	resp, err := m.Embeddings(context.Background(), []byte(`{"model":"text-embedding-3-small","input":["alpha","beta","alpha"]}`))
	if err != nil {
		t.Fatal(err)
	}
	vecs, list := decodeEmbeddings(t, resp.Body)
	if list.Object != "list" || list.Model != "text-embedding-3-small" || resp.Model != list.Model || len(vecs) != 3 {
		t.Fatalf("answer = %s", resp.Body)
	}
	for i, v := range vecs {
		if len(v) != mockDimensions {
			t.Fatalf("vector %d has %d dimensions", i, len(v))
		}
		var norm float64
		for _, f := range v {
			norm += float64(f) * float64(f)
		}
		if math.Abs(norm-1) > 1e-5 {
			t.Errorf("vector %d has norm² %v, want 1", i, norm)
		}
	}
	if !cmp.Equal(vecs[0], vecs[2]) || cmp.Equal(vecs[0], vecs[1]) {
		t.Error("equal inputs must embed equally and different ones differently")
	}
	prompt := EstimateTokens("alpha")*2 + EstimateTokens("beta")
	want := Usage{PromptTokens: prompt, TotalTokens: prompt}
	if resp.Usage != want || list.Usage != want {
		t.Errorf("usage = %+v (body %+v), want %+v", resp.Usage, list.Usage, want)
	}

	b64, err := m.Embeddings(context.Background(), []byte(`{"input":"alpha","encoding_format":"base64"}`))
	if err != nil {
		t.Fatal(err)
	}
	b64vecs, _ := decodeEmbeddings(t, b64.Body)
	if !cmp.Equal(b64vecs[0], vecs[0]) {
		t.Errorf("base64 vector %v differs from float vector %v", b64vecs[0], vecs[0])
	}

	tokens, err := m.Embeddings(context.Background(), []byte(`{"input":[1,2,3]}`))
	if err != nil {
		t.Fatal(err)
	}
	if tv, _ := decodeEmbeddings(t, tokens.Body); len(tv) != 1 {
		t.Errorf("a token array is one input, got %d vectors", len(tv))
	}

	for _, bad := range []string{`{}`, `{"input":""}`, `{"input":[]}`, `{"input":5}`, `nope`} {
		if _, err := m.Embeddings(context.Background(), []byte(bad)); !errors.Is(err, ErrUpstreamRejected) {
			t.Errorf("%s: err = %v, want ErrUpstreamRejected", bad, err)
		}
	}
}

func TestMockModels(t *testing.T) {
	t.Parallel()
	raw, err := NewMock().Models(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Object string `json:"object"`
		Data   []struct {
			ID     string `json:"id"`
			Object string `json:"object"`
		} `json:"data"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range list.Data {
		ids = append(ids, d.ID)
		if d.Object != "model" {
			t.Errorf("model %q has object %q", d.ID, d.Object)
		}
	}
	if diff := cmp.Diff([]string{mockChatModel, mockEmbeddingModel}, ids); list.Object != "list" || diff != "" {
		t.Errorf("models (-want +got):\n%s", diff)
	}
}

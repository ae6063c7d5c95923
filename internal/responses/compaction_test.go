package responses

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSealerOpensOnlyItsOwnForTheSameUser(t *testing.T) {
	t.Parallel()
	s, err := NewSealer([]byte("secret-one-secret-one-secret-one"))
	if err != nil {
		t.Fatal(err)
	}
	rotated, _ := NewSealer([]byte("secret-two-secret-two-secret-two"))
	sealed := s.Seal("u1", "the summary", time.Now())
	if strings.Contains(sealed, "summary") {
		t.Fatal("the summary shows through")
	}
	if got, err := s.Open("u1", sealed); err != nil || got != "the summary" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	flipped := []byte(sealed)
	flipped[len(flipped)-3] ^= 1
	for name, tc := range map[string]struct {
		sealer  *Sealer
		user    string
		content string
	}{
		"another user":       {s, "u2", sealed},
		"a rotated key":      {rotated, "u1", sealed},
		"a changed byte":     {s, "u1", string(flipped)},
		"another format":     {s, "u1", "gAAAAABpM0Yj-other"},
		"not base64":         {s, "u1", compactionPrefix + "!!!"},
		"too short":          {s, "u1", compactionPrefix + "AAAA"},
		"empty after prefix": {s, "u1", compactionPrefix},
	} {
		if _, err := tc.sealer.Open(tc.user, tc.content); !errors.Is(err, ErrSealedContent) {
			t.Errorf("%s: %v, want ErrSealedContent", name, err)
		}
	}
}

func TestUnsealNamesTheItemAndFeedsTheSummaryUpstream(t *testing.T) {
	t.Parallel()
	s, _ := NewSealer([]byte("k"))
	req, err := Parse([]byte(`{"input":[{"type":"compaction","encrypted_content":"` + s.Seal("u", "they launch Tuesday", time.Now()) + `"},` +
		`{"type":"compaction","id":"cmp_bad","encrypted_content":"x"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	err = s.Unseal("u", req.Input, "input")
	var pe *ParamError
	if !errors.As(err, &pe) || pe.Param != "input[1].encrypted_content" || pe.Code != "invalid_encrypted_content" || !strings.Contains(pe.Message, "cmp_bad") {
		t.Fatalf("Unseal = %v", err)
	}
	req.Input = req.Input[:1]
	if err := s.Unseal("u", req.Input, "input"); err != nil {
		t.Fatal(err)
	}
	chat, err := ChatRequest(req, nil, ChatOptions{Model: "m"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(chat.Body), `"role":"system","content":"Summary of the earlier part of this conversation, which it replaces:\n\nthey launch Tuesday"`) {
		t.Errorf("chat request: %s", chat.Body)
	}
	if b, _ := req.Input[0].MarshalJSON(); strings.Contains(string(b), "Tuesday") {
		t.Errorf("the summary is written out: %s", b)
	}
}

func TestParseCompact(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ body, param string }{
		{`{"input":"x"}`, "model"},
		{`{"model":"m"}`, "input"},
		{`{"model":"m","input":"x","stream":true}`, "stream"},
		{`{"model":"m","input":[{"type":"reasoning"}]}`, "input[0].type"},
	} {
		_, err := ParseCompact([]byte(tc.body))
		var pe *ParamError
		if !errors.As(err, &pe) || pe.Param != tc.param {
			t.Errorf("%s: %v, want a ParamError naming %s", tc.body, err, tc.param)
		}
	}
	c, err := ParseCompact([]byte(`{"model":"m","input":"hello","instructions":"be kind","prompt_cache_key":"k"}`))
	if err != nil {
		t.Fatal(err)
	}
	req := c.Request()
	if len(req.Input) != 3 || req.Input[0].Role != "developer" || req.Input[1].Text() != "hello" || req.Input[2].Text() != compactPrompt || *req.Instructions != CompactInstructions {
		t.Errorf("compaction request: %+v", req)
	}
}

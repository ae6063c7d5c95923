package gateway

import "testing"

func TestPromptText(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		`{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]}`:            "Be brief.Hi",
		`{"messages":[{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{}}]}]}`: "look",
		`{"model":"e","input":["a","bc"]}`: "abc",
		`{"model":"e","input":"abc"}`:      "abc",
		`{"prompt":"legacy"}`:              `{"prompt":"legacy"}`,
	}
	for req, want := range cases {
		if got := promptText([]byte(req)); got != want {
			t.Errorf("promptText(%s) = %q, want %q", req, got, want)
		}
	}
}

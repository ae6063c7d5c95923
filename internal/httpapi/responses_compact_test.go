package httpapi

import (
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// TestCompactionIsGovernedAndSealed: a compaction is one governed call (a
// rate-limit token, its tokens in /usage); a bad request spends nothing;
// the item it returns opens only for its owner, and a changed one is a
// 400 naming it.
func TestCompactionIsGovernedAndSealed(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 2})
	tok := a.user("compact@example.com")
	for _, body := range []string{`{"input":"x"}`, `{"model":"m"}`, `{"model":"m","input":"x","tools":[]}`} {
		if r := a.do("POST", "/v1/responses/compact", tok, body); r.status != 400 {
			t.Errorf("%s: %d %s", body, r.status, r.body)
		}
	}
	r := a.do("POST", "/v1/responses/compact", tok, `{"model":"m","input":[{"role":"user","content":"We launch Tuesday."},{"role":"assistant","content":"Noted."}]}`)
	item := gjson.GetBytes(r.body, "output.0")
	if r.status != 200 || gjson.GetBytes(r.body, "object").Str != "response.compaction" || item.Get("type").Str != "compaction" ||
		!strings.HasPrefix(item.Get("id").Str, "cmp_") || gjson.GetBytes(r.body, "usage.total_tokens").Int() == 0 {
		t.Fatalf("compact: %d %s", r.status, r.body)
	}
	waitFor(t, func() bool {
		u := a.do("GET", "/usage", tok, nil)
		return gjson.GetBytes(u.body, "totals.total_tokens").Int() == gjson.GetBytes(r.body, "usage.total_tokens").Int()
	})
	sealed := item.Get("encrypted_content").Str
	other := a.user("compact-other@example.com")
	for _, tc := range []struct{ tok, content string }{
		{other, sealed},
		{tok, sealed[:len(sealed)-2] + "xx"},
	} {
		r := a.do("POST", "/v1/responses", tc.tok, `{"model":"m","input":[{"type":"compaction","encrypted_content":"`+tc.content+`"},{"role":"user","content":"hi"}]}`)
		if r.status != 400 || gjson.GetBytes(r.body, "error.param").Str != "input[0].encrypted_content" || gjson.GetBytes(r.body, "error.code").Str != "invalid_encrypted_content" {
			t.Errorf("foreign or changed compaction: %d %s", r.status, r.body)
		}
	}
	// The owner's goes through, and spends the second token; the third
	// call is refused.
	if r := a.do("POST", "/v1/responses", tok, `{"model":"m","input":[{"type":"compaction","encrypted_content":"`+sealed+`"},{"role":"user","content":"hi"}]}`); r.status != 200 {
		t.Errorf("the owner's compaction: %d %s", r.status, r.body)
	}
	if r := a.do("POST", "/v1/responses/compact", tok, `{"model":"m","input":"x"}`); r.status != 429 {
		t.Errorf("compaction with a spent bucket: %d", r.status)
	}
}

package httpapi

import (
	"fmt"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// TestConversationsRefuseBadInput: each bad request is a 400 (or the
// conversation's 404) naming what is wrong, and changes nothing.
func TestConversationsRefuseBadInput(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	tok := a.user("conv-bad@example.com")
	r := a.do("POST", "/v1/conversations", tok, `{"items":[{"role":"user","content":"hi"}]}`)
	id := gjson.GetBytes(r.body, "id").Str
	if r.status != 200 || !strings.HasPrefix(id, "conv_") || gjson.GetBytes(r.body, "object").Str != "conversation" {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	many := "[" + strings.TrimSuffix(strings.Repeat(`{"role":"user","content":"x"},`, 21), ",") + "]"
	for _, tc := range []struct{ method, path, body, param string }{
		{"POST", "/v1/conversations", `{"metadata":{"k":1}}`, "metadata"},
		{"POST", "/v1/conversations", `{"items":` + many + `}`, "items"},
		{"POST", "/v1/conversations", `{"items":[{"type":"reasoning"}]}`, "items[0]"},
		{"POST", "/v1/conversations", `{"bogus":1}`, ""},
		{"POST", "/v1/conversations/" + id, `{}`, "metadata"},
		{"POST", "/v1/conversations/" + id + "/items", `{}`, "items"},
		{"POST", "/v1/conversations/" + id + "/items", `{"items":[{"type":"compaction","encrypted_content":"x"}]}`, "items[0].encrypted_content"},
		{"GET", "/v1/conversations/" + id + "/items?limit=0", "", "limit"},
		{"GET", "/v1/conversations/" + id + "/items?order=up", "", "order"},
		{"GET", "/v1/conversations/" + id + "/items?after=msg_nope", "", "after"},
	} {
		var body any
		if tc.body != "" {
			body = tc.body
		}
		r := a.do(tc.method, tc.path, tok, body)
		if r.status != 400 || !strings.HasPrefix(gjson.GetBytes(r.body, "error.param").Str, tc.param) {
			t.Errorf("%s %s %s: %d %s, want 400 naming %q", tc.method, tc.path, tc.body, r.status, r.body, tc.param)
		}
	}
	for _, path := range []string{"/v1/conversations/conv_nope", "/v1/conversations/conv_nope/items", fmt.Sprintf("/v1/conversations/%s/items/msg_nope", id)} {
		if r := a.do("GET", path, tok, nil); r.status != 404 {
			t.Errorf("GET %s: %d %s", path, r.status, r.body)
		}
	}
	// Nothing above changed the conversation: still its one item.
	r = a.do("GET", "/v1/conversations/"+id+"/items", tok, nil)
	if n := len(gjson.GetBytes(r.body, "data").Array()); r.status != 200 || n != 1 || gjson.GetBytes(r.body, "has_more").Bool() {
		t.Errorf("items after the refusals: %d %s", r.status, r.body)
	}
}

package httpapi

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/responses"
	"github.com/coder/websocket"
	"github.com/tidwall/gjson"
)

// dialResponses opens the WebSocket mode as token.
func (a *testAPI) dialResponses(token string) *websocket.Conn {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(a.srv.URL, "http")+"/v1/responses",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	if err != nil {
		a.t.Fatalf("dial: %v", err)
	}
	a.t.Cleanup(func() { conn.CloseNow() })
	return conn
}

// socketTurn sends msg and reads events up to a terminal or error event,
// checking sequence numbers; it returns the events' types and the last.
func socketTurn(t *testing.T, conn *websocket.Conn, msg string) ([]string, gjson.Result) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	var types []string
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatalf("read after %v: %v", types, err)
		}
		ev := gjson.ParseBytes(data)
		typ := ev.Get("type").Str
		if typ != "error" && ev.Get("sequence_number").Int() != int64(len(types)) {
			t.Fatalf("%s has sequence_number %d after %d events", typ, ev.Get("sequence_number").Int(), len(types))
		}
		types = append(types, typ)
		switch typ {
		case "error", "response.completed", "response.failed", "response.incomplete":
			return types, ev
		}
	}
}

func TestResponsesSocketUpgradeIsAuthenticated(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	tok := a.user("ws-auth@example.com")
	if r := a.do("GET", "/v1/responses", tok, nil); r.status != http.StatusUpgradeRequired || gjson.GetBytes(r.body, "error.message").Str == "" {
		t.Errorf("plain GET: %d %s, want 426", r.status, r.body)
	}
	ctx := t.Context()
	_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(a.srv.URL, "http")+"/v1/responses", nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("upgrade without credentials: %v %v, want 401", err, resp)
	}
}

// TestResponsesSocketTurnsErrorsAndLimits runs turns on one socket: each
// response.create spends one rate-limit token, errors (a bad message, an
// unknown previous response, the spent bucket) come as error events with
// the HTTP status, and the socket stays usable after each.
func TestResponsesSocketTurnsErrorsAndLimits(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 2})
	tok := a.user("ws-turns@example.com")
	conn := a.dialResponses(tok)

	types, last := socketTurn(t, conn, `{"type":"response.create","model":"m","store":false,"input":"hello"}`)
	want := "response.created response.in_progress response.output_item.added response.content_part.added"
	if !strings.HasPrefix(strings.Join(types, " "), want) || last.Get("type").Str != "response.completed" {
		t.Fatalf("first turn: %v", types)
	}
	first := last.Get("response.id").Str

	for _, tc := range []struct{ msg, code, param string }{
		{`{"type":"session.update"}`, "invalid_type", "type"},
		{`{"type":"response.create","model":"m","input":"x","stream":true}`, "unknown_parameter", "stream"},
		{`{"type":"response.create","model":"m","input":"x","previous_response_id":"resp_nope"}`, "previous_response_not_found", "previous_response_id"},
		{`{"type":"response.create","model":"m","store":false,"previous_response_id":"` + first + `","input":[{"type":"function_call_output","call_id":"nope","output":"x"}]}`, "", "input[0].call_id"},
		// The failed continuation forgot the first response.
		{`{"type":"response.create","model":"m","store":false,"previous_response_id":"` + first + `","input":"again"}`, "previous_response_not_found", "previous_response_id"},
	} {
		_, ev := socketTurn(t, conn, tc.msg)
		if ev.Get("type").Str != "error" || ev.Get("status").Int() != 400 || ev.Get("error.param").Str != tc.param ||
			(tc.code != "" && ev.Get("error.code").Str != tc.code) || ev.Get("error.code").Str == "" {
			t.Errorf("%s: %s", tc.msg, ev.Raw)
		}
	}
	// None of those spent a token: the second of two is still there.
	if _, ev := socketTurn(t, conn, `{"type":"response.create","model":"m","store":false,"input":"two"}`); ev.Get("type").Str != "response.completed" {
		t.Fatalf("second turn: %s", ev.Raw)
	}
	if _, ev := socketTurn(t, conn, `{"type":"response.create","model":"m","input":"three"}`); ev.Get("status").Int() != 429 || ev.Get("error.code").Str != "rate_limit_exceeded" {
		t.Errorf("third turn with a spent bucket: %s", ev.Raw)
	}
	if _, ev := socketTurn(t, conn, `not json`); ev.Get("type").Str != "error" {
		t.Errorf("after the 429 the socket still answers: %s", ev.Raw)
	}
}

// TestResponsesSocketClosesIdleAndDrains closes an idle socket with 1000
// and, on a drain, lets a running turn finish before closing with 1001.
func TestResponsesSocketClosesIdleAndDrains(t *testing.T) {
	t.Parallel()
	sockets := NewSockets()
	a := newTestAPI(t, testOptions{sockets: sockets})
	tok := a.user("ws-drain@example.com")

	idle := newTestAPI(t, testOptions{socketIdle: 50 * time.Millisecond})
	idleConn := idle.dialResponses(idle.user("ws-idle@example.com"))
	_, _, err := idleConn.Read(t.Context())
	if s := websocket.CloseStatus(err); s != websocket.StatusNormalClosure || !strings.Contains(err.Error(), "idle timeout") {
		t.Errorf("idle socket: %v", err)
	}

	conn := a.dialResponses(tok)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	msg := `{"type":"response.create","model":"m","input":"` + "[fault:held]" + ` please"}`
	if err := conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	// Wait for the first text delta: the turn is running, the upstream
	// holds the rest of its stream.
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if gjson.GetBytes(data, "type").Str == "response.output_text.delta" {
			break
		}
	}
	sockets.Drain()
	if r := a.do("GET", "/v1/responses", tok, nil, "Upgrade", "websocket"); r.status != http.StatusServiceUnavailable {
		t.Errorf("a new socket while draining: %d", r.status)
	}
	a.upstream.Release()
	var final string
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusGoingAway {
				t.Errorf("closed with %v, want 1001", err)
			}
			break
		}
		if typ := gjson.GetBytes(data, "type").Str; strings.HasPrefix(typ, "response.") && gjson.GetBytes(data, "response.status").Exists() {
			final = gjson.GetBytes(data, "response.status").Str
		}
	}
	if final != responses.StatusCompleted {
		t.Errorf("the running turn ended %q before the close, want completed", final)
	}
	if err := sockets.Wait(ctx); err != nil {
		t.Errorf("Wait: %v", err)
	}
}

func TestSocketMemoryForgetsOldestPastItsBound(t *testing.T) {
	t.Parallel()
	m := newSocketMemory(1000)
	item := func(n int) []responses.Item {
		return []responses.Item{{Type: responses.TypeMessage, Content: []responses.Part{{Type: responses.PartInputText, Text: strings.Repeat("x", n)}}}}
	}
	m.put("a", item(300))
	m.put("b", item(300))
	m.put("c", item(300)) // past 1000 with a: a goes
	if m.has("a") || !m.has("b") || !m.has("c") {
		t.Errorf("after three: a=%v b=%v c=%v", m.has("a"), m.has("b"), m.has("c"))
	}
	m.put("huge", item(5000))
	if m.has("huge") || !m.has("c") {
		t.Error("an entry larger than the bound is kept, or pushed others out")
	}
	m.drop("b")
	if m.has("b") || m.used <= 0 || m.used > 1000 {
		t.Errorf("after drop: used %d", m.used)
	}
}

// TestResponsesSocketRechecksCredentials stops an open socket at its next
// turn once the credentials it was opened with no longer hold: a revoked
// API key, or the account behind a token disabled. The refusal is an
// error event with the HTTP answer's status and code, then a close with
// 1008 (policy violation).
func TestResponsesSocketRechecksCredentials(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{capacity: 1000})
	closedWith := func(conn *websocket.Conn) websocket.StatusCode {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _, err := conn.Read(ctx)
		return websocket.CloseStatus(err)
	}
	const create = `{"type":"response.create","model":"m","store":false,"input":"hello"}`

	t.Run("revoked key", func(t *testing.T) {
		tok := a.user("ws-revoked@example.com")
		id, key := a.newKey(tok, "socket")
		conn := a.dialResponses(key)
		if _, ev := socketTurn(t, conn, create); ev.Get("type").Str != "response.completed" {
			t.Fatalf("turn before the revoke: %s", ev.Raw)
		}
		if r := a.do("DELETE", "/keys/"+id, tok, nil); r.status != http.StatusNoContent {
			t.Fatalf("revoke: %d %s", r.status, r.body)
		}
		_, ev := socketTurn(t, conn, create)
		if ev.Get("type").Str != "error" || ev.Get("status").Int() != http.StatusUnauthorized || ev.Get("error.message").Str == "" {
			t.Errorf("turn after the revoke: %s, want a 401 error event", ev.Raw)
		}
		if code := closedWith(conn); code != websocket.StatusPolicyViolation {
			t.Errorf("socket closed with %d, want 1008", code)
		}
	})

	t.Run("disabled account", func(t *testing.T) {
		tok := a.user("ws-disabled@example.com")
		conn := a.dialResponses(tok)
		if _, ev := socketTurn(t, conn, create); ev.Get("type").Str != "response.completed" {
			t.Fatalf("turn before disabling: %s", ev.Raw)
		}
		if _, err := a.store.SetDisabled(context.Background(), a.userID(tok), true); err != nil {
			t.Fatal(err)
		}
		// Account states are cached for a moment, as for every request.
		var refused result
		waitFor(t, func() bool {
			refused = a.do("GET", "/v1/models", tok, nil)
			return refused.status == http.StatusUnauthorized
		})
		// The event says what an HTTP request with the token is told.
		_, ev := socketTurn(t, conn, create)
		if ev.Get("type").Str != "error" || ev.Get("status").Int() != http.StatusUnauthorized ||
			ev.Get("error.message").Str != "Account disabled" || ev.Get("error.message").Str != gjson.GetBytes(refused.body, "error.message").Str ||
			ev.Get("error.code").Str != gjson.GetBytes(refused.body, "error.code").Str {
			t.Errorf("turn after disabling: %s, want the 401 an HTTP request gets: %s", ev.Raw, refused.body)
		}
		if code := closedWith(conn); code != websocket.StatusPolicyViolation {
			t.Errorf("socket closed with %d, want 1008", code)
		}
	})
}

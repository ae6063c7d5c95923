package systemtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/pgtest"
	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
	"github.com/coder/websocket"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/conversations"
	"github.com/openai/openai-go/v3/option"
	oresponses "github.com/openai/openai-go/v3/responses"
	"github.com/openai/openai-go/v3/shared"
	"github.com/tidwall/gjson"
)

// part2Replicas starts two replicas sharing Redis and PostgreSQL in front
// of a recording fake upstream, and signs a user up.
func part2Replicas(t *testing.T, email string) ([]*server, *fakeopenai.Server, string) {
	t.Helper()
	db := pgtest.URL(t) // skips without TEST_DATABASE_URL
	up := fakeopenai.New(t, fakeopenai.Options{Record: true})
	env := replicaEnv(t, redistest.URL(t), db, up.URL)
	env["RATE_LIMIT_FREE"] = "100"
	servers := startReplicas(t, 2, env)
	return servers, up, signUp(t, servers[0], servers[1], email)
}

func sdkOf(s *server, token string) openai.Client {
	return openai.NewClient(option.WithBaseURL(s.url+"/v1"), option.WithAPIKey(token), option.WithMaxRetries(0))
}

// wsTurn sends one response.create on conn and reads its events up to the
// terminal one (or an error event), checking that sequence numbers count
// up from 0. It returns the final event.
func wsTurn(t *testing.T, conn *oresponses.ResponseConnection, body map[string]any) gjson.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body["type"] = "response.create"
	raw, _ := json.Marshal(body)
	if err := conn.SendRaw(ctx, raw); err != nil {
		t.Fatalf("send: %v", err)
	}
	for seq := int64(0); ; seq++ {
		msg, err := conn.RecvRaw(ctx)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		ev := gjson.ParseBytes(msg)
		switch ev.Get("type").Str {
		case "error":
			return ev
		case "response.completed", "response.failed", "response.incomplete":
			if got := ev.Get("sequence_number").Int(); got != seq {
				t.Errorf("terminal event's sequence_number %d, want %d", got, seq)
			}
			return ev
		}
		if got := ev.Get("sequence_number").Int(); got != seq {
			t.Fatalf("event %s has sequence_number %d, want %d", ev.Get("type").Str, got, seq)
		}
	}
}

// lastMessages is what the upstream was last sent, as role:content lines.
func lastMessages(up *fakeopenai.Server) string {
	body, _ := up.LastRequest()
	var b strings.Builder
	for _, m := range gjson.GetBytes(body, "messages").Array() {
		fmt.Fprintf(&b, "%s:%s\n", m.Get("role").Str, m.Get("content").String())
	}
	return b.String()
}

// TestResponsesWebSocketAcrossReplicas uses the official SDK's WebSocket
// mode: stored and store:false turns on one socket, then a reconnect to
// the other replica that continues the stored response (found in the
// shared database) but not the store:false one (that socket's memory is
// gone), whose error leaves the socket usable.
func TestResponsesWebSocketAcrossReplicas(t *testing.T) {
	t.Parallel()
	servers, up, token := part2Replicas(t, "ws@example.com")
	ctx := context.Background()

	c0 := sdkOf(servers[0], token)
	conn, err := c0.Responses.Connect(ctx, oresponses.ResponseConnectionOptions{})
	if err != nil {
		t.Fatalf("connect to replica 0: %v", err)
	}
	first := wsTurn(t, conn, map[string]any{"model": "up-model", "input": "My name is Alice."})
	if first.Get("type").Str != "response.completed" || !first.Get("response.store").Bool() {
		t.Fatalf("first turn: %s", first.Raw)
	}
	stored := first.Get("response.id").Str
	second := wsTurn(t, conn, map[string]any{"model": "up-model", "store": false, "previous_response_id": stored, "input": "Remember: cobalt."})
	if second.Get("type").Str != "response.completed" {
		t.Fatalf("store:false continuation on the same socket: %s", second.Raw)
	}
	if got := lastMessages(up); !strings.Contains(got, "user:My name is Alice.") || !strings.Contains(got, "user:Remember: cobalt.") {
		t.Errorf("second turn sent upstream:\n%s", got)
	}
	unstored := second.Get("response.id").Str
	if err := conn.Close(); err != nil {
		t.Logf("close: %v", err)
	}

	c1 := sdkOf(servers[1], token)
	conn1, err := c1.Responses.Connect(ctx, oresponses.ResponseConnectionOptions{})
	if err != nil {
		t.Fatalf("connect to replica 1: %v", err)
	}
	defer conn1.Close()
	miss := wsTurn(t, conn1, map[string]any{"model": "up-model", "store": false, "previous_response_id": unstored, "input": "And now?"})
	if miss.Get("type").Str != "error" || miss.Get("error.code").Str != "previous_response_not_found" || miss.Get("status").Int() != 400 {
		t.Errorf("continuing another socket's store:false response: %s", miss.Raw)
	}
	// The socket is still open: the stored response continues here.
	again := wsTurn(t, conn1, map[string]any{"model": "up-model", "previous_response_id": stored, "input": "What is my name?"})
	if again.Get("type").Str != "response.completed" {
		t.Fatalf("continuing the stored response on replica 1: %s", again.Raw)
	}
	if got := lastMessages(up); !strings.Contains(got, "user:My name is Alice.") || strings.Contains(got, "cobalt") {
		t.Errorf("continuation of the stored response sent upstream:\n%s", got)
	}
	// And the SDK's own reader gets the same final response.
	raw, _ := json.Marshal(map[string]any{"type": "response.create", "model": "up-model", "input": "hi", "store": false})
	if err := conn1.SendRaw(ctx, raw); err != nil {
		t.Fatal(err)
	}
	final, err := conn1.FinalResponse(ctx)
	if err != nil || final.Status != oresponses.ResponseStatusCompleted || final.OutputText() == "" {
		t.Fatalf("FinalResponse: %v %+v", err, final)
	}
	// An error event is the SDK's protocol error.
	raw, _ = json.Marshal(map[string]any{"type": "response.create", "model": "up-model", "input": "hi", "previous_response_id": "resp_nope"})
	_ = conn1.SendRaw(ctx, raw)
	if _, err := conn1.FinalResponse(ctx); !errors.As(err, new(*oresponses.ResponseProtocolError)) {
		t.Errorf("unknown previous response: %v, want a ResponseProtocolError", err)
	}
}

// TestResponsesCompactionThenContinuation compacts a conversation on one
// replica with the SDK and continues from the compaction item on the
// other: the summary goes upstream in place of the conversation, the
// client never sees it, and an altered item is a 400 naming it.
func TestResponsesCompactionThenContinuation(t *testing.T) {
	t.Parallel()
	servers, up, token := part2Replicas(t, "compact@example.com")
	ctx := context.Background()
	c0, c1 := sdkOf(servers[0], token), sdkOf(servers[1], token)

	compacted, err := c0.Responses.Compact(ctx, oresponses.ResponseCompactParams{
		Model: "up-model",
		Input: oresponses.ResponseCompactParamsInputUnion{OfResponseInputItemArray: []oresponses.ResponseInputItemUnionParam{
			oresponses.ResponseInputItemParamOfMessage("We launch on Tuesday; notify support first.", oresponses.EasyInputMessageRoleUser),
			oresponses.ResponseInputItemParamOfMessage("Understood.", oresponses.EasyInputMessageRoleAssistant),
		}},
	})
	if err != nil {
		t.Fatalf("compact: %v", err)
	}
	if len(compacted.Output) != 1 || compacted.Output[0].Type != "compaction" || compacted.Usage.TotalTokens == 0 {
		t.Fatalf("compacted: %s", compacted.RawJSON())
	}
	sealed := compacted.Output[0].AsCompaction().EncryptedContent
	if strings.Contains(sealed, "one two three") || strings.Contains(compacted.RawJSON(), "one two three") {
		t.Fatal("the summary is readable in the compaction item")
	}
	if got := lastMessages(up); !strings.Contains(got, "We launch on Tuesday") {
		t.Errorf("compaction call sent upstream:\n%s", got)
	}

	next, err := c1.Responses.New(ctx, oresponses.ResponseNewParams{
		Model: "up-model",
		Input: oresponses.ResponseNewParamsInputUnion{OfInputItemList: []oresponses.ResponseInputItemUnionParam{
			oresponses.ResponseInputItemParamOfCompaction(sealed),
			oresponses.ResponseInputItemParamOfMessage("When do we launch?", oresponses.EasyInputMessageRoleUser),
		}},
	})
	if err != nil || next.Status != oresponses.ResponseStatusCompleted {
		t.Fatalf("continuing from the compaction on replica 1: %v", err)
	}
	got := lastMessages(up)
	// The fake's answer ("one two three") was the summary.
	if !strings.Contains(got, "system:Summary of the earlier part of this conversation") || !strings.Contains(got, "one two three") ||
		strings.Contains(got, "Tuesday") {
		t.Errorf("continuation sent upstream:\n%s", got)
	}
	// The stored response keeps the sealed item, so its chain continues.
	chained, err := c0.Responses.New(ctx, oresponses.ResponseNewParams{Model: "up-model", PreviousResponseID: openai.String(next.ID),
		Input: oresponses.ResponseNewParamsInputUnion{OfString: openai.String("And then?")}})
	if err != nil || chained.Status != oresponses.ResponseStatusCompleted || !strings.Contains(lastMessages(up), "Summary of the earlier part") {
		t.Fatalf("chain after a compaction: %v\n%s", err, lastMessages(up))
	}

	for name, content := range map[string]string{
		"altered": sealed[:len(sealed)-4] + "AAAA",
		"foreign": "gAAAAABpM0Yj-not-ours",
	} {
		r := do(t, "POST", servers[0].url+"/v1/responses", token, map[string]any{"model": "up-model",
			"input": []any{map[string]any{"type": "compaction", "encrypted_content": content}, map[string]any{"role": "user", "content": "hi"}}})
		if r.status != 400 || r.body["error"].(map[string]any)["param"] != "input[0].encrypted_content" {
			t.Errorf("%s compaction: %d %v", name, r.status, r.body)
		}
	}
	// Another user cannot use it either.
	other := signUp(t, servers[1], servers[0], "compact-other@example.com")
	r := do(t, "POST", servers[1].url+"/v1/responses", other, map[string]any{"model": "up-model",
		"input": []any{map[string]any{"type": "compaction", "encrypted_content": sealed}}})
	if r.status != 400 {
		t.Errorf("another user's compaction: %d %v", r.status, r.body)
	}
	// Compaction needs a model.
	if r := do(t, "POST", servers[0].url+"/v1/responses/compact", token, map[string]any{"input": "x"}); r.status != 400 {
		t.Errorf("compact without model: %d %v", r.status, r.body)
	}
}

// TestConversationsEndToEnd drives the Conversations API with the SDK
// across two replicas: create with items and metadata, responses that
// read and extend it, paginated listing, item get and delete, metadata
// update, another user's 404, and delete; then eight responses at once on
// one conversation keep all their items, each response's input and
// output together.
func TestConversationsEndToEnd(t *testing.T) {
	t.Parallel()
	servers, up, token := part2Replicas(t, "conv@example.com")
	ctx := context.Background()
	c0, c1 := sdkOf(servers[0], token), sdkOf(servers[1], token)

	conv, err := c0.Conversations.New(ctx, conversations.ConversationNewParams{
		Items:    []oresponses.ResponseInputItemUnionParam{oresponses.ResponseInputItemParamOfMessage("My name is Bob.", oresponses.EasyInputMessageRoleUser)},
		Metadata: shared.Metadata{"topic": "names"},
	})
	if err != nil || !strings.HasPrefix(conv.ID, "conv_") || gjson.Get(conv.RawJSON(), "metadata.topic").Str != "names" {
		t.Fatalf("create: %v %+v", err, conv)
	}
	resp, err := c1.Responses.New(ctx, oresponses.ResponseNewParams{Model: "up-model",
		Conversation: oresponses.ResponseNewParamsConversationUnion{OfString: openai.String(conv.ID)},
		Input:        oresponses.ResponseNewParamsInputUnion{OfString: openai.String("What is my name?")}})
	if err != nil || resp.Status != oresponses.ResponseStatusCompleted || resp.Conversation.ID != conv.ID {
		t.Fatalf("response in the conversation: %v %+v", err, resp)
	}
	if got := lastMessages(up); !strings.Contains(got, "user:My name is Bob.\nuser:What is my name?") {
		t.Errorf("the response's context upstream:\n%s", got)
	}

	var ids, kinds []string
	pager := c0.Conversations.Items.ListAutoPaging(ctx, conv.ID, conversations.ItemListParams{Limit: openai.Int(1), Order: conversations.ItemListParamsOrderAsc})
	for pager.Next() {
		it := pager.Current()
		ids, kinds = append(ids, it.ID), append(kinds, it.Type+"/"+it.Role)
	}
	if err := pager.Err(); err != nil {
		t.Fatal(err)
	}
	if want := "message/user message/user message/assistant"; strings.Join(kinds, " ") != want {
		t.Fatalf("items: %v, want %s", kinds, want)
	}
	if it, err := c1.Conversations.Items.Get(ctx, conv.ID, ids[2], conversations.ItemGetParams{}); err != nil || it.ID != ids[2] {
		t.Errorf("get item: %v", err)
	}
	if _, err := c1.Conversations.Items.New(ctx, conv.ID, conversations.ItemNewParams{Items: []oresponses.ResponseInputItemUnionParam{
		oresponses.ResponseInputItemParamOfMessage("Note.", oresponses.EasyInputMessageRoleDeveloper)}}); err != nil {
		t.Errorf("add items: %v", err)
	}
	if _, err := c0.Conversations.Items.Delete(ctx, conv.ID, ids[0]); err != nil {
		t.Errorf("delete item: %v", err)
	}
	page, err := c0.Conversations.Items.List(ctx, conv.ID, conversations.ItemListParams{})
	if err != nil || len(page.Data) != 3 || page.Data[0].Role != "developer" {
		t.Errorf("after delete and add, newest first: %v %s", err, page.RawJSON())
	}
	if c, err := c1.Conversations.Update(ctx, conv.ID, conversations.ConversationUpdateParams{Metadata: shared.Metadata{"topic": "renamed"}}); err != nil || gjson.Get(c.RawJSON(), "metadata.topic").Str != "renamed" {
		t.Errorf("update: %v", err)
	}

	other := signUp(t, servers[1], servers[0], "conv-other@example.com")
	for _, path := range []string{"/v1/conversations/" + conv.ID, "/v1/conversations/" + conv.ID + "/items", "/v1/conversations/" + conv.ID + "/items/" + ids[1]} {
		if r := do(t, "GET", servers[0].url+path, other, nil); r.status != 404 {
			t.Errorf("another user's GET %s: %d", path, r.status)
		}
	}
	if r := do(t, "POST", servers[0].url+"/v1/responses", other, map[string]any{"model": "up-model", "input": "hi", "conversation": conv.ID}); r.status != 404 {
		t.Errorf("a response in another user's conversation: %d %v", r.status, r.body)
	}

	// Eight responses at once, four on each replica.
	conc, err := c0.Conversations.New(ctx, conversations.ConversationNewParams{})
	if err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			c := []openai.Client{c0, c1}[i%2]
			_, err := c.Responses.New(ctx, oresponses.ResponseNewParams{Model: "up-model",
				Conversation: oresponses.ResponseNewParamsConversationUnion{OfString: openai.String(conc.ID)},
				Input:        oresponses.ResponseNewParamsInputUnion{OfString: openai.String(fmt.Sprintf("turn %d", i))}})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent response: %v", err)
		}
	}
	var all []conversations.ConversationItemUnion
	pager = c1.Conversations.Items.ListAutoPaging(ctx, conc.ID, conversations.ItemListParams{Limit: openai.Int(5), Order: conversations.ItemListParamsOrderAsc})
	for pager.Next() {
		all = append(all, pager.Current())
	}
	if len(all) != 2*n {
		t.Fatalf("%d items after %d concurrent responses, want %d", len(all), n, 2*n)
	}
	seen := map[string]bool{}
	for i := 0; i < len(all); i += 2 {
		in, out := all[i], all[i+1]
		if in.Role != "user" || out.Role != "assistant" {
			t.Fatalf("items %d and %d are %s and %s: a response's input and output were split", i, i+1, in.Role, out.Role)
		}
		seen[gjson.Get(in.RawJSON(), "content.0.text").Str] = true
	}
	if len(seen) != n {
		t.Errorf("inputs kept: %v", seen)
	}

	if d, err := c0.Conversations.Delete(ctx, conv.ID); err != nil || !d.Deleted {
		t.Errorf("delete: %v", err)
	}
	if _, err := c1.Conversations.Get(ctx, conv.ID); err == nil {
		t.Error("a deleted conversation is still there")
	}
}

// TestResponsesWebSocketShutdown stops the whole program (as SIGTERM
// does) while a WebSocket turn is running: the turn still completes on
// the socket, the socket is then closed with 1001, and the program exits
// cleanly with the response stored.
func TestResponsesWebSocketShutdown(t *testing.T) {
	t.Parallel()
	up := fakeopenai.New(t, fakeopenai.Options{})
	s := startServer(t, map[string]string{
		"DATABASE_URL": filepath.Join(t.TempDir(), "agentapi.db"), "OPENAI_API_KEY": "sk-upstream-test", "OPENAI_BASE_URL": up.URL + "/v1",
	})
	_, m, _ := call(t, "POST", s.url+"/auth/login", "", map[string]string{"email": "user@example.com", "password": "password"})
	token, _ := m["access_token"].(string)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.url, "http")+"/v1/responses",
		&websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer " + token}}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	if err := conn.Write(ctx, websocket.MessageText, []byte(`{"type":"response.create","model":"m","input":"[fault:held] hi"}`)); err != nil {
		t.Fatal(err)
	}
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if gjson.GetBytes(data, "type").Str == "response.output_text.delta" {
			break // running, the rest held upstream
		}
	}
	stopped := make(chan error, 1)
	go func() { stopped <- s.shutdown(t) }()
	up.Release()
	var final gjson.Result
	for {
		_, data, err := conn.Read(ctx)
		if err != nil {
			if websocket.CloseStatus(err) != websocket.StatusGoingAway {
				t.Errorf("socket closed with %v, want 1001", err)
			}
			break
		}
		if ev := gjson.ParseBytes(data); ev.Get("type").Str == "response.completed" {
			final = ev
		}
	}
	if final.Get("response.status").Str != "completed" {
		t.Errorf("the running turn did not complete before the close")
	}
	if err := <-stopped; err != nil {
		t.Errorf("shutdown: %v", err)
	}
}

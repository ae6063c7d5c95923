package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/agentapi/agentapi/internal/agent"
	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/responses"
	"github.com/agentapi/agentapi/internal/store"
	"github.com/agentapi/agentapi/internal/tier"
)

// responseStore keeps /v1/responses' responses (store.Store).
type responseStore interface {
	SaveResponse(ctx context.Context, r store.StoredResponse) error
	Response(ctx context.Context, userID, id string) (store.StoredResponse, error)
	ResponseChain(ctx context.Context, userID, id string, maxDepth int) ([]store.StoredResponse, error)
	DeleteResponse(ctx context.Context, userID, id string) error
}

// defaultResponsesTTL applies when Deps.ResponsesTTL is zero.
const defaultResponsesTTL = 30 * 24 * time.Hour

// saveTimeout bounds storing a finished response, which happens even when
// the client has gone (a disconnected stream is stored as incomplete).
const saveTimeout = 5 * time.Second

// responsesAPI serves /v1/responses, its WebSocket mode, compaction and
// the Conversations API. Every upstream call a response makes is one
// governed call of the gateway (modelRoutes.begin … Call.Finish).
type responsesAPI struct {
	m             *modelRoutes
	store         responseStore // nil: nothing can be stored or read
	conversations conversationStore
	ttl           time.Duration
	contextTokens int64
	// sealer seals compaction items; nil refuses them.
	sealer *responses.Sealer
	// sockets tracks the WebSockets of GET /v1/responses for shutdown.
	sockets *Sockets
	// socketIdle and socketMemory bound each WebSocket.
	socketIdle   time.Duration
	socketMemory int64
	// agent runs tools of type "mcp" (responses_agent.go); nil refuses
	// them.
	agent *agentRunner
}

func newResponsesAPI(d Deps, m *modelRoutes) *responsesAPI {
	a := &responsesAPI{m: m, ttl: d.ResponsesTTL, contextTokens: d.ResponsesContextTokens,
		sealer: d.CompactionSealer, sockets: d.Sockets, socketIdle: d.ResponsesSocketIdle, socketMemory: d.ResponsesSocketMemory,
		agent: newAgentRunner(d)}
	if d.Responses != nil {
		a.store = d.Responses
	}
	if d.Conversations != nil {
		a.conversations = d.Conversations
	}
	if a.sockets == nil {
		a.sockets = NewSockets()
	}
	if a.socketIdle <= 0 {
		a.socketIdle = defaultSocketIdle
	}
	if a.socketMemory <= 0 {
		a.socketMemory = defaultSocketMemory
	}
	if a.ttl <= 0 {
		a.ttl = defaultResponsesTTL
	}
	return a
}

// errParam is a *responses.ParamError as a 400 in OpenAI's shape.
func errParam(e *responses.ParamError) *apiError {
	return &apiError{status: http.StatusBadRequest, message: e.Message,
		openAI: openAIErrorFields{param: e.Param, code: e.Code}, cause: e}
}

// errResponseNotFound is the one answer for a response id the caller
// cannot see: unknown, deleted, expired or another user's.
func errResponseNotFound(id string) *apiError {
	return &apiError{status: http.StatusNotFound, message: fmt.Sprintf("Response with id '%s' not found.", truncateID(id)),
		openAI: openAIErrorFields{typ: "invalid_request_error"}}
}

func errStoreMissing() *apiError {
	return &apiError{status: http.StatusServiceUnavailable, message: "Response storage is not configured on this server",
		header: http.Header{"Retry-After": {"1"}}}
}

// truncateID keeps an id echoed in a message short.
func truncateID(id string) string {
	if len(id) > 128 {
		return id[:128]
	}
	return id
}

// writeError writes err, turning the responses package's parameter
// errors into 400s.
func (a *responsesAPI) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if pe, ok := errors.AsType[*responses.ParamError](err); ok {
		err = errParam(pe)
	}
	writeError(w, r, a.m.logger, err)
}

// handleCreateResponse is POST /v1/responses.
func handleCreateResponse(a *responsesAPI) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.create(w, r); err != nil {
			a.writeError(w, r, err)
		}
	})
}

// create serves POST /v1/responses; an error it returns has not been
// written yet.
func (a *responsesAPI) create(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	tr := a.m.limitBody(w, r)
	body, _, err := readOpenAIRequest(r)
	if err != nil {
		return err
	}
	req, err := responses.Parse(body)
	if err != nil {
		return err
	}
	t, err := a.prepare(ctx, tr, req, nil)
	if err != nil {
		return err
	}
	// Begin answers a refused call itself (429 and its headers).
	call, ok := a.m.begin(w, r, t.spec())
	if !ok {
		return nil
	}
	if t.tools != nil {
		return a.runAgent(w, r, call, t)
	}
	if req.Stream {
		a.streamHTTP(w, r, call, t)
		return nil
	}
	resp, err := a.runPlain(ctx, call, t)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// turn is one response ready to run: the checked request, the model it
// runs on, the context items that come before its input (a chain, a
// conversation, or a socket's memory), the upstream request built from
// them, and the response being built. Every way of creating a response
// (POST, its stream, a WebSocket's response.create) prepares a turn, runs
// it through one governed call, and finishes it with a.finish.
type turn struct {
	req     *responses.Request
	model   string
	history []responses.Item
	chat    responses.Chat
	resp    *responses.Response
	userID  string
	// mem is the WebSocket's memory of its store: false responses; nil
	// outside a socket.
	mem *socketMemory
	// tools are the request's MCP servers, resolved, when it runs the
	// tool loop; chatOpts convert each of its model turns.
	tools    *agentRequest
	chatOpts responses.ChatOptions
}

// spec is the governed call of the turn.
func (t *turn) spec() gateway.Spec {
	estimate := t.chat.Estimate
	if t.req.MaxOutputTokens != nil {
		estimate += *t.req.MaxOutputTokens
	}
	return gateway.Spec{Endpoint: "v1/responses", Model: t.model, Body: t.chat.Body, Estimate: estimate}
}

// prepare checks a parsed request against the caller's tier and the
// server, reads its context (previous_response_id from mem or the store,
// or its conversation), opens its compaction items, and builds the
// upstream request. Nothing is spent: an error here is the caller's to
// fix or a dependency that failed.
func (a *responsesAPI) prepare(ctx context.Context, tr tier.Tier, req *responses.Request, mem *socketMemory) (*turn, error) {
	gw := a.m.gw
	model := req.Model
	if model == "" {
		model = gw.DefaultModel()
	}
	if !gw.Allowed(model) {
		return nil, errModelNotAllowed(model)
	}
	p := principalFrom(ctx)
	if tr.MaxTokens > 0 && req.MaxOutputTokens != nil && *req.MaxOutputTokens > tr.MaxTokens {
		return nil, errOpenAIParam("max_output_tokens", fmt.Sprintf("'max_output_tokens' is %d; the %s tier allows at most %d output tokens per response",
			*req.MaxOutputTokens, tr.Name, tr.MaxTokens))
	}
	t := &turn{req: req, model: model, userID: p.UserID, mem: mem}
	var err error
	if usesAgent(req) {
		if t.tools, err = a.agentTools(ctx, tr, req); err != nil {
			return nil, err
		}
	}
	switch {
	case req.PreviousResponseID != "" && mem != nil && mem.has(req.PreviousResponseID):
		t.history = mem.items(req.PreviousResponseID)
	case a.store == nil && (req.Store || req.PreviousResponseID != "" || req.Conversation != ""):
		return nil, errStoreMissing()
	case req.Conversation != "":
		t.history, err = a.conversationHistory(ctx, p.UserID, req.Conversation)
	default:
		t.history, err = a.history(ctx, p.UserID, req)
	}
	if err != nil {
		return nil, err
	}
	histParam := "previous_response_id"
	if req.Conversation != "" {
		histParam = "conversation"
	}
	if err := a.sealer.Unseal(p.UserID, t.history, histParam); err != nil {
		return nil, err
	}
	if err := a.sealer.Unseal(p.UserID, req.Input, "input"); err != nil {
		return nil, err
	}
	if t.tools != nil {
		if err := agent.CheckApprovals(req, t.history); err != nil {
			return nil, err
		}
	}
	t.chatOpts = responses.ChatOptions{Model: model, Stream: req.Stream, DefaultMaxTokens: tr.MaxTokens, ContextTokens: a.contextTokens}
	t.chat, err = responses.ChatRequest(req, t.history, t.chatOpts)
	if err != nil {
		return nil, err
	}
	for i := range req.Input {
		if req.Input[i].ID == "" {
			req.Input[i].ID = responses.NewID(inputIDPrefix(req.Input[i].Type))
		}
	}
	t.resp = responses.NewResponse(req, responses.NewID("resp"), model, time.Now())
	if req.Conversation != "" {
		t.resp.Conversation = &responses.ConversationRef{ID: req.Conversation}
	}
	return t, nil
}

func inputIDPrefix(typ string) string {
	switch typ {
	case responses.TypeFunctionCall:
		return "fc"
	case responses.TypeFunctionCallOutput:
		return "fco"
	case responses.TypeCompaction:
		return "cmp"
	case responses.TypeMCPApprovalResponse:
		return "mcpa"
	case responses.TypeMCPCall:
		return "mcp"
	case responses.TypeMCPApprovalRequest:
		return "mcpr"
	case responses.TypeMCPListTools:
		return "mcpl"
	}
	return "msg"
}

// history reads the conversation that previous_response_id continues:
// each response of the chain's input items, then its output, oldest
// first, in one store query. Whatever makes the id unusable is the same
// 400.
func (a *responsesAPI) history(ctx context.Context, userID string, req *responses.Request) ([]responses.Item, error) {
	if req.PreviousResponseID == "" {
		return nil, nil
	}
	chain, err := a.store.ResponseChain(ctx, userID, req.PreviousResponseID, store.MaxChainDepth)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, responses.ErrPreviousNotFound(req.PreviousResponseID)
	case errors.Is(err, store.ErrChainTooDeep):
		if req.Truncation != "auto" {
			return nil, &responses.ParamError{Param: "previous_response_id", Code: "context_length_exceeded",
				Message: fmt.Sprintf("The chain of previous responses is longer than %d responses; set truncation to 'auto' to drop its oldest ones.", store.MaxChainDepth)}
		}
	case err != nil:
		return nil, err
	}
	var items []responses.Item
	for _, rec := range chain {
		var input []responses.Item
		var out struct {
			Output []responses.Item `json:"output"`
		}
		if err := json.Unmarshal(rec.Input, &input); err != nil {
			return nil, fmt.Errorf("responses: stored input of %s: %w", rec.ID, err)
		}
		if err := json.Unmarshal(rec.Body, &out); err != nil {
			return nil, fmt.Errorf("responses: stored response %s: %w", rec.ID, err)
		}
		items = append(items, input...)
		items = append(items, out.Output...)
	}
	return items, nil
}

// finish keeps a finished response where it belongs, before its final
// event or body goes out: appended (input, then output) to its
// conversation, stored when it asked to be, and otherwise in its
// WebSocket's memory. It runs even if the client has gone.
func (a *responsesAPI) finish(ctx context.Context, t *turn) error {
	req, resp := t.req, t.resp
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
	defer cancel()
	if req.Conversation != "" {
		if err := a.appendConversation(sctx, t.userID, req.Conversation, responses.History(req.Input, resp)); err != nil {
			return err
		}
	}
	if !req.Store {
		if t.mem != nil {
			items := make([]responses.Item, 0, len(t.history)+len(req.Input)+len(resp.Output))
			items = append(append(items, t.history...), responses.History(req.Input, resp)...)
			t.mem.put(resp.ID, items)
		}
		return nil
	}
	body, err := json.Marshal(resp)
	if err != nil {
		return fmt.Errorf("responses: encode response: %w", err)
	}
	input, err := json.Marshal(req.Input)
	if err != nil {
		return fmt.Errorf("responses: encode input: %w", err)
	}
	prev := ""
	if resp.PreviousResponseID != nil {
		prev = *resp.PreviousResponseID
	}
	return a.store.SaveResponse(sctx, store.StoredResponse{
		ID: resp.ID, UserID: t.userID, PreviousID: prev, Model: resp.Model, Status: resp.Status,
		Body: body, Input: input, CreatedAt: time.Unix(resp.CreatedAt, 0), ExpiresAt: time.Now().Add(a.ttl),
	})
}

// usageOf is the usage a call reported, else an estimate from what was
// sent and what came back, so every call counts.
func usageOf(reported responses.Usage, ok bool, request []byte, answer string) responses.Usage {
	if ok && reported.TotalTokens > 0 {
		return reported
	}
	return responses.FromLLMUsage(gateway.UsageOrEstimate(llm.Usage{}, request, answer))
}

// runPlain runs a turn without streaming and returns the finished,
// stored response.
func (a *responsesAPI) runPlain(ctx context.Context, call *gateway.Call, t *turn) (*responses.Response, error) {
	resp := t.resp
	up, err := call.Complete(ctx)
	if err != nil {
		return nil, err
	}
	ans, err := responses.ParseCompletion(up.Body)
	if err != nil {
		call.Finish(ctx, usedModel(up, resp.Model), up.Usage)
		return nil, &apiError{status: http.StatusBadGateway, message: "Upstream model failed", cause: err}
	}
	text := ans.Text
	for _, c := range ans.Calls {
		text += c.Name + c.Arguments
	}
	ans.Usage = usageOf(ans.Usage, ans.HasUsage, t.chat.Body, text)
	resp.Complete(ans, time.Now())
	call.Finish(ctx, usedModel(up, resp.Model), ans.Usage.LLMUsage())
	if err := a.finish(ctx, t); err != nil {
		return nil, err
	}
	return resp, nil
}

// streamHTTP runs a streamed turn as server-sent events.
func (a *responsesAPI) streamHTTP(w http.ResponseWriter, r *http.Request, call *gateway.Call, t *turn) {
	m := a.m
	var rc *http.ResponseController
	buf := make([]byte, 0, 1024)
	info := requestInfoFrom(r.Context())
	var end func()
	defer func() {
		if end != nil {
			end()
		}
	}()
	// The stream opens with its first events, so that a call that cannot
	// start is still answered with a plain error status.
	res := a.streamTurn(r.Context(), call, t, func(events []responses.Event) error {
		if rc == nil {
			rc, end = m.openEventStream(w)
		}
		for _, ev := range events {
			buf = ev.AppendSSE(buf[:0])
			if err := m.writeEvent(rc, w, buf); err != nil {
				return err
			}
		}
		return nil
	})
	if res.startErr != nil {
		a.writeError(w, r, res.startErr)
		return
	}
	if res.err != nil && info != nil {
		info.err = res.err
	}
}

// turnResult is how a streamed turn ended: startErr when the stream
// could not start (nothing was sent; the caller answers it), else err
// for the log when the client left, the upstream broke off or the
// response could not be stored.
type turnResult struct {
	startErr error
	err      error
}

// streamTurn runs a turn streamed: the upstream's chunks become Responses
// events, handed to emit in order as they come (each a batch to write and
// flush). The response is kept (a.finish) before its terminal event. A
// client that leaves (emit fails, or ctx ends) cancels the upstream; the
// response is then kept as incomplete with the tokens spent so far.
func (a *responsesAPI) streamTurn(ctx context.Context, call *gateway.Call, t *turn, emit func([]responses.Event) error) turnResult {
	m := a.m
	resp := t.resp
	reqID := requestID(ctx)
	s, err := call.Stream(ctx)
	if err != nil {
		return turnResult{startErr: err}
	}
	defer s.Close()

	tr := responses.NewTranslator(resp)
	var clientErr, streamErr error
	send := func(events []responses.Event) {
		if clientErr == nil && len(events) > 0 {
			clientErr = emit(events)
		}
	}
	send(tr.Start())
	for clientErr == nil {
		payload, err := s.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				streamErr = err
			}
			break
		}
		events, err := tr.Chunk(payload)
		if err != nil {
			streamErr = err
			break
		}
		send(events)
	}
	// Stop the upstream before the bookkeeping: a client that left must
	// not keep it generating.
	s.Close()
	reported, ok := tr.Usage()
	if !ok {
		if lu, sok := s.Usage(); sok {
			reported, ok = responses.FromLLMUsage(lu), true
		}
	}
	u := usageOf(reported, ok, t.chat.Body, tr.Text())
	model := resp.Model
	if m := tr.Model(); m != "" {
		model = m
	}
	call.Finish(ctx, model, u.LLMUsage())

	now := time.Now()
	switch {
	case clientErr != nil || ctx.Err() != nil:
		gone := errors.Join(clientErr, ctx.Err())
		tr.Close(true, u, now)
		if err := a.finish(ctx, t); err != nil {
			m.logger.LogAttrs(ctx, slog.LevelError, "could not store an interrupted response", slog.String("request_id", reqID), slog.String("error", err.Error()))
		}
		m.logger.LogAttrs(ctx, slog.LevelInfo, "response stream ended by the client", slog.String("request_id", reqID),
			slog.String("response_id", resp.ID), slog.Int64("tokens", u.TotalTokens))
		return turnResult{err: gone}
	case streamErr != nil:
		m.logger.LogAttrs(ctx, slog.LevelError, "upstream stream failed", slog.String("request_id", reqID), slog.String("error", streamErr.Error()))
		send(tr.Fail("server_error", "The model's stream broke off (request id "+reqID+").", u, now))
	default:
		send(tr.Close(false, u, now))
	}
	if err := a.finish(ctx, t); err != nil {
		m.logger.LogAttrs(ctx, slog.LevelError, "could not store a response", slog.String("request_id", reqID), slog.String("error", err.Error()))
		send([]responses.Event{tr.ErrorEvent("store_unavailable", "The response could not be stored; retry (request id "+reqID+").")})
		return turnResult{err: err}
	}
	send([]responses.Event{tr.Terminal()})
	return turnResult{err: streamErr}
}

// handleGetResponse is GET /v1/responses/{id}.
func handleGetResponse(a *responsesAPI) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec, err := a.lookup(r)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		writeRawJSON(w, http.StatusOK, rec.Body)
	})
}

// lookup reads the caller's response named by the path; any id the
// caller cannot see is the same 404.
func (a *responsesAPI) lookup(r *http.Request) (store.StoredResponse, error) {
	id := r.PathValue("id")
	if a.store == nil {
		return store.StoredResponse{}, errStoreMissing()
	}
	if id == "" || len(id) > 128 {
		return store.StoredResponse{}, errResponseNotFound(id)
	}
	rec, err := a.store.Response(r.Context(), principalFrom(r.Context()).UserID, id)
	if errors.Is(err, store.ErrNotFound) {
		return rec, errResponseNotFound(id)
	}
	return rec, err
}

// handleDeleteResponse is DELETE /v1/responses/{id}.
func handleDeleteResponse(a *responsesAPI) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		if a.store == nil {
			a.writeError(w, r, errStoreMissing())
			return
		}
		if id == "" || len(id) > 128 {
			a.writeError(w, r, errResponseNotFound(id))
			return
		}
		err := a.store.DeleteResponse(r.Context(), principalFrom(r.Context()).UserID, id)
		if errors.Is(err, store.ErrNotFound) {
			err = errResponseNotFound(id)
		}
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, deletedResponse{ID: id, Object: "response", Deleted: true})
	})
}

// deletedResponse is DELETE /v1/responses/{id}'s answer.
type deletedResponse struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Deleted bool   `json:"deleted"`
}

// inputItemList is a page of GET /v1/responses/{id}/input_items.
type inputItemList struct {
	Object  string            `json:"object"`
	Data    []json.RawMessage `json:"data"`
	FirstID *string           `json:"first_id"`
	LastID  *string           `json:"last_id"`
	HasMore bool              `json:"has_more"`
}

// handleInputItems is GET /v1/responses/{id}/input_items: the input
// items a response was given, a page at a time (after, limit 1-100 with
// 20 by default, order asc or desc with desc by default).
func handleInputItems(a *responsesAPI) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit := 20
		if v := q.Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 100 {
				a.writeError(w, r, errOpenAIParam("limit", "'limit' must be an integer from 1 to 100"))
				return
			}
			limit = n
		}
		order := q.Get("order")
		if order == "" {
			order = "desc"
		}
		if order != "asc" && order != "desc" {
			a.writeError(w, r, errOpenAIParam("order", "'order' must be 'asc' or 'desc'"))
			return
		}
		rec, err := a.lookup(r)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		var items []json.RawMessage
		if err := json.Unmarshal(rec.Input, &items); err != nil {
			a.writeError(w, r, fmt.Errorf("responses: stored input of %s: %w", rec.ID, err))
			return
		}
		if order == "desc" {
			for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
				items[i], items[j] = items[j], items[i]
			}
		}
		if after := q.Get("after"); after != "" {
			found := false
			for i, it := range items {
				var head struct {
					ID string `json:"id"`
				}
				if json.Unmarshal(it, &head) == nil && head.ID == after {
					items, found = items[i+1:], true
					break
				}
			}
			if !found {
				a.writeError(w, r, errOpenAIParam("after", "'after' names no input item of this response"))
				return
			}
		}
		page := inputItemList{Object: "list", Data: items, HasMore: len(items) > limit}
		if len(items) > limit {
			page.Data = items[:limit]
		}
		if page.Data == nil {
			page.Data = []json.RawMessage{}
		}
		if n := len(page.Data); n > 0 {
			first, last := itemID(page.Data[0]), itemID(page.Data[n-1])
			page.FirstID, page.LastID = &first, &last
		}
		writeJSON(w, http.StatusOK, page)
	})
}

func itemID(raw json.RawMessage) string {
	var head struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(raw, &head)
	return head.ID
}

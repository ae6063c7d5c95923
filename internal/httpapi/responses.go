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

	"github.com/agentapi/agentapi/internal/gateway"
	"github.com/agentapi/agentapi/internal/llm"
	"github.com/agentapi/agentapi/internal/responses"
	"github.com/agentapi/agentapi/internal/store"
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

// responsesAPI serves /v1/responses. Every upstream call a response makes
// is one governed call of the gateway (modelRoutes.begin … Call.Finish).
type responsesAPI struct {
	m             *modelRoutes
	store         responseStore // nil: nothing can be stored or read
	ttl           time.Duration
	contextTokens int64
}

func newResponsesAPI(d Deps, m *modelRoutes) *responsesAPI {
	a := &responsesAPI{m: m, ttl: d.ResponsesTTL, contextTokens: d.ResponsesContextTokens}
	if d.Responses != nil {
		a.store = d.Responses
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
	gw := a.m.gw
	t := a.m.limitBody(w, r)
	body, _, err := readOpenAIRequest(r)
	if err != nil {
		return err
	}
	req, err := responses.Parse(body)
	if err != nil {
		return err
	}
	if len(req.MCPServers()) > 0 {
		return &responses.ParamError{Param: "tools", Code: "unsupported_parameter", Message: "Tools of type 'mcp' are not enabled on this server."}
	}
	model := req.Model
	if model == "" {
		model = gw.DefaultModel()
	}
	if !gw.Allowed(model) {
		return errModelNotAllowed(model)
	}
	p := principalFrom(ctx)
	if t.MaxTokens > 0 && req.MaxOutputTokens != nil && *req.MaxOutputTokens > t.MaxTokens {
		return errOpenAIParam("max_output_tokens", fmt.Sprintf("'max_output_tokens' is %d; the %s tier allows at most %d output tokens per response",
			*req.MaxOutputTokens, t.Name, t.MaxTokens))
	}
	if a.store == nil && (req.Store || req.PreviousResponseID != "") {
		return errStoreMissing()
	}
	history, err := a.history(ctx, p.UserID, req)
	if err != nil {
		return err
	}
	chat, err := responses.ChatRequest(req, history, responses.ChatOptions{
		Model: model, Stream: req.Stream, DefaultMaxTokens: t.MaxTokens, ContextTokens: a.contextTokens,
	})
	if err != nil {
		return err
	}
	for i := range req.Input {
		if req.Input[i].ID == "" {
			req.Input[i].ID = responses.NewID(inputIDPrefix(req.Input[i].Type))
		}
	}
	resp := responses.NewResponse(req, responses.NewID("resp"), model, time.Now())
	estimate := chat.Estimate
	if req.MaxOutputTokens != nil {
		estimate += *req.MaxOutputTokens
	}
	// Begin answers a refused call itself (429 and its headers).
	call, ok := a.m.begin(w, r, gateway.Spec{Endpoint: "v1/responses", Model: model, Body: chat.Body, Estimate: estimate})
	if !ok {
		return nil
	}
	if req.Stream {
		a.stream(w, r, call, req, resp, chat.Body)
		return nil
	}
	return a.plain(w, r, call, req, resp, chat.Body)
}

func inputIDPrefix(typ string) string {
	switch typ {
	case responses.TypeFunctionCall:
		return "fc"
	case responses.TypeFunctionCallOutput:
		return "fco"
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

// save stores a finished response (when it asked to be stored) before its
// final event or body goes out. It runs even if the client has gone.
func (a *responsesAPI) save(ctx context.Context, req *responses.Request, resp *responses.Response) error {
	if !req.Store {
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
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), saveTimeout)
	defer cancel()
	return a.store.SaveResponse(sctx, store.StoredResponse{
		ID: resp.ID, UserID: principalFrom(ctx).UserID, PreviousID: prev, Model: resp.Model, Status: resp.Status,
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

// plain runs a non-streamed response.
func (a *responsesAPI) plain(w http.ResponseWriter, r *http.Request, call *gateway.Call, req *responses.Request, resp *responses.Response, chatBody []byte) error {
	ctx := r.Context()
	up, err := call.Complete(ctx)
	if err != nil {
		return err
	}
	ans, err := responses.ParseCompletion(up.Body)
	if err != nil {
		call.Finish(ctx, usedModel(up, resp.Model), up.Usage)
		return &apiError{status: http.StatusBadGateway, message: "Upstream model failed", cause: err}
	}
	text := ans.Text
	for _, c := range ans.Calls {
		text += c.Name + c.Arguments
	}
	ans.Usage = usageOf(ans.Usage, ans.HasUsage, chatBody, text)
	resp.Complete(ans, time.Now())
	call.Finish(ctx, usedModel(up, resp.Model), ans.Usage.LLMUsage())
	if err := a.save(ctx, req, resp); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// stream runs a streamed response: the upstream's chunks become Responses
// events, each written and flushed on its own as it comes. The response is
// stored before its terminal event. A client that leaves cancels the
// upstream; the response is then stored as incomplete with the tokens
// spent so far.
func (a *responsesAPI) stream(w http.ResponseWriter, r *http.Request, call *gateway.Call, req *responses.Request, resp *responses.Response, chatBody []byte) {
	ctx := r.Context()
	m := a.m
	info := requestInfoFrom(ctx)
	s, err := call.Stream(ctx)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	defer s.Close()

	rc, end := m.openEventStream(w)
	defer end()

	t := responses.NewTranslator(resp)
	buf := make([]byte, 0, 1024)
	var clientErr, streamErr error
	send := func(events []responses.Event) {
		for _, ev := range events {
			if clientErr != nil {
				return
			}
			buf = ev.AppendSSE(buf[:0])
			clientErr = m.writeEvent(rc, w, buf)
		}
	}
	send(t.Start())
	for clientErr == nil {
		payload, err := s.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) {
				streamErr = err
			}
			break
		}
		events, err := t.Chunk(payload)
		if err != nil {
			streamErr = err
			break
		}
		send(events)
	}
	// Stop the upstream before the bookkeeping: a client that left must
	// not keep it generating.
	s.Close()
	reported, ok := t.Usage()
	if !ok {
		if lu, sok := s.Usage(); sok {
			reported, ok = responses.FromLLMUsage(lu), true
		}
	}
	u := usageOf(reported, ok, chatBody, t.Text())
	model := resp.Model
	if m := t.Model(); m != "" {
		model = m
	}
	call.Finish(ctx, model, u.LLMUsage())

	now := time.Now()
	switch {
	case clientErr != nil || ctx.Err() != nil:
		info.err = errors.Join(clientErr, ctx.Err())
		t.Close(true, u, now)
		if err := a.save(ctx, req, resp); err != nil {
			m.logger.LogAttrs(ctx, slog.LevelError, "could not store an interrupted response", slog.String("request_id", info.id), slog.String("error", err.Error()))
		}
		m.logger.LogAttrs(ctx, slog.LevelInfo, "response stream ended by the client", slog.String("request_id", info.id),
			slog.String("response_id", resp.ID), slog.Int64("tokens", u.TotalTokens))
		return
	case streamErr != nil:
		info.err = streamErr
		m.logger.LogAttrs(ctx, slog.LevelError, "upstream stream failed", slog.String("request_id", info.id), slog.String("error", streamErr.Error()))
		send(t.Fail("server_error", "The model's stream broke off (request id "+info.id+").", u, now))
	default:
		send(t.Close(false, u, now))
	}
	if err := a.save(ctx, req, resp); err != nil {
		info.err = err
		m.logger.LogAttrs(ctx, slog.LevelError, "could not store a response", slog.String("request_id", info.id), slog.String("error", err.Error()))
		send([]responses.Event{t.ErrorEvent("store_unavailable", "The response could not be stored; retry (request id "+info.id+").")})
		return
	}
	send([]responses.Event{t.Terminal()})
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

package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/agentapi/agentapi/internal/responses"
	"github.com/agentapi/agentapi/internal/store"
)

// conversationStore keeps the Conversations API's conversations
// (store.Store).
type conversationStore interface {
	CreateConversation(ctx context.Context, c store.Conversation, items []store.ConversationItem) error
	Conversation(ctx context.Context, userID, id string) (store.Conversation, error)
	UpdateConversation(ctx context.Context, userID, id string, metadata []byte, expires time.Time) error
	DeleteConversation(ctx context.Context, userID, id string) error
	AppendConversationItems(ctx context.Context, userID, id string, items []store.ConversationItem, expires time.Time) error
	ConversationItems(ctx context.Context, userID, id string, p store.ItemPage) ([]store.ConversationItem, bool, error)
	ConversationContext(ctx context.Context, userID, id string, max int) ([]store.ConversationItem, error)
	ConversationItem(ctx context.Context, userID, id, itemID string) (store.ConversationItem, error)
	DeleteConversationItem(ctx context.Context, userID, id, itemID string) error
}

// maxNewConversationItems bounds the items of one create or add-items
// call, as OpenAI does.
const maxNewConversationItems = 20

// conversationObject is a conversation as the API shows it.
type conversationObject struct {
	ID        string          `json:"id"`
	Object    string          `json:"object"`
	CreatedAt int64           `json:"created_at"`
	Metadata  json.RawMessage `json:"metadata"`
}

func conversationOf(c store.Conversation) conversationObject {
	meta := json.RawMessage(c.Metadata)
	if len(meta) == 0 {
		meta = json.RawMessage("{}")
	}
	return conversationObject{ID: c.ID, Object: "conversation", CreatedAt: c.CreatedAt.Unix(), Metadata: meta}
}

// conversationDeleted is DELETE /v1/conversations/{id}'s answer.
type conversationDeleted struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Deleted bool   `json:"deleted"`
}

// errConversationNotFound is the one answer for a conversation id the
// caller cannot see: unknown, deleted, expired or another user's.
func errConversationNotFound(id string) *apiError {
	return &apiError{status: http.StatusNotFound, message: fmt.Sprintf("Conversation with id '%s' not found.", truncateID(id)),
		openAI: openAIErrorFields{typ: "invalid_request_error"}}
}

func errConversationsMissing() *apiError {
	return &apiError{status: http.StatusServiceUnavailable, message: "Conversation storage is not configured on this server",
		header: http.Header{"Retry-After": {"1"}}}
}

// notFoundAs turns store.ErrNotFound into the API's 404 for what.
func notFoundAs(err error, what *apiError) error {
	if errors.Is(err, store.ErrNotFound) {
		return what
	}
	return err
}

// conversationHistory reads a conversation's items as a response's
// context. An unknown conversation is a 404, as on its own routes.
func (a *responsesAPI) conversationHistory(ctx context.Context, userID, id string) ([]responses.Item, error) {
	if a.conversations == nil {
		return nil, errConversationsMissing()
	}
	recs, err := a.conversations.ConversationContext(ctx, userID, id, store.MaxConversationItems)
	if err != nil {
		return nil, notFoundAs(err, errConversationNotFound(id))
	}
	items := make([]responses.Item, 0, len(recs))
	for _, rec := range recs {
		var it responses.Item
		if err := json.Unmarshal(rec.Body, &it); err != nil {
			return nil, fmt.Errorf("responses: stored item %s of conversation %s: %w", rec.ID, id, err)
		}
		items = append(items, it)
	}
	return items, nil
}

// appendConversation appends a response's input and output to its
// conversation, in one transaction (see store.AppendConversationItems).
func (a *responsesAPI) appendConversation(ctx context.Context, userID, id string, items []responses.Item) error {
	if a.conversations == nil {
		return errConversationsMissing()
	}
	recs, err := conversationItems(items)
	if err != nil {
		return err
	}
	err = a.conversations.AppendConversationItems(ctx, userID, id, recs, time.Now().Add(a.ttl))
	if errors.Is(err, store.ErrConversationFull) {
		return &apiError{status: http.StatusBadRequest, message: fmt.Sprintf("Conversation '%s' is full (%d items); start a new one, or compact it.", truncateID(id), store.MaxConversationItems),
			openAI: openAIErrorFields{param: "conversation"}, cause: err}
	}
	return notFoundAs(err, errConversationNotFound(id))
}

func conversationItems(items []responses.Item) ([]store.ConversationItem, error) {
	recs := make([]store.ConversationItem, 0, len(items))
	for _, it := range items {
		body, err := json.Marshal(it)
		if err != nil {
			return nil, fmt.Errorf("responses: encode item: %w", err)
		}
		recs = append(recs, store.ConversationItem{ID: it.ID, Body: body})
	}
	return recs, nil
}

// conversationBody is the body of POST /v1/conversations and of POST
// /v1/conversations/{id} (metadata only).
type conversationBody struct {
	Items    json.RawMessage `json:"items"`
	Metadata json.RawMessage `json:"metadata"`
}

// readConversationBody reads a JSON body into v, refusing unknown fields.
func readConversationBody(r *http.Request, v any) error {
	body, _, err := readOpenAIRequest(r)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return errOpenAIParam("", "The request body must be a JSON object with only the documented fields: "+err.Error())
	}
	return nil
}

// parseNewItems reads items given to a conversation (param names them):
// at most maxNewConversationItems, each an input item; ids are assigned
// where missing.
func (a *responsesAPI) parseNewItems(ctx context.Context, raw json.RawMessage, param string) ([]responses.Item, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, errOpenAIParam(param, "'"+param+"' must be an array of items")
	}
	if len(list) > maxNewConversationItems {
		return nil, errOpenAIParam(param, fmt.Sprintf("'%s' may have at most %d items per request", param, maxNewConversationItems))
	}
	items := make([]responses.Item, 0, len(list))
	for i, el := range list {
		var it responses.Item
		if err := json.Unmarshal(el, &it); err != nil {
			if pe, ok := errors.AsType[*responses.ParamError](err); ok {
				pe.Param = param + "[" + strconv.Itoa(i) + "]"
				return nil, pe
			}
			return nil, errOpenAIParam(param+"["+strconv.Itoa(i)+"]", "not a valid item")
		}
		if it.ID == "" {
			it.ID = responses.NewID(inputIDPrefix(it.Type))
		}
		items = append(items, it)
	}
	// A compaction must be one of the caller's own, like in a response's
	// input.
	if err := a.sealer.Unseal(principalFrom(ctx).UserID, items, param); err != nil {
		return nil, err
	}
	return items, nil
}

// parseConversationMetadata checks metadata as the Responses API does (16
// string keys and values).
func parseConversationMetadata(raw json.RawMessage) ([]byte, error) {
	m, err := responses.ParseMetadata(raw)
	if err != nil {
		return nil, err
	}
	return json.Marshal(m)
}

func (a *responsesAPI) conversationsReady() error {
	if a.conversations == nil {
		return errConversationsMissing()
	}
	return nil
}

// handleCreateConversation is POST /v1/conversations.
func handleCreateConversation(a *responsesAPI) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.createConversation(w, r); err != nil {
			a.writeError(w, r, err)
		}
	})
}

func (a *responsesAPI) createConversation(w http.ResponseWriter, r *http.Request) error {
	if err := a.conversationsReady(); err != nil {
		return err
	}
	ctx := r.Context()
	var body conversationBody
	if err := readConversationBody(r, &body); err != nil {
		return err
	}
	meta, err := parseConversationMetadata(body.Metadata)
	if err != nil {
		return err
	}
	items, err := a.parseNewItems(ctx, body.Items, "items")
	if err != nil {
		return err
	}
	recs, err := conversationItems(items)
	if err != nil {
		return err
	}
	now := time.Now()
	c := store.Conversation{ID: responses.NewID("conv"), UserID: principalFrom(ctx).UserID, Metadata: meta,
		CreatedAt: now, ExpiresAt: now.Add(a.ttl)}
	if err := a.conversations.CreateConversation(ctx, c, recs); err != nil {
		return err
	}
	c.CreatedAt = time.Unix(now.Unix(), 0)
	writeJSON(w, http.StatusOK, conversationOf(c))
	return nil
}

// conversationID is the path's conversation id, or the 404 for one that
// cannot be anyone's.
func conversationID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if id == "" || len(id) > 128 {
		return "", errConversationNotFound(id)
	}
	return id, nil
}

// handleGetConversation is GET /v1/conversations/{id}.
func handleGetConversation(a *responsesAPI) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := a.lookupConversation(r)
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, conversationOf(c))
	})
}

func (a *responsesAPI) lookupConversation(r *http.Request) (store.Conversation, error) {
	if err := a.conversationsReady(); err != nil {
		return store.Conversation{}, err
	}
	id, err := conversationID(r)
	if err != nil {
		return store.Conversation{}, err
	}
	c, err := a.conversations.Conversation(r.Context(), principalFrom(r.Context()).UserID, id)
	return c, notFoundAs(err, errConversationNotFound(id))
}

// handleUpdateConversation is POST /v1/conversations/{id}: new metadata.
func handleUpdateConversation(a *responsesAPI) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.updateConversation(w, r); err != nil {
			a.writeError(w, r, err)
		}
	})
}

func (a *responsesAPI) updateConversation(w http.ResponseWriter, r *http.Request) error {
	if err := a.conversationsReady(); err != nil {
		return err
	}
	ctx := r.Context()
	id, err := conversationID(r)
	if err != nil {
		return err
	}
	var body struct {
		Metadata json.RawMessage `json:"metadata"`
	}
	if err := readConversationBody(r, &body); err != nil {
		return err
	}
	if len(body.Metadata) == 0 {
		return &apiError{status: http.StatusBadRequest, message: "Missing required parameter: 'metadata'.",
			openAI: openAIErrorFields{param: "metadata", code: "missing_required_parameter"}}
	}
	meta, err := parseConversationMetadata(body.Metadata)
	if err != nil {
		return err
	}
	userID := principalFrom(ctx).UserID
	if err := a.conversations.UpdateConversation(ctx, userID, id, meta, time.Now().Add(a.ttl)); err != nil {
		return notFoundAs(err, errConversationNotFound(id))
	}
	c, err := a.conversations.Conversation(ctx, userID, id)
	if err != nil {
		return notFoundAs(err, errConversationNotFound(id))
	}
	writeJSON(w, http.StatusOK, conversationOf(c))
	return nil
}

// handleDeleteConversation is DELETE /v1/conversations/{id}.
func handleDeleteConversation(a *responsesAPI) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := a.conversationsReady()
		var id string
		if err == nil {
			id, err = conversationID(r)
		}
		if err == nil {
			err = notFoundAs(a.conversations.DeleteConversation(r.Context(), principalFrom(r.Context()).UserID, id), errConversationNotFound(id))
		}
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, conversationDeleted{ID: id, Object: "conversation.deleted", Deleted: true})
	})
}

// conversationItemList is a page of a conversation's items (and the
// answer of adding items).
type conversationItemList struct {
	Object  string            `json:"object"`
	Data    []json.RawMessage `json:"data"`
	FirstID *string           `json:"first_id"`
	LastID  *string           `json:"last_id"`
	HasMore bool              `json:"has_more"`
}

func itemList(recs []store.ConversationItem, more bool) conversationItemList {
	page := conversationItemList{Object: "list", Data: make([]json.RawMessage, 0, len(recs)), HasMore: more}
	for _, rec := range recs {
		page.Data = append(page.Data, rec.Body)
	}
	if n := len(recs); n > 0 {
		first, last := recs[0].ID, recs[n-1].ID
		page.FirstID, page.LastID = &first, &last
	}
	return page
}

// handleListConversationItems is GET /v1/conversations/{id}/items: after
// (an item id), limit (1-100, default 20), order (asc or desc, default
// desc).
func handleListConversationItems(a *responsesAPI) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.listConversationItems(w, r); err != nil {
			a.writeError(w, r, err)
		}
	})
}

func (a *responsesAPI) listConversationItems(w http.ResponseWriter, r *http.Request) error {
	if err := a.conversationsReady(); err != nil {
		return err
	}
	id, err := conversationID(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	p := store.ItemPage{Limit: 20, Desc: true, After: q.Get("after")}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return errOpenAIParam("limit", "'limit' must be an integer from 1 to 100")
		}
		p.Limit = n
	}
	switch q.Get("order") {
	case "", "desc":
	case "asc":
		p.Desc = false
	default:
		return errOpenAIParam("order", "'order' must be 'asc' or 'desc'")
	}
	if len(p.After) > 128 {
		return errOpenAIParam("after", "'after' names no item of this conversation")
	}
	ctx := r.Context()
	userID := principalFrom(ctx).UserID
	recs, more, err := a.conversations.ConversationItems(ctx, userID, id, p)
	if errors.Is(err, store.ErrNotFound) && p.After != "" {
		// Tell an unknown cursor from an unknown conversation.
		if _, cerr := a.conversations.Conversation(ctx, userID, id); cerr == nil {
			return errOpenAIParam("after", "'after' names no item of this conversation")
		}
	}
	if err != nil {
		return notFoundAs(err, errConversationNotFound(id))
	}
	writeJSON(w, http.StatusOK, itemList(recs, more))
	return nil
}

// handleAddConversationItems is POST /v1/conversations/{id}/items.
func handleAddConversationItems(a *responsesAPI) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.addConversationItems(w, r); err != nil {
			a.writeError(w, r, err)
		}
	})
}

func (a *responsesAPI) addConversationItems(w http.ResponseWriter, r *http.Request) error {
	if err := a.conversationsReady(); err != nil {
		return err
	}
	id, err := conversationID(r)
	if err != nil {
		return err
	}
	var body struct {
		Items json.RawMessage `json:"items"`
	}
	if err := readConversationBody(r, &body); err != nil {
		return err
	}
	if len(body.Items) == 0 || string(body.Items) == "null" {
		return &apiError{status: http.StatusBadRequest, message: "Missing required parameter: 'items'.",
			openAI: openAIErrorFields{param: "items", code: "missing_required_parameter"}}
	}
	ctx := r.Context()
	items, err := a.parseNewItems(ctx, body.Items, "items")
	if err != nil {
		return err
	}
	if err := a.appendConversation(ctx, principalFrom(ctx).UserID, id, items); err != nil {
		return err
	}
	recs, err := conversationItems(items)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, itemList(recs, false))
	return nil
}

// conversationItemPath is the path's conversation and item ids.
func conversationItemPath(r *http.Request) (string, string, error) {
	id, err := conversationID(r)
	if err != nil {
		return "", "", err
	}
	itemID := r.PathValue("item_id")
	if itemID == "" || len(itemID) > 128 {
		return "", "", errItemNotFound(itemID)
	}
	return id, itemID, nil
}

func errItemNotFound(id string) *apiError {
	return &apiError{status: http.StatusNotFound, message: fmt.Sprintf("Item with id '%s' not found.", truncateID(id)),
		openAI: openAIErrorFields{typ: "invalid_request_error"}}
}

// handleGetConversationItem is GET /v1/conversations/{id}/items/{item_id}.
func handleGetConversationItem(a *responsesAPI) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := a.conversationsReady()
		var id, itemID string
		if err == nil {
			id, itemID, err = conversationItemPath(r)
		}
		var rec store.ConversationItem
		if err == nil {
			rec, err = a.conversations.ConversationItem(r.Context(), principalFrom(r.Context()).UserID, id, itemID)
			err = a.itemNotFound(r.Context(), err, id, itemID)
		}
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		writeRawJSON(w, http.StatusOK, rec.Body)
	})
}

// itemNotFound words a store.ErrNotFound of an item route: the
// conversation's 404 when it is not the caller's, else the item's.
func (a *responsesAPI) itemNotFound(ctx context.Context, err error, id, itemID string) error {
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if _, cerr := a.conversations.Conversation(ctx, principalFrom(ctx).UserID, id); cerr != nil {
		return notFoundAs(cerr, errConversationNotFound(id))
	}
	return errItemNotFound(itemID)
}

// handleDeleteConversationItem is DELETE
// /v1/conversations/{id}/items/{item_id}; it answers the conversation.
func handleDeleteConversationItem(a *responsesAPI) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := a.conversationsReady()
		var id, itemID string
		if err == nil {
			id, itemID, err = conversationItemPath(r)
		}
		ctx := r.Context()
		if err == nil {
			err = a.itemNotFound(ctx, a.conversations.DeleteConversationItem(ctx, principalFrom(ctx).UserID, id, itemID), id, itemID)
		}
		var c store.Conversation
		if err == nil {
			c, err = a.conversations.Conversation(ctx, principalFrom(ctx).UserID, id)
			err = notFoundAs(err, errConversationNotFound(id))
		}
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, conversationOf(c))
	})
}

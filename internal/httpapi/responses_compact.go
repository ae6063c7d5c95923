package httpapi

import (
	"net/http"
	"time"

	"github.com/agentapi/agentapi/internal/responses"
)

// handleCompactResponse is POST /v1/responses/compact: the model
// summarises a conversation (input items, the chain of
// previous_response_id, or both) and the answer is a compaction item
// sealing that summary, which a later request passes back as input in
// place of what it summarised. It is one governed call like any other
// (a rate-limit token, budgeted, counted); nothing is stored.
func handleCompactResponse(a *responsesAPI) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := a.compact(w, r); err != nil {
			a.writeError(w, r, err)
		}
	})
}

func (a *responsesAPI) compact(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	tr := a.m.limitBody(w, r)
	body, _, err := readOpenAIRequest(r)
	if err != nil {
		return err
	}
	creq, err := responses.ParseCompact(body)
	if err != nil {
		return err
	}
	if a.sealer == nil {
		return &apiError{status: http.StatusServiceUnavailable, message: "Compaction is not configured on this server"}
	}
	// The chain, if any, comes first, then the input: the same
	// conversation a response with these fields would see.
	req := creq.Request()
	req.PreviousResponseID = creq.PreviousResponseID
	t, err := a.prepare(ctx, tr, req, nil)
	if err != nil {
		return err
	}
	spec := t.spec()
	spec.Endpoint = "v1/responses/compact"
	call, ok := a.m.begin(w, r, spec)
	if !ok {
		return nil
	}
	up, err := call.Complete(ctx)
	if err != nil {
		return err
	}
	ans, err := responses.ParseCompletion(up.Body)
	if err != nil {
		call.Finish(ctx, usedModel(up, t.model), up.Usage)
		return &apiError{status: http.StatusBadGateway, message: "Upstream model failed", cause: err}
	}
	u := usageOf(ans.Usage, ans.HasUsage, t.chat.Body, ans.Text)
	call.Finish(ctx, usedModel(up, t.model), u.LLMUsage())
	if ans.Text == "" {
		return &apiError{status: http.StatusBadGateway, message: "The model returned no summary; retry"}
	}
	now := time.Now()
	out := responses.Compacted{
		ID: responses.NewID("resp"), Object: "response.compaction", CreatedAt: now.Unix(),
		Output: []responses.Item{responses.NewCompaction(a.sealer.Seal(t.userID, ans.Text, now))},
		Usage:  u,
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

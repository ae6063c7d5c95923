package agent

import (
	"fmt"
	"strconv"

	"github.com/agentapi/agentapi/internal/responses"
)

// CheckApprovals refuses a request whose mcp_approval_response items do
// not each answer an mcp_approval_request of the conversation it
// continues, once. The caller runs it before any model call, so a bad
// answer costs nothing.
func CheckApprovals(req *responses.Request, history []responses.Item) error {
	asked := map[string]bool{}
	answered := map[string]bool{}
	for _, it := range append(append([]responses.Item(nil), history...), req.Input...) {
		switch {
		case it.Type == responses.TypeMCPApprovalRequest:
			asked[it.ID] = true
		case it.Type == responses.TypeMCPCall && it.ApprovalRequestID != "":
			answered[it.ApprovalRequestID] = true
		}
	}
	seen := map[string]bool{}
	for i, it := range req.Input {
		if it.Type != responses.TypeMCPApprovalResponse {
			continue
		}
		p := "input[" + strconv.Itoa(i) + "].approval_request_id"
		id := it.ApprovalRequestID
		switch {
		case !asked[id]:
			return &responses.ParamError{Param: p, Code: "invalid_value",
				Message: fmt.Sprintf("No mcp_approval_request with id '%s' in this conversation; continue the response that asked with previous_response_id.", truncate(id))}
		case answered[id] || seen[id]:
			return &responses.ParamError{Param: p, Code: "invalid_value",
				Message: fmt.Sprintf("The mcp_approval_request '%s' has already been answered.", truncate(id))}
		}
		seen[id] = true
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 128 {
		return s[:128]
	}
	return s
}

// answerApprovals runs (or records as denied) the calls that the
// request's mcp_approval_response items answer, before the first model
// turn, so the model sees their results.
func (s *state) answerApprovals() {
	asked := map[string]responses.Item{}
	for _, it := range s.r.History {
		if it.Type == responses.TypeMCPApprovalRequest {
			asked[it.ID] = it
		}
	}
	for _, it := range s.r.Request.Input {
		if it.Type == responses.TypeMCPApprovalRequest {
			asked[it.ID] = it
		}
	}
	for _, it := range s.r.Request.Input {
		if it.Type != responses.TypeMCPApprovalResponse || s.gone() {
			continue
		}
		q, ok := asked[it.ApprovalRequestID]
		if !ok {
			continue // CheckApprovals refused the request already
		}
		i, ev := s.t.AddCall(q.ServerLabel, q.Name, q.Arguments, q.ID)
		s.send(ev)
		if !it.Approve {
			msg := "The user denied this tool call."
			if it.Reason != "" {
				msg += " Reason: " + it.Reason
			}
			if srv := s.server(q.ServerLabel); srv != nil {
				s.observe(srv, q.Name, OutcomeDenied, 0)
			}
			s.send(s.t.CallDone(i, "", &responses.CallError{Type: responses.ErrToolExecution, Message: msg}))
			continue
		}
		if s.out.ToolCalls >= s.r.MaxToolCalls {
			s.out.Reason = ReasonMaxToolCalls
			s.send(s.t.CallSkipped(i, "The call was not run: the response reached its "+ReasonMaxToolCalls+" limit."))
			continue
		}
		s.send(s.t.CallStarted(i))
		out, callErr := s.call(q.ServerLabel, q.Name, q.Arguments)
		s.send(s.t.CallDone(i, out, callErr))
	}
}

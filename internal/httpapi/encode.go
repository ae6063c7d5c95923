package httpapi

import (
	"encoding/json"
	"net/http"

	"github.com/agentapi/agentapi/internal/httpapi/jsonbody"
)

// writeJSON writes v as the whole response body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own types are encoded here; failing is a programming error.
		http.Error(w, `{"error":"Internal server error"}`, http.StatusInternalServerError)
		return
	}
	writeRawJSON(w, status, append(b, '\n'))
}

// requireJSON refuses a request whose Content-Type is set to anything but
// JSON.
func requireJSON(r *http.Request) error {
	if err := jsonbody.RequireJSON(r); err != nil {
		return bodyError(err.(*jsonbody.Error))
	}
	return nil
}

// decodeJSON reads one JSON object from the (size-limited) body into v. It
// returns an *apiError describing what is wrong, ready for writeError.
func decodeJSON(r *http.Request, v any) error {
	if err := jsonbody.Decode(r, v); err != nil {
		return bodyError(err.(*jsonbody.Error))
	}
	return nil
}

// jsonError turns an error reading or decoding a JSON body into the
// *apiError the client gets.
func jsonError(err error) error { return bodyError(jsonbody.Problem(err)) }

// bodyError is a body's problem as the client's error answer.
func bodyError(e *jsonbody.Error) *apiError {
	if e.Field != "" {
		return errValidation(fieldProblem{Field: e.Field, Problem: e.Problem})
	}
	return errStatus(e.Status, e.Message)
}

// readBody reads a (size-limited) request body whole.
func readBody(r *http.Request) ([]byte, error) { return jsonbody.Read(r) }

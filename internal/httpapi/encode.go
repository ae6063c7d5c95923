package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
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
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return errStatus(http.StatusUnsupportedMediaType, "Content-Type must be application/json")
	}
	return nil
}

// decodeJSON reads one JSON object from the (size-limited) body into v. Unknown
// fields are ignored: a client cannot set anything we do not read. It returns an
// *apiError describing what is wrong, ready for writeError.
func decodeJSON(r *http.Request, v any) error {
	if err := requireJSON(r); err != nil {
		return err
	}
	body, err := readBody(r)
	if err != nil {
		return jsonError(err)
	}
	// The common case, a well-formed body, costs one pass with no
	// decoder to set up. Unmarshal accepts exactly what the decoder below
	// accepts (one value, white space around it); when it refuses, the
	// decoder runs again over the same bytes to say why in the words
	// clients have always had.
	if json.Unmarshal(body, v) == nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	// Anything after the value but white space (a second value, or a
	// stray "}" that More would not report) makes the body invalid.
	if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
		return errStatus(http.StatusBadRequest, "Request body must contain a single JSON object")
	}
	return nil
}

// jsonError turns an error reading or decoding a JSON body into the
// *apiError the client gets.
func jsonError(err error) error {
	var maxErr *http.MaxBytesError
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &maxErr):
		return errStatus(http.StatusRequestEntityTooLarge, fmt.Sprintf("Request body exceeds %d bytes", maxErr.Limit))
	case errors.Is(err, io.EOF):
		return errStatus(http.StatusBadRequest, "Request body is empty")
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
		return errStatus(http.StatusBadRequest, "Malformed JSON")
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return errStatus(http.StatusUnprocessableEntity, "Request body must be a JSON object")
		}
		return errValidation(fieldProblem{Field: field, Problem: "must be a " + jsonKind(typeErr.Type.Kind().String())})
	default:
		return errStatus(http.StatusBadRequest, "Malformed JSON")
	}
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "int", "int64", "int32", "float64", "float32":
		return "number"
	case "slice":
		return "array"
	default:
		return "object"
	}
}

// bodyPrealloc bounds what readBody reserves from a request's stated
// length before any of it has arrived, so a client claiming a large body
// and sending nothing holds little memory.
const bodyPrealloc = 64 << 10

// readBody reads a (size-limited) request body whole. With the length
// stated it reads into one buffer of that size, where io.ReadAll would
// start at 512 bytes and grow.
func readBody(r *http.Request) ([]byte, error) {
	n := r.ContentLength
	if n <= 0 || n >= bodyPrealloc {
		return io.ReadAll(r.Body)
	}
	buf := make([]byte, 0, n+1) // +1: the read that reports the end needs room
	for {
		m, err := r.Body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		switch {
		case err == io.EOF:
			return buf, nil
		case err != nil:
			return nil, err
		case len(buf) == cap(buf):
			// Longer than stated (net/http does not let that happen).
			rest, err := io.ReadAll(r.Body)
			return append(buf, rest...), err
		}
	}
}

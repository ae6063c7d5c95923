// Package jsonbody reads the JSON body of an API request: one JSON value,
// read whole behind the server's body limit, with what is wrong with it
// named in words a client can act on. httpapi turns its *Error into the
// JSON error answer; the package is separate so that it can be fuzzed
// without building the whole server.
package jsonbody

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Error is what is wrong with a request body: the status to answer with
// and a message, or, for a field of the wrong type, the field and its
// problem (422).
type Error struct {
	Status  int
	Message string
	// Field and Problem are set for a field of the wrong JSON type.
	Field   string
	Problem string
}

func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("jsonbody: %s %s", e.Field, e.Problem)
	}
	return "jsonbody: " + e.Message
}

// RequireJSON refuses (415) a request whose Content-Type is set to
// anything but JSON; a request without one is taken as JSON.
func RequireJSON(r *http.Request) error {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		return &Error{Status: http.StatusUnsupportedMediaType, Message: "Content-Type must be application/json"}
	}
	return nil
}

// Decode reads one JSON value from the (size-limited) body into v. Unknown
// fields are ignored: a client cannot set anything the handler does not
// read. Any error is an *Error.
func Decode(r *http.Request, v any) error {
	if err := RequireJSON(r); err != nil {
		return err
	}
	body, err := Read(r)
	if err != nil {
		return Problem(err)
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
		return Problem(err)
	}
	// Anything after the value but white space (a second value, or a
	// stray "}" that More would not report) makes the body invalid.
	if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
		return &Error{Status: http.StatusBadRequest, Message: "Request body must contain a single JSON object"}
	}
	return nil
}

// Problem turns an error reading or decoding a JSON body into the *Error
// the client is told.
func Problem(err error) *Error {
	var maxErr *http.MaxBytesError
	var syntaxErr *json.SyntaxError
	var typeErr *json.UnmarshalTypeError
	switch {
	case errors.As(err, &maxErr):
		return &Error{Status: http.StatusRequestEntityTooLarge, Message: fmt.Sprintf("Request body exceeds %d bytes", maxErr.Limit)}
	case errors.Is(err, io.EOF):
		return &Error{Status: http.StatusBadRequest, Message: "Request body is empty"}
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Status: http.StatusBadRequest, Message: "Malformed JSON"}
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return &Error{Status: http.StatusUnprocessableEntity, Message: "Request body must be a JSON object"}
		}
		return &Error{Status: http.StatusUnprocessableEntity, Message: "Validation failed",
			Field: typeErr.Field, Problem: "must be a " + jsonKind(typeErr.Type.Kind().String())}
	default:
		return &Error{Status: http.StatusBadRequest, Message: "Malformed JSON"}
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

// bodyPrealloc bounds what Read reserves from a request's stated length
// before any of it has arrived, so a client claiming a large body and
// sending nothing holds little memory.
const bodyPrealloc = 64 << 10

// Read reads a (size-limited) request body whole. With the length stated
// it reads into one buffer of that size, where io.ReadAll would start at
// 512 bytes and grow.
func Read(r *http.Request) ([]byte, error) {
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

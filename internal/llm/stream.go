package llm

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// maxEventSize caps one event's payload. Streamed chunks are a few hundred
// bytes; the cap only stops a broken upstream from growing a line forever.
const maxEventSize = 16 << 20

// streamBufferSize is the read buffer of a stream: large enough that a
// typical chunk (including one with a long tool-call argument) fits in one
// piece and is never copied through the slow path for long lines.
const streamBufferSize = 16 << 10

// Draining after [DONE] lets net/http reuse the connection, which saves a
// TLS handshake per streamed call. It is bounded both in bytes and in time
// so an upstream that keeps the response open cannot hold Close.
const (
	drainLimit = 4 << 10
	drainWait  = 50 * time.Millisecond
)

// errStreamClosed is returned by Next after Close.
var errStreamClosed = errors.New("llm: stream closed")

// errEventTooLarge is returned when one event exceeds maxEventSize.
var errEventTooLarge = errors.New("event too large")

// Stream reads a streamed chat answer as server-sent events. It is the same
// type for the HTTP client and the mock, so handlers treat both alike.
//
// A Stream is not safe for concurrent use. To abort a Next that is blocked
// waiting for the upstream, cancel the context the stream was opened with;
// that also cancels the upstream call, so it stops generating tokens.
type Stream struct {
	ctx      context.Context
	body     io.ReadCloser
	cancel   context.CancelCauseFunc // nil when there is no request to cancel
	r        *bufio.Reader
	upstream string
	maxEvent int // maxEventSize, lowered in tests

	event []byte // payload of the current event, reused between calls
	long  []byte // spill buffer for lines longer than r's buffer

	usage    Usage
	hasUsage bool

	// peeked is a first event read ahead by a Router (to retry an upstream
	// that fails before sending anything); Next hands it out first.
	peeked    []byte
	hasPeeked bool

	// model, when set by the catalogue router, is the public name of the
	// model that answers; every chunk's "model" is rewritten to it (the
	// upstream would name its own deployment's model). onClose, when set,
	// is told the usage once the stream is closed.
	model   string
	onClose func(Usage, bool)

	err    error // sticky: io.EOF after a clean end, else the failure
	done   bool  // "[DONE]" seen
	closed bool
}

// newStream wraps an event-stream body. cancel, when non-nil, cancels the
// request that produced body and is called by Close.
func newStream(ctx context.Context, body io.ReadCloser, cancel context.CancelCauseFunc, upstream string) *Stream {
	return &Stream{
		ctx:      ctx,
		body:     body,
		cancel:   cancel,
		r:        bufio.NewReaderSize(body, streamBufferSize),
		upstream: upstream,
		maxEvent: maxEventSize,
	}
}

// Next returns the payload of the next event: the bytes after "data:" (one
// optional space removed), with the lines of a multi-line data field joined
// by "\n". Comment lines (starting with ":"), other fields (event, id,
// retry) and events with an empty payload are skipped. Lines may end in
// "\n" or "\r\n".
//
// The returned slice is only valid until the next call to Next; copy it to
// keep it.
//
// Next returns io.EOF after the "[DONE]" event, or when the body ends
// cleanly between events. A body that ends inside an event, or breaks off
// (connection reset, truncated chunked encoding), gives an error wrapping
// both ErrUpstreamUnavailable and the cause, such as io.ErrUnexpectedEOF.
// If the caller's context is cancelled the error wraps its context error.
func (s *Stream) Next() ([]byte, error) {
	if s.hasPeeked {
		s.hasPeeked = false
		return s.renamed(s.peeked), nil
	}
	if s.err != nil {
		return nil, s.err
	}
	if err := s.ctx.Err(); err != nil {
		return nil, s.fail(s.callerGone(err))
	}
	s.event = s.event[:0]
	pending := false // a data line of the current event has been seen
	for {
		line, readErr := s.readLine()
		if readErr != nil && readErr != io.EOF {
			return nil, s.fail(s.readError(readErr))
		}
		if readErr == nil && len(line) == 0 {
			// A blank line ends the event.
			if !pending {
				continue
			}
			if isDone(s.event) {
				s.done = true
				return nil, s.fail(io.EOF)
			}
			if len(s.event) == 0 {
				pending = false
				continue
			}
			s.noteUsage(s.event)
			return s.renamed(s.event), nil
		}
		if len(line) > 0 {
			added, err := s.addLine(line, pending)
			if err != nil {
				return nil, s.fail(err)
			}
			pending = pending || added
		}
		if readErr == io.EOF {
			// A final "[DONE]" that only lacks its blank line is still a
			// proper end; any other unfinished event means the upstream
			// was cut off and the caller has an incomplete answer.
			if pending && isDone(s.event) {
				s.done = true
				return nil, s.fail(io.EOF)
			}
			if pending {
				return nil, s.fail(fmt.Errorf("%w (%s): stream ended inside an event: %w", ErrUpstreamUnavailable, s.upstream, io.ErrUnexpectedEOF))
			}
			return nil, s.fail(io.EOF)
		}
	}
}

// Model is the public name of the catalogue model that answers, when the
// stream came through a catalogue router; else "".
func (s *Stream) Model() string { return s.model }

// renamed puts the answering model's public name into a chunk that names
// a model. Without a catalogue it returns the chunk as it is.
func (s *Stream) renamed(payload []byte) []byte {
	if s.model == "" {
		return payload
	}
	m := gjson.GetBytes(payload, "model")
	if !m.Exists() || m.Str == s.model {
		return payload
	}
	out, err := sjson.SetBytes(payload, "model", s.model)
	if err != nil {
		return payload
	}
	return out
}

// Usage returns the latest token usage seen in any chunk's "usage" object so
// far, and whether there was one. OpenAI sends it in a last chunk with empty
// choices when the request set stream_options.include_usage, so it is
// complete only after Next has returned io.EOF.
func (s *Stream) Usage() (Usage, bool) {
	return s.usage, s.hasUsage
}

// Close releases the stream and, unless the answer was read to its end,
// cancels the upstream call so the upstream stops generating. It is safe to
// call more than once.
func (s *Stream) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	if s.onClose != nil {
		s.onClose(s.usage, s.hasUsage)
	}
	if s.done && s.cancel != nil {
		stop := time.AfterFunc(drainWait, func() { s.cancel(errStreamClosed) })
		_, _ = io.CopyN(io.Discard, s.r, drainLimit)
		stop.Stop()
	}
	if s.cancel != nil {
		s.cancel(errStreamClosed)
	}
	err := s.body.Close()
	if s.err == nil {
		s.err = errStreamClosed
	}
	if err != nil {
		return fmt.Errorf("llm: %s: close stream: %w", s.upstream, err)
	}
	return nil
}

// fail records err as the stream's final result and returns it.
func (s *Stream) fail(err error) error {
	s.err = err
	return err
}

// readLine returns the next line without its "\n" or "\r\n". At the end of
// the body it returns io.EOF, together with any unterminated last line.
// The line is only valid until the next call.
func (s *Stream) readLine() ([]byte, error) {
	line, err := s.r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		s.long = append(s.long[:0], line...)
		for err == bufio.ErrBufferFull {
			line, err = s.r.ReadSlice('\n')
			if len(s.long)+len(line) > s.maxEvent {
				return nil, errEventTooLarge
			}
			s.long = append(s.long, line...)
		}
		line = s.long
	}
	if err != nil && err != io.EOF {
		return nil, err
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	return line, err
}

// addLine applies one non-empty line to the current event and reports
// whether it was a data line.
func (s *Stream) addLine(line []byte, pending bool) (bool, error) {
	if line[0] == ':' {
		return false, nil // comment, often a keep-alive
	}
	name, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	if string(name) != "data" {
		return false, nil // event, id, retry: nothing the gateway acts on
	}
	if len(s.event)+len(value)+1 > s.maxEvent {
		return false, fmt.Errorf("%w (%s): %w", ErrUpstreamUnavailable, s.upstream, errEventTooLarge)
	}
	if pending {
		s.event = append(s.event, '\n')
	}
	s.event = append(s.event, value...)
	return true, nil
}

// readError describes a failed body read.
func (s *Stream) readError(err error) error {
	if ctxErr := s.ctx.Err(); ctxErr != nil {
		return s.callerGone(ctxErr)
	}
	if errors.Is(err, errEventTooLarge) {
		return fmt.Errorf("%w (%s): %w", ErrUpstreamUnavailable, s.upstream, err)
	}
	return fmt.Errorf("%w (%s): stream interrupted: %w", ErrUpstreamUnavailable, s.upstream, err)
}

func (s *Stream) callerGone(ctxErr error) error {
	return fmt.Errorf("llm: %s: stream abandoned by caller: %w", s.upstream, ctxErr)
}

// noteUsage records the usage object of a chunk, if it has a non-null one.
// Most chunks have none (or "usage": null), so a cheap byte scan decides
// whether decoding is worth it at all.
func (s *Stream) noteUsage(payload []byte) {
	if !mayHaveUsage(payload) {
		return
	}
	var chunk struct {
		Usage *Usage `json:"usage"`
	}
	if json.Unmarshal(payload, &chunk) != nil || chunk.Usage == nil {
		// A chunk we cannot read is still forwarded; it just does not
		// count towards usage.
		return
	}
	s.usage = chunk.Usage.withTotal()
	s.hasUsage = true
}

// mayHaveUsage reports whether payload contains a "usage" key whose value is
// not null. It may say yes for a "usage" inside a string (the decoder then
// sorts that out) but never says no to a real usage object.
func mayHaveUsage(payload []byte) bool {
	key := []byte(`"usage"`)
	for {
		i := bytes.Index(payload, key)
		if i < 0 {
			return false
		}
		rest := bytes.TrimLeft(payload[i+len(key):], " \t\r\n")
		if len(rest) > 0 && rest[0] == ':' {
			rest = bytes.TrimLeft(rest[1:], " \t\r\n")
			if !bytes.HasPrefix(rest, []byte("null")) {
				return true
			}
		}
		payload = payload[i+len(key):]
	}
}

// isDone reports whether payload is the "[DONE]" sentinel that ends an
// OpenAI stream.
func isDone(payload []byte) bool {
	return bytes.Equal(bytes.TrimSpace(payload), []byte("[DONE]"))
}

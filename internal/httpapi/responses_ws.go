package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/agentapi/agentapi/internal/responses"
	"github.com/agentapi/agentapi/internal/tier"
	"github.com/coder/websocket"
)

// Bounds of the WebSocket mode of /v1/responses.
const (
	// defaultSocketIdle closes a socket that ran no response this long.
	defaultSocketIdle = 10 * time.Minute
	// defaultSocketMemory bounds a socket's store: false responses.
	defaultSocketMemory = 16 << 20
	// socketPingEvery keeps proxies from cutting a live socket that is
	// quiet (a slow model, or a client thinking between turns).
	socketPingEvery = 30 * time.Second
	// socketPingTimeout is how long a ping may wait for its pong.
	socketPingTimeout = 15 * time.Second
	// socketPending is how many response.create messages a socket holds
	// while a turn runs; they run in order, one at a time.
	socketPending = 8
	// socketReadLimit bounds one message when the tier sets no body limit.
	socketReadLimit = 4 << 20
	// socketCloseTimeout bounds the closing handshake.
	socketCloseTimeout = 5 * time.Second
)

// Sockets tracks the open WebSockets of GET /v1/responses, so that a
// shutdown can close each one after its running turn: http.Server's
// Shutdown neither waits for nor closes hijacked connections.
type Sockets struct {
	mu       sync.Mutex
	draining bool
	drain    chan struct{} // closed by Drain
	abort    chan struct{} // closed by Abort
	aborted  bool
	wg       sync.WaitGroup
}

// NewSockets returns an empty tracker.
func NewSockets() *Sockets {
	return &Sockets{drain: make(chan struct{}), abort: make(chan struct{})}
}

// enter counts a new socket in; false once draining (the caller answers
// 503).
func (s *Sockets) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *Sockets) leave() { s.wg.Done() }

// Drain asks every socket to close (1001, going away): an idle one at
// once, a busy one after its running turn. New sockets are refused. It
// may be called more than once (http.Server.RegisterOnShutdown).
func (s *Sockets) Drain() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.draining {
		s.draining = true
		close(s.drain)
	}
}

// Abort cancels the running turns (each is kept as incomplete, its tokens
// counted) so that their sockets close now; for a shutdown deadline.
func (s *Sockets) Abort() {
	s.Drain()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.aborted {
		s.aborted = true
		close(s.abort)
	}
}

// Wait returns once every socket has closed, or ctx's error.
func (s *Sockets) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// socketMemory is one socket's store: false responses, each as the whole
// context a continuation of it reads (its history, input and output),
// oldest forgotten first once they pass the byte bound. It belongs to its
// socket's turn loop and is not safe for concurrent use.
type socketMemory struct {
	limit, used int64
	order       []string
	entries     map[string]memoryEntry
}

type memoryEntry struct {
	items []responses.Item
	size  int64
}

func newSocketMemory(limit int64) *socketMemory {
	return &socketMemory{limit: limit, entries: map[string]memoryEntry{}}
}

func (m *socketMemory) has(id string) bool { _, ok := m.entries[id]; return ok }

func (m *socketMemory) items(id string) []responses.Item {
	e := m.entries[id]
	// A copy: the turn fills in ids and summaries of what it is given.
	return append([]responses.Item(nil), e.items...)
}

// put remembers a response's context, forgetting the oldest entries to
// stay within the bound. An entry larger than the bound is not kept (a
// continuation of it is then previous_response_not_found).
func (m *socketMemory) put(id string, items []responses.Item) {
	var size int64
	for _, it := range items {
		size += int64(len(it.ID) + len(it.Role) + len(it.CallID) + len(it.Name) + len(it.Arguments) + len(it.Output) + 2*len(it.EncryptedContent) + 64)
		for _, p := range it.Content {
			size += int64(len(p.Text) + len(p.ImageURL) + len(p.Refusal) + 32)
		}
	}
	if size > m.limit {
		return
	}
	m.drop(id)
	for m.used+size > m.limit && len(m.order) > 0 {
		m.drop(m.order[0])
	}
	m.entries[id] = memoryEntry{items: items, size: size}
	m.order = append(m.order, id)
	m.used += size
}

func (m *socketMemory) drop(id string) {
	e, ok := m.entries[id]
	if !ok {
		return
	}
	delete(m.entries, id)
	m.used -= e.size
	for i, o := range m.order {
		if o == id {
			m.order = append(m.order[:i], m.order[i+1:]...)
			break
		}
	}
}

// isWebSocketUpgrade reports whether r asks to become a WebSocket.
func isWebSocketUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// handleResponsesSocket is GET /v1/responses: the WebSocket mode of the
// Responses API. The upgrade is authenticated like any request (authnKey
// runs first). Each response.create message runs one response, streamed
// as the SSE stream's events, one text message each; turns run one at a
// time, in the order they came.
//
// authn is the guard the upgrade passed; every response.create runs the
// upgrade's credentials through it again (see socketCredentials), so a
// revoked key, a disabled account or an expired token stops a socket at
// its next turn, and a tier changed by an admin applies from then on.
func handleResponsesSocket(a *responsesAPI, authn func(http.Handler) http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isWebSocketUpgrade(r) {
			a.writeError(w, r, &apiError{status: http.StatusUpgradeRequired,
				message: "GET /v1/responses is the WebSocket mode of the Responses API: connect with a WebSocket client (Upgrade: websocket)",
				header:  http.Header{"Upgrade": {"websocket"}, "Connection": {"Upgrade"}}})
			return
		}
		if !a.sockets.enter() {
			a.writeError(w, r, &apiError{status: http.StatusServiceUnavailable, message: "The server is shutting down; reconnect",
				header: http.Header{"Retry-After": {"1"}}})
			return
		}
		defer a.sockets.leave()
		// Same-origin only for browsers (the library's default check): a
		// page elsewhere must not ride a user's cookies or credentials.
		conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			if info := requestInfoFrom(r.Context()); info != nil {
				info.err = err
			}
			return // Accept has answered
		}
		a.serveSocket(r.Context(), conn, newSocketCredentials(r, authn))
	})
}

// socketCredentials re-checks the credentials a socket was opened with.
// It replays the upgrade request's headers through the same guard as any
// request, so keys, tokens and account states are judged by one piece of
// code, with its caches: a check costs what a request's does.
type socketCredentials struct {
	upgrade *http.Request
	guard   http.Handler
}

func newSocketCredentials(r *http.Request, authn func(http.Handler) http.Handler) *socketCredentials {
	c := &socketCredentials{upgrade: r.Clone(context.WithoutCancel(r.Context()))}
	c.upgrade.Body = http.NoBody
	c.guard = authn(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.(*credentialCheck).principal = principalFrom(r.Context())
		w.(*credentialCheck).passed = true
	}))
	return c
}

// check returns ctx acting for the caller as the guard sees them now, or
// the guard's refusal as an error event's status and error object.
func (c *socketCredentials) check(ctx context.Context) (context.Context, *socketErrorEvent) {
	w := &credentialCheck{header: http.Header{}}
	c.guard.ServeHTTP(w, c.upgrade.WithContext(ctx))
	if w.passed {
		return context.WithValue(ctx, ctxPrincipal, &w.principal), nil
	}
	ev := &socketErrorEvent{Type: "error", Status: w.status}
	var body openAIErrorBody
	if json.Unmarshal(w.body.Bytes(), &body) != nil || body.Error.Message == "" {
		body.Error = openAIErrorObject{Message: "Not authenticated", Type: "authentication_error"}
	}
	if body.Error.Code == nil {
		code := body.Error.Type
		body.Error.Code = &code
	}
	if ev.Status == 0 {
		ev.Status = http.StatusUnauthorized
	}
	ev.Error = body.Error
	return ctx, ev
}

// credentialCheck is the ResponseWriter a credential check runs against:
// the guard's refusal is kept to be sent as an event instead.
type credentialCheck struct {
	header    http.Header
	status    int
	body      bytes.Buffer
	passed    bool
	principal principal
}

func (w *credentialCheck) Header() http.Header { return w.header }

func (w *credentialCheck) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *credentialCheck) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if w.body.Len()+len(b) > 64<<10 {
		return len(b), nil // an error body is small; drop anything beyond
	}
	return w.body.Write(b)
}

// serveSocket runs a socket until the client leaves, it idles out, or the
// server drains it.
func (a *responsesAPI) serveSocket(parent context.Context, conn *websocket.Conn, creds *socketCredentials) {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	tr := a.m.gw.Tier(callerOf(ctx))
	limit := int64(socketReadLimit)
	if tr.MaxBodyBytes > 0 {
		limit = tr.MaxBodyBytes
	}
	conn.SetReadLimit(limit)

	msgs := make(chan []byte, socketPending)
	readErr := make(chan error, 1)
	go func() {
		for {
			_, data, err := conn.Read(ctx)
			if err != nil {
				readErr <- err
				cancel() // a client that left stops its running turn
				return
			}
			select {
			case msgs <- data:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		t := time.NewTicker(socketPingEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-a.sockets.abort:
				cancel()
				return
			case <-t.C:
				pctx, pcancel := context.WithTimeout(ctx, socketPingTimeout)
				err := conn.Ping(pctx)
				pcancel()
				if err != nil {
					cancel()
					return
				}
			}
		}
	}()

	closeWith := func(code websocket.StatusCode, reason string) {
		// Close waits for the client's close frame, bounded by the
		// library (5 s); the reader goroutine sees the close and ends.
		_ = conn.Close(code, reason)
	}
	mem := newSocketMemory(a.socketMemory)
	idle := time.NewTimer(a.socketIdle)
	defer idle.Stop()
	for {
		select {
		case data := <-msgs:
			idle.Stop()
			turnCtx, refused := creds.check(ctx)
			if refused != nil {
				// The credentials the socket was opened with no longer
				// hold: say why, then close; a new socket needs new ones.
				a.sendSocketEvent(ctx, conn, refused)
				closeWith(websocket.StatusPolicyViolation, "credentials no longer valid")
				return
			}
			a.socketTurn(turnCtx, conn, a.m.gw.Tier(callerOf(turnCtx)), mem, data)
			select {
			case <-a.sockets.drain:
				closeWith(websocket.StatusGoingAway, "server shutting down")
				return
			default:
			}
			if ctx.Err() != nil {
				conn.CloseNow()
				return
			}
			idle.Reset(a.socketIdle)
		case <-readErr:
			conn.CloseNow()
			return
		case <-ctx.Done():
			conn.CloseNow()
			return
		case <-idle.C:
			closeWith(websocket.StatusNormalClosure, "idle timeout")
			return
		case <-a.sockets.drain:
			closeWith(websocket.StatusGoingAway, "server shutting down")
			return
		}
	}
}

// socketErrorEvent is an error on a socket: the HTTP answer's status and
// OpenAI error object, as an event. The socket stays open.
type socketErrorEvent struct {
	Type     string            `json:"type"`
	Sequence int64             `json:"sequence_number"`
	Status   int               `json:"status"`
	Error    openAIErrorObject `json:"error"`
}

// sendSocketError writes err as an error event.
func (a *responsesAPI) sendSocketError(ctx context.Context, conn *websocket.Conn, err error) {
	if pe, ok := errors.AsType[*responses.ParamError](err); ok {
		err = errParam(pe)
	}
	ae, ue := mapError(ctx, a.m.logger, err)
	status, body := openAIError(ae, ue, requestID(ctx))
	if body.Error.Code == nil {
		// The WebSocket error event's code is a string, never null.
		code := body.Error.Type
		body.Error.Code = &code
	}
	a.sendSocketEvent(ctx, conn, &socketErrorEvent{Type: "error", Status: status, Error: body.Error})
}

// sendSocketEvent writes one error event, bounded by the write timeout.
func (a *responsesAPI) sendSocketEvent(ctx context.Context, conn *websocket.Conn, ev *socketErrorEvent) {
	data, _ := json.Marshal(ev)
	wctx, cancel := context.WithTimeout(ctx, a.m.writeTimeout)
	defer cancel()
	_ = conn.Write(wctx, websocket.MessageText, data)
}

// socketTurn runs one client message: a response.create runs a response;
// anything else is an error event. A failed continuation of a response
// kept in the socket's memory forgets it, so that a client cannot keep
// building on a chain that went wrong.
func (a *responsesAPI) socketTurn(ctx context.Context, conn *websocket.Conn, tr tier.Tier, mem *socketMemory, data []byte) {
	req, err := parseSocketCreate(data)
	if err != nil {
		a.sendSocketError(ctx, conn, err)
		return
	}
	fail := func(err error) {
		if req.PreviousResponseID != "" {
			mem.drop(req.PreviousResponseID)
		}
		a.sendSocketError(ctx, conn, err)
	}
	t, err := a.prepare(ctx, tr, req, mem)
	if err != nil {
		fail(err)
		return
	}
	spec := t.spec()
	spec.RequestID = requestID(ctx)
	call, err := a.m.gw.Begin(ctx, callerOf(ctx), spec)
	if err != nil {
		fail(err)
		return
	}
	emit := func(events []responses.Event) error {
		for _, ev := range events {
			wctx, cancel := context.WithTimeout(ctx, a.m.writeTimeout)
			err := conn.Write(wctx, websocket.MessageText, ev.Data)
			cancel()
			if err != nil {
				return err
			}
		}
		return nil
	}
	if t.tools != nil {
		// Server-side tools: the loop's events go out as the stream's do.
		if _, err := a.agentTurn(ctx, call, t, emit); err != nil {
			fail(err)
			return
		}
	} else if res := a.streamTurn(ctx, call, t, emit); res.startErr != nil {
		fail(res.startErr)
		return
	}
	if t.resp.Status == responses.StatusFailed && req.PreviousResponseID != "" {
		mem.drop(req.PreviousResponseID)
	}
	a.m.logger.LogAttrs(ctx, slog.LevelInfo, "websocket response",
		slog.String("request_id", requestID(ctx)), slog.String("response_id", t.resp.ID),
		slog.String("status", t.resp.Status), slog.String("model", t.model), slog.Int64("tokens", usageTotal(t.resp)))
}

func usageTotal(r *responses.Response) int64 {
	if r.Usage == nil {
		return 0
	}
	return r.Usage.TotalTokens
}

// parseSocketCreate reads a client message: {"type": "response.create",
// …the fields of a POST /v1/responses body}. Streaming is implied;
// stream, stream_options and background belong to HTTP and are refused.
func parseSocketCreate(data []byte) (*responses.Request, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return nil, &responses.ParamError{Param: "type", Message: "Each message must be a JSON object such as {\"type\": \"response.create\", ...}."}
	}
	var typ string
	if raw, ok := fields["type"]; !ok || json.Unmarshal(raw, &typ) != nil || typ != "response.create" {
		return nil, &responses.ParamError{Param: "type", Code: "invalid_type", Message: "The only message type is 'response.create'."}
	}
	delete(fields, "type")
	for _, name := range []string{"stream", "stream_options", "background"} {
		if _, ok := fields[name]; ok {
			return nil, &responses.ParamError{Param: name, Code: "unknown_parameter",
				Message: "'" + name + "' belongs to HTTP; a WebSocket response is always streamed in the foreground."}
		}
	}
	body, err := json.Marshal(fields)
	if err != nil {
		return nil, &responses.ParamError{Message: "The message could not be read."}
	}
	req, err := responses.Parse(body)
	if err != nil {
		return nil, err
	}
	req.Stream = true
	return req, nil
}

package store

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// StoredResponse is one stored response of the Responses API. The store
// keeps its JSON as given and reads none of it; the responses package
// decides what it holds.
type StoredResponse struct {
	ID     string
	UserID string
	// PreviousID is the response this one continues; "" for none.
	PreviousID string
	Model      string
	Status     string
	// Body is the Response object and Input its input items (a JSON
	// array), both JSON.
	Body      []byte
	Input     []byte
	CreatedAt time.Time
	ExpiresAt time.Time
}

// MaxChainDepth bounds how many responses ResponseChain follows: a chain
// deeper than this is read up to its MaxChainDepth newest responses.
const MaxChainDepth = 1000

// ErrChainTooDeep reports a chain with more than the asked depth of
// responses.
var ErrChainTooDeep = errors.New("store: response chain too deep")

// SaveResponse stores a response. Its id must be new (ErrConflict
// otherwise).
func (s *Store) SaveResponse(ctx context.Context, r StoredResponse) (err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	if r.ID == "" || r.UserID == "" {
		return fmt.Errorf("store: save response: id and user id are required")
	}
	created := r.CreatedAt
	if created.IsZero() {
		created = now()
	}
	_, err = s.write.ExecContext(ctx, s.q(`
		INSERT INTO responses (id, user_id, previous_response_id, model, status, body, input, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		r.ID, r.UserID, r.PreviousID, r.Model, r.Status, string(r.Body), string(r.Input),
		toMillis(created), toMillis(r.ExpiresAt))
	if err != nil {
		if isForeignKeyViolation(err) {
			return fmt.Errorf("store: save response %q: no user %q: %w", r.ID, r.UserID, ErrNotFound)
		}
		return fmt.Errorf("store: save response %q: %w", r.ID, classify(err))
	}
	return nil
}

// Response returns the user's unexpired response id. Another user's
// response is ErrNotFound, exactly like one that does not exist.
func (s *Store) Response(ctx context.Context, userID, id string) (_ StoredResponse, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	r := StoredResponse{ID: id, UserID: userID}
	var body, input string
	var created, expires int64
	err = s.read.QueryRowContext(ctx, s.q(`
		SELECT previous_response_id, model, status, body, input, created_at, expires_at
		FROM responses WHERE id = ? AND user_id = ? AND expires_at > ?`),
		id, userID, toMillis(now())).Scan(&r.PreviousID, &r.Model, &r.Status, &body, &input, &created, &expires)
	if err != nil {
		return StoredResponse{}, fmt.Errorf("store: response %q: %w", id, classify(err))
	}
	r.Body, r.Input = []byte(body), []byte(input)
	r.CreatedAt, r.ExpiresAt = fromMillis(created), fromMillis(expires)
	return r, nil
}

// ResponseChain returns the chain that ends at the user's response id,
// oldest first: id, the response it continues, that one's, and so on, in
// one query. The walk follows only the user's own unexpired rows, so it
// stops at a link that is another user's, deleted or expired; the chain
// is then what lies after it. An id that is not the user's is ErrNotFound.
// A chain of more than maxDepth responses returns its maxDepth newest
// ones and an error wrapping ErrChainTooDeep.
func (s *Store) ResponseChain(ctx context.Context, userID, id string, maxDepth int) (_ []StoredResponse, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	if maxDepth <= 0 || maxDepth > MaxChainDepth {
		maxDepth = MaxChainDepth
	}
	at := toMillis(now())
	// The walk carries only ids; the rows are joined once at the end. It
	// goes one step past maxDepth so that a longer chain can be told.
	rows, err := s.read.QueryContext(ctx, s.q(`
		WITH RECURSIVE chain (id, prev, depth) AS (
			SELECT id, previous_response_id, 1 FROM responses
			WHERE id = ? AND user_id = ? AND expires_at > ?
			UNION ALL
			SELECT r.id, r.previous_response_id, c.depth + 1
			FROM chain c JOIN responses r ON r.id = c.prev
			WHERE c.prev <> '' AND r.user_id = ? AND r.expires_at > ? AND c.depth <= ?
		)
		SELECT r.id, r.previous_response_id, r.model, r.status, r.body, r.input, r.created_at, r.expires_at, c.depth
		FROM chain c JOIN responses r ON r.id = c.id
		ORDER BY c.depth DESC`),
		id, userID, at, userID, at, maxDepth)
	if err != nil {
		return nil, fmt.Errorf("store: response chain of %q: %w", id, err)
	}
	defer rows.Close()
	var chain []StoredResponse
	tooDeep := false
	for rows.Next() {
		var (
			r               = StoredResponse{UserID: userID}
			body, input     string
			created, expire int64
			depth           int
		)
		if err := rows.Scan(&r.ID, &r.PreviousID, &r.Model, &r.Status, &body, &input, &created, &expire, &depth); err != nil {
			return nil, fmt.Errorf("store: response chain of %q: %w", id, err)
		}
		if depth > maxDepth {
			tooDeep = true
			continue
		}
		r.Body, r.Input = []byte(body), []byte(input)
		r.CreatedAt, r.ExpiresAt = fromMillis(created), fromMillis(expire)
		chain = append(chain, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: response chain of %q: %w", id, err)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("store: response chain of %q: %w", id, ErrNotFound)
	}
	if tooDeep {
		return chain, fmt.Errorf("store: response chain of %q: more than %d responses: %w", id, maxDepth, ErrChainTooDeep)
	}
	return chain, nil
}

// DeleteResponse deletes the user's response id; ErrNotFound when the user
// has no such (unexpired) response.
func (s *Store) DeleteResponse(ctx context.Context, userID, id string) (err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	res, err := s.write.ExecContext(ctx, s.q(`DELETE FROM responses WHERE id = ? AND user_id = ? AND expires_at > ?`),
		id, userID, toMillis(now()))
	if err != nil {
		return fmt.Errorf("store: delete response %q: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: delete response %q: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("store: delete response %q: %w", id, ErrNotFound)
	}
	return nil
}

// PurgeExpiredResponses deletes up to limit responses expired at before,
// and reports how many it deleted. Batches keep each transaction short;
// the purge calls it until it deletes fewer than limit.
func (s *Store) PurgeExpiredResponses(ctx context.Context, before time.Time, limit int) (_ int64, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	if limit <= 0 {
		limit = 1000
	}
	res, err := s.write.ExecContext(ctx, s.q(`
		DELETE FROM responses WHERE id IN (
			SELECT id FROM responses WHERE expires_at <= ? LIMIT ?)`),
		toMillis(before), limit)
	if err != nil {
		return 0, fmt.Errorf("store: purge expired responses: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("store: purge expired responses: %w", err)
	}
	return n, nil
}

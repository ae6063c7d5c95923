package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Conversation is one conversation of the Conversations API. Its items
// are kept apart (ConversationItem); Metadata is its JSON object, kept as
// given.
type Conversation struct {
	ID        string
	UserID    string
	Metadata  []byte
	CreatedAt time.Time
	ExpiresAt time.Time
}

// ConversationItem is one item of a conversation: its id, its place in
// the conversation (Seq, from 0 in the order items were appended) and its
// JSON.
type ConversationItem struct {
	ID   string
	Seq  int64
	Body []byte
}

// ItemPage asks for a page of a conversation's items: after the item
// with id After ("" from the start), at most Limit, newest first when
// Desc.
type ItemPage struct {
	After string
	Limit int
	Desc  bool
}

// MaxConversationItems bounds the items a response reads as context (the
// newest ones) and the items one conversation may hold.
const MaxConversationItems = 10000

// ErrConversationFull reports an append that would take a conversation
// past MaxConversationItems.
var ErrConversationFull = errors.New("store: conversation is full")

// CreateConversation stores a new conversation with its first items, in
// one transaction.
func (s *Store) CreateConversation(ctx context.Context, c Conversation, items []ConversationItem) (err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	if c.ID == "" || c.UserID == "" {
		return fmt.Errorf("store: create conversation: id and user id are required")
	}
	if len(c.Metadata) == 0 {
		c.Metadata = []byte("{}")
	}
	created := c.CreatedAt
	if created.IsZero() {
		created = now()
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`
			INSERT INTO conversations (id, user_id, metadata, next_seq, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)`),
			c.ID, c.UserID, string(c.Metadata), len(items), toMillis(created), toMillis(c.ExpiresAt)); err != nil {
			return err
		}
		return s.insertItems(ctx, tx, c.ID, 0, items)
	})
	if err != nil {
		if isForeignKeyViolation(err) {
			return fmt.Errorf("store: create conversation %q: no user %q: %w", c.ID, c.UserID, ErrNotFound)
		}
		return fmt.Errorf("store: create conversation %q: %w", c.ID, classify(err))
	}
	return nil
}

func (s *Store) insertItems(ctx context.Context, tx *sql.Tx, convID string, first int64, items []ConversationItem) error {
	for i, it := range items {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO conversation_items (conversation_id, seq, id, body) VALUES (?, ?, ?, ?)`),
			convID, first+int64(i), it.ID, string(it.Body)); err != nil {
			return err
		}
	}
	return nil
}

// Conversation returns the user's unexpired conversation id. Another
// user's is ErrNotFound, exactly like one that does not exist.
func (s *Store) Conversation(ctx context.Context, userID, id string) (_ Conversation, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	c := Conversation{ID: id, UserID: userID}
	var meta string
	var created, expires int64
	err = s.read.QueryRowContext(ctx, s.q(`
		SELECT metadata, created_at, expires_at FROM conversations WHERE id = ? AND user_id = ? AND expires_at > ?`),
		id, userID, toMillis(now())).Scan(&meta, &created, &expires)
	if err != nil {
		return Conversation{}, fmt.Errorf("store: conversation %q: %w", id, classify(err))
	}
	c.Metadata, c.CreatedAt, c.ExpiresAt = []byte(meta), fromMillis(created), fromMillis(expires)
	return c, nil
}

// UpdateConversation replaces the metadata of the user's conversation id
// and pushes its expiry back to expires.
func (s *Store) UpdateConversation(ctx context.Context, userID, id string, metadata []byte, expires time.Time) (err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	res, err := s.write.ExecContext(ctx, s.q(`
		UPDATE conversations SET metadata = ?, expires_at = ? WHERE id = ? AND user_id = ? AND expires_at > ?`),
		string(metadata), toMillis(expires), id, userID, toMillis(now()))
	return s.oneRow(res, err, "update conversation", id)
}

// DeleteConversation deletes the user's conversation id and its items.
func (s *Store) DeleteConversation(ctx context.Context, userID, id string) (err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`DELETE FROM conversations WHERE id = ? AND user_id = ? AND expires_at > ?`),
			id, userID, toMillis(now()))
		if err := s.oneRow(res, err, "delete conversation", id); err != nil {
			return err
		}
		// The foreign key cascades too; this also covers a database
		// where it is off.
		_, err = tx.ExecContext(ctx, s.q(`DELETE FROM conversation_items WHERE conversation_id = ?`), id)
		return err
	})
	if err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("store: delete conversation %q: %w", id, classify(err))
	}
	return err
}

// oneRow turns an UPDATE or DELETE's result into ErrNotFound when it
// touched no row.
func (s *Store) oneRow(res sql.Result, err error, what, id string) error {
	if err != nil {
		return fmt.Errorf("store: %s %q: %w", what, id, classify(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: %s %q: %w", what, id, err)
	}
	if n == 0 {
		return fmt.Errorf("store: %s %q: %w", what, id, ErrNotFound)
	}
	return nil
}

// AppendConversationItems appends items to the end of the user's
// conversation id, in their order, and pushes its expiry back to expires.
// It is one transaction whose first statement raises the conversation's
// item counter: that locks the conversation's row (PostgreSQL) or the
// database (SQLite) until commit, so concurrent appends take turns, each
// one's items stay together, and none is lost. The first to commit comes
// first.
func (s *Store) AppendConversationItems(ctx context.Context, userID, id string, items []ConversationItem, expires time.Time) (err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		var next int64
		err := tx.QueryRowContext(ctx, s.q(`
			UPDATE conversations SET next_seq = next_seq + ?, expires_at = ?
			WHERE id = ? AND user_id = ? AND expires_at > ?
			RETURNING next_seq`),
			len(items), toMillis(expires), id, userID, toMillis(now())).Scan(&next)
		if err != nil {
			return err
		}
		first := next - int64(len(items))
		if next > MaxConversationItems {
			return ErrConversationFull
		}
		return s.insertItems(ctx, tx, id, first, items)
	})
	if err != nil {
		return fmt.Errorf("store: append to conversation %q: %w", id, classify(err))
	}
	return nil
}

// ConversationItems returns a page of the user's conversation's items,
// and whether more follow. An unknown after is ErrNotFound, like an
// unknown conversation.
func (s *Store) ConversationItems(ctx context.Context, userID, id string, p ItemPage) (_ []ConversationItem, more bool, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	if p.Limit <= 0 {
		p.Limit = 20
	}
	if _, err := s.Conversation(ctx, userID, id); err != nil {
		return nil, false, err
	}
	from := int64(-1)
	if p.Desc {
		from = 1 << 62
	}
	if p.After != "" {
		var seq sql.NullInt64
		err := s.read.QueryRowContext(ctx, s.q(`SELECT MAX(seq) FROM conversation_items WHERE conversation_id = ? AND id = ?`),
			id, p.After).Scan(&seq)
		if err != nil {
			return nil, false, fmt.Errorf("store: items of conversation %q: %w", id, classify(err))
		}
		if !seq.Valid {
			return nil, false, fmt.Errorf("store: items of conversation %q: no item %q: %w", id, p.After, ErrNotFound)
		}
		from = seq.Int64
	}
	query := `SELECT seq, id, body FROM conversation_items WHERE conversation_id = ? AND seq > ? ORDER BY seq LIMIT ?`
	if p.Desc {
		query = `SELECT seq, id, body FROM conversation_items WHERE conversation_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?`
	}
	items, err := s.scanItems(ctx, s.q(query), id, from, p.Limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("store: items of conversation %q: %w", id, err)
	}
	if len(items) > p.Limit {
		return items[:p.Limit], true, nil
	}
	return items, false, nil
}

func (s *Store) scanItems(ctx context.Context, query string, args ...any) ([]ConversationItem, error) {
	rows, err := s.read.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, classify(err)
	}
	defer rows.Close()
	var items []ConversationItem
	for rows.Next() {
		var it ConversationItem
		var body string
		if err := rows.Scan(&it.Seq, &it.ID, &body); err != nil {
			return nil, err
		}
		it.Body = []byte(body)
		items = append(items, it)
	}
	return items, rows.Err()
}

// ConversationContext returns the newest max items of the user's
// conversation id, oldest first: what a response reads as its context.
func (s *Store) ConversationContext(ctx context.Context, userID, id string, max int) (_ []ConversationItem, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	if max <= 0 || max > MaxConversationItems {
		max = MaxConversationItems
	}
	if _, err := s.Conversation(ctx, userID, id); err != nil {
		return nil, err
	}
	items, err := s.scanItems(ctx, s.q(`SELECT seq, id, body FROM conversation_items WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?`), id, max)
	if err != nil {
		return nil, fmt.Errorf("store: context of conversation %q: %w", id, err)
	}
	for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
		items[i], items[j] = items[j], items[i]
	}
	return items, nil
}

// ConversationItem returns the item itemID of the user's conversation id
// (the newest, if the id repeats).
func (s *Store) ConversationItem(ctx context.Context, userID, id, itemID string) (_ ConversationItem, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	if _, err := s.Conversation(ctx, userID, id); err != nil {
		return ConversationItem{}, err
	}
	items, err := s.scanItems(ctx, s.q(`SELECT seq, id, body FROM conversation_items WHERE conversation_id = ? AND id = ? ORDER BY seq DESC LIMIT 1`), id, itemID)
	if err != nil {
		return ConversationItem{}, fmt.Errorf("store: item %q of conversation %q: %w", itemID, id, err)
	}
	if len(items) == 0 {
		return ConversationItem{}, fmt.Errorf("store: item %q of conversation %q: %w", itemID, id, ErrNotFound)
	}
	return items[0], nil
}

// DeleteConversationItem deletes the item itemID (every copy of that id)
// from the user's conversation id.
func (s *Store) DeleteConversationItem(ctx context.Context, userID, id, itemID string) (err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	res, err := s.write.ExecContext(ctx, s.q(`
		DELETE FROM conversation_items WHERE conversation_id = ? AND id = ? AND conversation_id IN (
			SELECT id FROM conversations WHERE id = ? AND user_id = ? AND expires_at > ?)`),
		id, itemID, id, userID, toMillis(now()))
	return s.oneRow(res, err, "delete conversation item", itemID)
}

// PurgeExpiredConversations deletes up to limit conversations expired at
// before, with their items, and reports how many it deleted.
func (s *Store) PurgeExpiredConversations(ctx context.Context, before time.Time, limit int) (_ int64, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	if limit <= 0 {
		limit = 1000
	}
	var n int64
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`
			DELETE FROM conversation_items WHERE conversation_id IN (
				SELECT id FROM conversations WHERE expires_at <= ? LIMIT ?)`), toMillis(before), limit); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, s.q(`
			DELETE FROM conversations WHERE id IN (
				SELECT id FROM conversations WHERE expires_at <= ? LIMIT ?)`), toMillis(before), limit)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: purge expired conversations: %w", err)
	}
	return n, nil
}

package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// APIKey is a long-lived credential owned by a user. The key itself is never
// stored: Hash is computed by the caller (see package auth), and Prefix is a
// short, non-secret part of the key kept so people can tell their keys apart.
type APIKey struct {
	ID         string
	UserID     string
	Name       string
	Hash       string
	Prefix     string
	CreatedAt  time.Time
	LastUsedAt *time.Time
	// RevokedAt is set once the key is revoked; a revoked key stays in the
	// table so that lookups can tell "revoked" from "never existed".
	RevokedAt *time.Time
}

const apiKeyColumns = `id, user_id, name, hash, prefix, created_at, last_used_at, revoked_at`

// CreateAPIKey inserts k and returns it as stored. An empty ID is generated
// and a zero CreatedAt becomes now. It returns ErrConflict if the hash or ID
// is already taken, and ErrNotFound if k.UserID names no user.
func (s *Store) CreateAPIKey(ctx context.Context, k APIKey) (_ APIKey, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	if k.Hash == "" {
		return APIKey{}, errors.New("store: create api key: hash is empty")
	}
	if k.ID == "" {
		id, err := newID()
		if err != nil {
			return APIKey{}, fmt.Errorf("store: create api key for user id %q: %w", k.UserID, err)
		}
		k.ID = id
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = now()
	} else {
		k.CreatedAt = k.CreatedAt.UTC().Truncate(time.Millisecond)
	}
	k.LastUsedAt = truncatePtr(k.LastUsedAt)
	k.RevokedAt = truncatePtr(k.RevokedAt)
	_, err = s.write.ExecContext(ctx,
		s.q(`INSERT INTO api_keys (`+apiKeyColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
		k.ID, k.UserID, k.Name, k.Hash, k.Prefix, toMillis(k.CreatedAt),
		nullMillis(k.LastUsedAt), nullMillis(k.RevokedAt))
	if err != nil {
		if isForeignKeyViolation(err) {
			err = fmt.Errorf("user: %w", ErrNotFound)
		}
		return APIKey{}, fmt.Errorf("store: create api key for user id %q: %w", k.UserID, classify(err))
	}
	return k, nil
}

// APIKeyByHash returns the key with the given hash, revoked or not (the
// caller decides what a revoked key means), or ErrNotFound.
func (s *Store) APIKeyByHash(ctx context.Context, hash string) (_ APIKey, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	row := s.read.QueryRowContext(ctx, s.q(`SELECT `+apiKeyColumns+` FROM api_keys WHERE hash = ?`), hash)
	k, err := scanAPIKey(row)
	if err != nil {
		// The hash is not secret, but it is no use in a log line either.
		return APIKey{}, fmt.Errorf("store: get api key by hash: %w", classify(err))
	}
	return k, nil
}

// ListAPIKeys returns every key of the user, revoked ones included, newest
// first.
func (s *Store) ListAPIKeys(ctx context.Context, userID string) (_ []APIKey, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	// Ids are UUIDv7 and so order keys created within one millisecond.
	rows, err := s.read.QueryContext(ctx,
		s.q(`SELECT `+apiKeyColumns+` FROM api_keys WHERE user_id = ? ORDER BY created_at DESC, id DESC`), userID)
	if err != nil {
		return nil, fmt.Errorf("store: list api keys of user id %q: %w", userID, err)
	}
	keys, err := scanAPIKeys(rows)
	if err != nil {
		return nil, fmt.Errorf("store: list api keys of user id %q: %w", userID, err)
	}
	return keys, nil
}

// RevokeAPIKey marks the key revoked and returns it. It returns ErrNotFound
// if there is no such key or it belongs to another user, so that callers
// cannot learn which key ids exist. Revoking a revoked key changes nothing
// and returns it with its original RevokedAt.
func (s *Store) RevokeAPIKey(ctx context.Context, userID, id string) (_ APIKey, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	row := s.write.QueryRowContext(ctx,
		s.q(`UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND user_id = ? RETURNING `+apiKeyColumns),
		toMillis(now()), id, userID)
	k, err := scanAPIKey(row)
	if err != nil {
		return APIKey{}, fmt.Errorf("store: revoke api key %q of user id %q: %w", id, userID, classify(err))
	}
	return k, nil
}

// RevokedAPIKeysSince returns the keys revoked at or after since, oldest
// revocation first. Replicas that cache keys poll it to drop revoked ones;
// the bound is inclusive so that a revocation in the same millisecond as the
// previous poll's newest one is not missed (seeing one twice is harmless).
func (s *Store) RevokedAPIKeysSince(ctx context.Context, since time.Time) (_ []APIKey, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	rows, err := s.read.QueryContext(ctx,
		s.q(`SELECT `+apiKeyColumns+` FROM api_keys WHERE revoked_at >= ? ORDER BY revoked_at, id`),
		toMillis(since))
	if err != nil {
		return nil, fmt.Errorf("store: list api keys revoked since %s: %w", since.UTC().Format(time.RFC3339Nano), err)
	}
	keys, err := scanAPIKeys(rows)
	if err != nil {
		return nil, fmt.Errorf("store: list api keys revoked since %s: %w", since.UTC().Format(time.RFC3339Nano), err)
	}
	return keys, nil
}

// TouchAPIKey records that the key was used at the given time. It only moves
// LastUsedAt forward, so out-of-order updates from several replicas settle on
// the latest use. It returns ErrNotFound if there is no such key.
func (s *Store) TouchAPIKey(ctx context.Context, id string, at time.Time) (err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	ms := toMillis(at)
	res, err := s.write.ExecContext(ctx,
		s.q(`UPDATE api_keys SET last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < ? THEN ? ELSE last_used_at END WHERE id = ?`),
		ms, ms, id)
	if err != nil {
		return fmt.Errorf("store: touch api key %q: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: touch api key %q: %w", id, err)
	}
	if n == 0 {
		return fmt.Errorf("store: touch api key %q: %w", id, ErrNotFound)
	}
	return nil
}

func scanAPIKeys(rows *sql.Rows) ([]APIKey, error) {
	defer rows.Close()
	var keys []APIKey
	for rows.Next() {
		k, err := scanAPIKey(rows)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return keys, nil
}

func scanAPIKey(r scanner) (APIKey, error) {
	var (
		k                 APIKey
		created           int64
		lastUsed, revoked sql.NullInt64
	)
	if err := r.Scan(&k.ID, &k.UserID, &k.Name, &k.Hash, &k.Prefix, &created, &lastUsed, &revoked); err != nil {
		return APIKey{}, err
	}
	k.CreatedAt = fromMillis(created)
	k.LastUsedAt = fromNullMillis(lastUsed)
	k.RevokedAt = fromNullMillis(revoked)
	return k, nil
}

func nullMillis(t *time.Time) sql.NullInt64 {
	if t == nil {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: toMillis(*t), Valid: true}
}

// truncatePtr returns a copy of *t at stored precision, so the caller's value
// is neither aliased nor modified.
func truncatePtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := t.UTC().Truncate(time.Millisecond)
	return &v
}

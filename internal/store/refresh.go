package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// ErrRevoked reports a refresh token whose family was revoked (at logout, or
// after a replaced token was presented again).
var ErrRevoked = errors.New("store: revoked")

// ErrRefreshReused reports a refresh token that had already been exchanged
// for its successor. Only a thief or a client racing itself presents a token
// twice, and the two cannot be told apart, so the store revokes the token's
// whole family before returning it.
var ErrRefreshReused = errors.New("store: refresh token already used")

// RefreshToken is one link of a refresh family: the chain of tokens that
// starts at one login and grows by one token at every refresh. The token
// itself is never stored; Hash is computed by the caller (see package auth).
type RefreshToken struct {
	Hash      string
	FamilyID  string
	UserID    string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// StartRefreshFamily opens a new family for the user with its first token,
// which expires at expiresAt. It returns ErrNotFound if userID names no user
// and ErrConflict if the hash is taken.
func (s *Store) StartRefreshFamily(ctx context.Context, userID, hash string, expiresAt time.Time) (_ RefreshToken, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	if hash == "" {
		return RefreshToken{}, errors.New("store: start refresh family: hash is empty")
	}
	fam, err := newID()
	if err != nil {
		return RefreshToken{}, fmt.Errorf("store: start refresh family for user id %q: %w", userID, err)
	}
	t := RefreshToken{Hash: hash, FamilyID: fam, UserID: userID, CreatedAt: now(), ExpiresAt: expiresAt.UTC().Truncate(time.Millisecond)}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO refresh_families (id, user_id, created_at) VALUES (?, ?, ?)`),
			fam, userID, toMillis(t.CreatedAt)); err != nil {
			return err
		}
		return s.insertRefresh(ctx, tx, t)
	})
	if err != nil {
		if isForeignKeyViolation(err) {
			err = fmt.Errorf("user: %w", ErrNotFound)
		}
		return RefreshToken{}, fmt.Errorf("store: start refresh family for user id %q: %w", userID, classify(err))
	}
	return t, nil
}

// RotateRefreshToken exchanges the token with hash oldHash for a new one,
// newHash, in the same family, expiring at expiresAt, and returns the new
// token. Exactly one of any number of concurrent exchanges of one token
// succeeds.
//
// It returns ErrNotFound for an unknown or expired token, ErrRevoked when the
// family was revoked, and ErrRefreshReused (after revoking the family) when
// the token had already been exchanged. With the last two the returned value
// names the family and user, for the log.
func (s *Store) RotateRefreshToken(ctx context.Context, oldHash, newHash string, expiresAt time.Time) (_ RefreshToken, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	if newHash == "" || newHash == oldHash {
		return RefreshToken{}, errors.New("store: rotate refresh token: new hash is empty or unchanged")
	}
	var out RefreshToken
	var outcome error
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		var (
			exp           int64
			used, revoked sql.NullInt64
		)
		row := tx.QueryRowContext(ctx, s.q(`SELECT t.family_id, t.user_id, t.expires_at, t.used_at, f.revoked_at
			FROM refresh_tokens t JOIN refresh_families f ON f.id = t.family_id WHERE t.hash = ?`), oldHash)
		if err := row.Scan(&out.FamilyID, &out.UserID, &exp, &used, &revoked); err != nil {
			return err
		}
		at := now()
		switch {
		case revoked.Valid:
			outcome = ErrRevoked
			return nil
		case used.Valid:
			outcome = ErrRefreshReused
			return s.revokeFamily(ctx, tx, out.FamilyID, at)
		case exp <= toMillis(at):
			outcome = ErrNotFound
			return nil
		}
		// The condition on used_at makes the exchange happen once: a
		// concurrent exchange that got here first leaves nothing to update
		// (PostgreSQL re-checks it after waiting for the row lock; SQLite
		// runs write transactions one at a time).
		res, err := tx.ExecContext(ctx, s.q(`UPDATE refresh_tokens SET used_at = ? WHERE hash = ? AND used_at IS NULL`), toMillis(at), oldHash)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			outcome = ErrRefreshReused
			return s.revokeFamily(ctx, tx, out.FamilyID, at)
		}
		out.Hash, out.CreatedAt, out.ExpiresAt = newHash, at, expiresAt.UTC().Truncate(time.Millisecond)
		return s.insertRefresh(ctx, tx, out)
	})
	if err == nil {
		err = outcome
	}
	if err != nil {
		if outcome != nil {
			return RefreshToken{FamilyID: out.FamilyID, UserID: out.UserID}, fmt.Errorf("store: rotate refresh token: %w", err)
		}
		return RefreshToken{}, fmt.Errorf("store: rotate refresh token: %w", classify(err))
	}
	return out, nil
}

// RevokeRefreshFamilyOf revokes the family of the token with the given hash,
// provided it belongs to userID; otherwise it returns ErrNotFound, so a caller
// cannot end someone else's session. Revoking a revoked family changes nothing.
func (s *Store) RevokeRefreshFamilyOf(ctx context.Context, userID, hash string) (err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	var fam string
	err = s.read.QueryRowContext(ctx, s.q(`SELECT family_id FROM refresh_tokens WHERE hash = ? AND user_id = ?`), hash, userID).Scan(&fam)
	if err != nil {
		return fmt.Errorf("store: revoke refresh family of user id %q: %w", userID, classify(err))
	}
	if err := s.inTx(ctx, func(tx *sql.Tx) error { return s.revokeFamily(ctx, tx, fam, now()) }); err != nil {
		return fmt.Errorf("store: revoke refresh family %q: %w", fam, err)
	}
	return nil
}

// RevokeRefreshFamily revokes the family with the given id, provided it
// belongs to userID; otherwise it returns ErrNotFound. Revoking a revoked
// family changes nothing.
func (s *Store) RevokeRefreshFamily(ctx context.Context, userID, familyID string) (err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	res, err := s.write.ExecContext(ctx,
		s.q(`UPDATE refresh_families SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND user_id = ?`), toMillis(now()), familyID, userID)
	if err != nil {
		return fmt.Errorf("store: revoke refresh family %q: %w", familyID, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("store: revoke refresh family %q: %w", familyID, err)
	} else if n == 0 {
		return fmt.Errorf("store: revoke refresh family %q of user id %q: %w", familyID, userID, ErrNotFound)
	}
	return nil
}

// DeleteExpiredRefreshTokens removes tokens that expired before the given
// time, and the families left without tokens, and returns how many tokens
// went. A deleted token is refused as unknown, just as an expired one is.
func (s *Store) DeleteExpiredRefreshTokens(ctx context.Context, before time.Time) (_ int64, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	var n int64
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`DELETE FROM refresh_tokens WHERE expires_at < ?`), toMillis(before))
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM refresh_families WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = refresh_families.id)`)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: delete expired refresh tokens: %w", err)
	}
	return n, nil
}

func (s *Store) revokeFamily(ctx context.Context, tx *sql.Tx, familyID string, at time.Time) error {
	_, err := tx.ExecContext(ctx, s.q(`UPDATE refresh_families SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL`), toMillis(at), familyID)
	return err
}

func (s *Store) insertRefresh(ctx context.Context, tx *sql.Tx, t RefreshToken) error {
	_, err := tx.ExecContext(ctx, s.q(`INSERT INTO refresh_tokens (hash, family_id, user_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`),
		t.Hash, t.FamilyID, t.UserID, toMillis(t.CreatedAt), toMillis(t.ExpiresAt))
	return err
}

// inTx runs fn in a transaction on the write pool and commits when fn
// returns nil.
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

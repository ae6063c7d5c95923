package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/agentapi/agentapi/internal/tier"
)

// Defaults applied by CreateUser to fields left empty: a new account gets
// the least privileged tier.
const (
	DefaultTier = tier.Free
	DefaultRole = "user"
)

// DefaultListLimit is the page size ListUsers uses when given a limit of zero
// or less.
const DefaultListLimit = 100

// User is an account that can log in or own API keys.
type User struct {
	ID string
	// Email is stored and returned lower-cased; it identifies the user
	// case-insensitively.
	Email        string
	PasswordHash string
	Tier         string
	Role         string
	Disabled     bool
	CreatedAt    time.Time
}

const userColumns = `id, email, password_hash, tier, role, disabled, created_at`

// normalizeEmail gives the one spelling of an address under which it is
// stored and looked up.
func normalizeEmail(email string) string {
	return strings.ToLower(strings.TrimSpace(email))
}

// newID returns a fresh identifier. UUIDv7 starts with a timestamp, so new
// rows land at the end of the primary-key index instead of at random places.
func newID() (string, error) {
	id, err := uuid.NewV7()
	if err != nil {
		return "", err
	}
	return id.String(), nil
}

// CreateUser inserts u and returns it as stored. An empty ID is generated, an
// empty Tier or Role becomes DefaultTier or DefaultRole, a zero CreatedAt
// becomes now, and the email is lower-cased. It returns ErrConflict if another
// user has the same email in any letter case.
func (s *Store) CreateUser(ctx context.Context, u User) (_ User, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	u.Email = normalizeEmail(u.Email)
	if u.Email == "" {
		return User{}, errors.New("store: create user: email is empty")
	}
	if u.ID == "" {
		id, err := newID()
		if err != nil {
			return User{}, fmt.Errorf("store: create user %q: %w", u.Email, err)
		}
		u.ID = id
	}
	if u.Tier == "" {
		u.Tier = DefaultTier
	}
	if u.Role == "" {
		u.Role = DefaultRole
	}
	if u.CreatedAt.IsZero() {
		u.CreatedAt = now()
	} else {
		u.CreatedAt = u.CreatedAt.UTC().Truncate(time.Millisecond)
	}
	_, err = s.write.ExecContext(ctx,
		s.q(`INSERT INTO users (`+userColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?)`),
		u.ID, u.Email, u.PasswordHash, u.Tier, u.Role, u.Disabled, toMillis(u.CreatedAt))
	if err != nil {
		return User{}, fmt.Errorf("store: create user %q: %w", u.Email, classify(err))
	}
	return u, nil
}

// UserByEmail returns the user with the given email, compared
// case-insensitively, or ErrNotFound.
func (s *Store) UserByEmail(ctx context.Context, email string) (_ User, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	email = normalizeEmail(email)
	row := s.read.QueryRowContext(ctx, s.q(`SELECT `+userColumns+` FROM users WHERE email = ?`), email)
	u, err := scanUser(row)
	if err != nil {
		return User{}, fmt.Errorf("store: get user %q: %w", email, classify(err))
	}
	return u, nil
}

// UserByID returns the user with the given id, or ErrNotFound.
func (s *Store) UserByID(ctx context.Context, id string) (_ User, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	row := s.read.QueryRowContext(ctx, s.q(`SELECT `+userColumns+` FROM users WHERE id = ?`), id)
	u, err := scanUser(row)
	if err != nil {
		return User{}, fmt.Errorf("store: get user id %q: %w", id, classify(err))
	}
	return u, nil
}

// SetTier changes the tier of the user with the given email and returns the
// updated user, or ErrNotFound.
func (s *Store) SetTier(ctx context.Context, email, tier string) (_ User, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	email = normalizeEmail(email)
	row := s.write.QueryRowContext(ctx,
		s.q(`UPDATE users SET tier = ? WHERE email = ? RETURNING `+userColumns), tier, email)
	u, err := scanUser(row)
	if err != nil {
		return User{}, fmt.Errorf("store: set tier of user %q: %w", email, classify(err))
	}
	return u, nil
}

// SetPassword replaces the password hash of the user with the given email,
// or returns ErrNotFound.
func (s *Store) SetPassword(ctx context.Context, email, hash string) (err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	email = normalizeEmail(email)
	res, err := s.write.ExecContext(ctx, s.q(`UPDATE users SET password_hash = ? WHERE email = ?`), hash, email)
	if err != nil {
		return fmt.Errorf("store: set password of user %q: %w", email, classify(err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("store: set password of user %q: %w", email, err)
	}
	if n == 0 {
		return fmt.Errorf("store: set password of user %q: %w", email, ErrNotFound)
	}
	return nil
}

// ListUsers returns up to limit users, oldest first, skipping the first
// offset. A non-empty emailContains keeps only users whose email contains it
// (case-insensitively, taken literally: % and _ are not wildcards). A limit of
// zero or less means DefaultListLimit.
func (s *Store) ListUsers(ctx context.Context, limit, offset int, emailContains string) (_ []User, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	if limit <= 0 {
		limit = DefaultListLimit
	}
	offset = max(offset, 0)
	query := `SELECT ` + userColumns + ` FROM users`
	args := make([]any, 0, 3)
	if needle := normalizeEmail(emailContains); needle != "" {
		query += ` WHERE email LIKE ? ESCAPE '\'`
		args = append(args, "%"+escapeLike(needle)+"%")
	}
	query += ` ORDER BY created_at, id LIMIT ? OFFSET ?`
	args = append(args, limit, offset)

	rows, err := s.read.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("store: list users: %w", err)
	}
	defer rows.Close()
	var users []User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, fmt.Errorf("store: list users: %w", err)
		}
		users = append(users, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list users: %w", err)
	}
	return users, nil
}

// escapeLike makes s match itself literally inside a LIKE pattern that uses
// backslash as its escape character.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// SetDisabled disables or re-enables the user with the given id and returns
// the updated user, or ErrNotFound.
func (s *Store) SetDisabled(ctx context.Context, id string, disabled bool) (_ User, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	row := s.write.QueryRowContext(ctx,
		s.q(`UPDATE users SET disabled = ? WHERE id = ? RETURNING `+userColumns), disabled, id)
	u, err := scanUser(row)
	if err != nil {
		return User{}, fmt.Errorf("store: set disabled of user id %q: %w", id, classify(err))
	}
	return u, nil
}

// SetRole changes the role of the user with the given id and returns the
// updated user, or ErrNotFound.
func (s *Store) SetRole(ctx context.Context, id, role string) (_ User, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	row := s.write.QueryRowContext(ctx,
		s.q(`UPDATE users SET role = ? WHERE id = ? RETURNING `+userColumns), role, id)
	u, err := scanUser(row)
	if err != nil {
		return User{}, fmt.Errorf("store: set role of user id %q: %w", id, classify(err))
	}
	return u, nil
}

// scanner is what *sql.Row and *sql.Rows have in common.
type scanner interface {
	Scan(dest ...any) error
}

func scanUser(r scanner) (User, error) {
	var (
		u       User
		created int64
	)
	if err := r.Scan(&u.ID, &u.Email, &u.PasswordHash, &u.Tier, &u.Role, &u.Disabled, &created); err != nil {
		return User{}, err
	}
	u.CreatedAt = fromMillis(created)
	return u, nil
}

// Compile-time check that both row kinds satisfy scanner.
var (
	_ scanner = (*sql.Row)(nil)
	_ scanner = (*sql.Rows)(nil)
)

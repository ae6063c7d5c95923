package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"fmt"
	"io/fs"
	"time"

	"github.com/gofrs/flock"
	"github.com/pressly/goose/v3"
)

// migrations holds the schema history. The files are plain SQL accepted by
// both SQLite and PostgreSQL; goose records what has been applied in its
// goose_db_version table.
//
//go:embed migrations/*.sql
var migrations embed.FS

// migrate applies any migrations the database has not seen yet. On
// PostgreSQL it takes the advisory lock itself; beside a SQLite file the
// caller holds the file lock (see pingAndMigrate).
func (s *Store) migrate(ctx context.Context) error {
	p, err := s.migrationProvider()
	if err != nil {
		return fmt.Errorf("store: migrate: %w", err)
	}
	if s.dialect == DialectPostgres {
		unlock, err := lockMigrations(ctx, s.write)
		if err != nil {
			return fmt.Errorf("store: migrate %s: %w", s.dialect, err)
		}
		defer unlock()
	}
	if _, err := p.Up(ctx); err != nil {
		return fmt.Errorf("store: migrate %s: %w", s.dialect, err)
	}
	return nil
}

// migrationProvider returns a goose provider for the embedded migrations on
// the store's write pool. It is local and ignores goose's global registry of
// Go migrations, so no goose package state is involved; it logs nothing.
func (s *Store) migrationProvider() (*goose.Provider, error) {
	fsys, err := fs.Sub(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	dialect := goose.DialectSQLite3
	if s.dialect == DialectPostgres {
		dialect = goose.DialectPostgres
	}
	return goose.NewProvider(dialect, s.write, fsys, goose.WithDisableGlobalRegistry(true))
}

// migrationLockKey is evaluated by PostgreSQL on the locking connection and
// names the advisory lock that serialises migrations.
//
// It is derived from the current schema: replicas of one deployment (same
// schema) exclude each other, while deployments or test runs in different
// schemas of one database do not wait on each other. hashtextextended gives
// a stable 64-bit key (PostgreSQL 11 and later).
const migrationLockKey = `hashtextextended('agentapi.migrate.' || coalesce(current_schema(), ''), 0)`

// lockMigrations holds a session-level advisory lock on a connection of its
// own until the returned function is called, so that replicas starting
// together migrate one after another.
//
// The lock is taken around all of goose's work rather than through goose's
// SessionLocker option, because goose's Up first checks for pending
// migrations (creating its version table if needed) without its locker;
// replicas starting together then race to create that table and the losers
// sleep a second before retrying. pg_advisory_lock also waits without
// polling, for as long as ctx allows.
func lockMigrations(ctx context.Context, db *sql.DB) (unlock func(), err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("acquire migration lock: %w", err)
	}
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(`+migrationLockKey+`)`); err != nil {
		discard(conn)
		return nil, fmt.Errorf("acquire migration lock: %w", err)
	}
	return func() {
		// Release even if ctx has been cancelled meanwhile, but do not
		// hang on a server that has stopped answering.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		var released bool
		err := conn.QueryRowContext(ctx, `SELECT pg_advisory_unlock(`+migrationLockKey+`)`).Scan(&released)
		if err != nil || !released {
			discard(conn)
			return
		}
		conn.Close()
	}, nil
}

// discard closes conn for good rather than returning it to the pool. The
// server drops a session's advisory locks when the session ends, so a lock
// that could not be released (or whose acquisition was interrupted) cannot
// outlive this process's use of it and stall every later migration.
func discard(conn *sql.Conn) {
	_ = conn.Raw(func(any) error { return driver.ErrBadConn })
	conn.Close()
}

// sqliteLockRetry is how often a process waiting for another's SQLite
// migration tries the lock again.
const sqliteLockRetry = 20 * time.Millisecond

// lockSQLiteMigrations holds an exclusive lock on the file
// <database>.migrate-lock until the returned function is called: SQLite's
// counterpart of lockMigrations. SQLite's own locks cover one transaction,
// and goose applies each migration in its own, after reading the version
// in another; two processes starting on a fresh file would both read
// "nothing applied" and the second would fail on CREATE TABLE. The lock is
// an operating-system file lock (flock on Unix, LockFileEx on Windows),
// which the system drops if the process dies, so a crash cannot leave it
// held. The lock file is left in place: removing it could let a third
// process lock a new file while a second still holds the old one.
func lockSQLiteMigrations(ctx context.Context, dbFile string) (unlock func(), err error) {
	l := flock.New(dbFile+".migrate-lock", flock.SetPermissions(0o600))
	ok, err := l.TryLockContext(ctx, sqliteLockRetry)
	if err != nil || !ok {
		l.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("acquire migration lock %s: %w", l.Path(), err)
	}
	return func() { l.Close() }, nil
}

// Package store keeps agentapi's durable state — users, API keys and token
// usage — in SQLite (a single file, for one machine) or PostgreSQL (shared by
// many replicas), behind one Store type over database/sql.
//
// Both engines run the same embedded migrations and, apart from placeholder
// syntax, the same SQL. Instants are stored as unix milliseconds, so every
// time.Time the store returns is in UTC with millisecond precision.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Dialect names returned by Store.Dialect.
const (
	DialectSQLite   = "sqlite"
	DialectPostgres = "postgres"
)

// DefaultSQLitePath is the database file Open uses when given an empty URL.
const DefaultSQLitePath = "agentapi.db"

// sqliteBusyTimeout is how long, in milliseconds, a SQLite connection waits
// for another process's write lock before giving up. Within one process the
// single write connection already serialises writers; this covers a second
// process (say the CLI) writing to the same file as a running server.
const sqliteBusyTimeout = 5000

// ErrNotFound reports that the requested row does not exist (or, for
// operations scoped to a user, is not visible to that user).
var ErrNotFound = errors.New("store: not found")

// ErrConflict reports that a write would violate a uniqueness rule, such as
// a second user with the same email or a second key with the same hash.
var ErrConflict = errors.New("store: conflict")

// ErrUnavailable reports that the database could not be reached, or did not
// answer within the store's time limit for one operation. The error's text
// keeps the driver's reason, for the log.
var ErrUnavailable = errors.New("store: database unavailable")

// OpTimeout bounds one store operation: a query, or a batch written in one
// transaction, including the wait for a pooled connection and any dial. The
// store's queries are point lookups and small writes that take milliseconds;
// the limit exists so that a database that stopped answering (a network
// partition, a server stuck on a lock) costs a request seconds, not forever.
// It is generous because cutting a slow but healthy operation short fails a
// request that would have succeeded.
const OpTimeout = 5 * time.Second

// pgConnectTimeout bounds one new PostgreSQL connection, TLS and
// authentication included, unless the URL sets a non-zero connect_timeout
// (0, libpq's "wait forever", gets this bound too). pgx's own
// default is to wait as long as the caller's context allows, which for
// start-up and migrations is forever.
const pgConnectTimeout = 3 * time.Second

// errOpTimeout is the cause of an operation's context when OpTimeout, and
// not the caller, ended it.
var errOpTimeout = errors.New("store: operation time limit reached")

// Store is the handle to agentapi's database. It is safe for concurrent use.
type Store struct {
	dialect string
	// opTimeout is OpTimeout; tests shorten it.
	opTimeout time.Duration
	// write carries every statement that modifies data. For SQLite it is a
	// pool of exactly one connection, because SQLite admits a single writer
	// at a time: queueing writers in Go (where they honour their contexts)
	// is cheaper and more predictable than letting them race for the file
	// lock. For PostgreSQL it is the same pool as read.
	write *sql.DB
	// read carries queries. For a SQLite file it is a separate, query-only
	// pool, since WAL lets readers proceed while a write is in progress.
	read *sql.DB
	// sqliteFile is the SQLite database file, "" for PostgreSQL and for an
	// in-memory database; migrations lock a file beside it.
	sqliteFile string
	// insertUsageFull is the INSERT of a full chunk of usage rows, built on
	// first use.
	insertUsageOnce sync.Once
	insertUsageFull string
}

// Open connects to the database named by databaseURL and brings its schema
// up to date before returning.
//
// A URL starting with postgres:// or postgresql:// selects PostgreSQL (any
// connection parameter pgx understands may be given, search_path included).
// Anything else names a SQLite database: a plain path, the same path behind
// sqlite:// or sqlite:, or a SQLite file: URI. An empty URL means
// DefaultSQLitePath in the working directory.
//
// Several processes may Open the same database at once; migration is
// serialised (by an advisory lock on PostgreSQL, by a lock on the file
// <database>.migrate-lock beside a SQLite file), so exactly one of them
// applies it and the others find nothing left to do.
func Open(ctx context.Context, databaseURL string) (*Store, error) {
	var (
		s   *Store
		err error
	)
	if isPostgresURL(databaseURL) {
		s, err = openPostgres(databaseURL)
	} else {
		s, err = openSQLite(databaseURL)
	}
	if err != nil {
		return nil, err
	}
	if err := s.pingAndMigrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// pingAndMigrate checks the database answers and applies its migrations.
// Beside a SQLite file both happen under the migration file lock: the
// ping opens the first connection, whose pragmas switch a fresh file to
// WAL, and SQLite answers that switch with SQLITE_BUSY at once, without
// waiting out busy_timeout, while another process is migrating the file.
func (s *Store) pingAndMigrate(ctx context.Context) error {
	if s.sqliteFile != "" {
		unlock, err := lockSQLiteMigrations(ctx, s.sqliteFile)
		if err != nil {
			return fmt.Errorf("store: open %s: %w", s.dialect, err)
		}
		defer unlock()
	}
	if err := s.Ping(ctx); err != nil {
		return err
	}
	return s.migrate(ctx)
}

func isPostgresURL(u string) bool {
	return strings.HasPrefix(u, "postgres://") || strings.HasPrefix(u, "postgresql://")
}

func openPostgres(databaseURL string) (*Store, error) {
	cfg, err := pgx.ParseConfig(databaseURL)
	if err != nil {
		// pgx's message can echo the URL, password included, so it is not
		// wrapped here.
		return nil, errors.New("store: open postgres: invalid database URL")
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = pgConnectTimeout
	}
	db := stdlib.OpenDB(*cfg)
	// database/sql keeps only two idle connections by default, which under
	// steady load means opening and closing connections all the time.
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(32)
	db.SetConnMaxIdleTime(5 * time.Minute)
	// Recycle connections now and then so that a fail-over or a
	// PgBouncer/DNS change is eventually picked up.
	db.SetConnMaxLifetime(time.Hour)
	return &Store{dialect: DialectPostgres, opTimeout: OpTimeout, write: db, read: db}, nil
}

func openSQLite(databaseURL string) (*Store, error) {
	path := sqlitePath(databaseURL)
	if isSQLiteMemory(path) {
		// Every connection to :memory: is its own empty database, so a
		// memory store must live on exactly one connection that is never
		// closed.
		db, err := sql.Open("sqlite", sqliteDSN(path, false))
		if err != nil {
			return nil, fmt.Errorf("store: open sqlite: %w", err)
		}
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		db.SetConnMaxLifetime(0)
		db.SetConnMaxIdleTime(0)
		return &Store{dialect: DialectSQLite, opTimeout: OpTimeout, write: db, read: db}, nil
	}

	write, err := sql.Open("sqlite", sqliteDSN(path, false))
	if err != nil {
		return nil, fmt.Errorf("store: open sqlite %q: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	write.SetConnMaxIdleTime(0)

	read, err := sql.Open("sqlite", sqliteDSN(path, true))
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("store: open sqlite %q: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	read.SetMaxOpenConns(n)
	read.SetMaxIdleConns(n)
	return &Store{dialect: DialectSQLite, opTimeout: OpTimeout, write: write, read: read, sqliteFile: sqliteFileName(path)}, nil
}

// sqliteFileName is the file a SQLite path opens: a file: URI without its
// scheme and query, or the path itself.
func sqliteFileName(path string) string {
	if rest, ok := strings.CutPrefix(path, "file:"); ok {
		rest, _, _ = strings.Cut(rest, "?")
		// file:///abs.db and file:/abs.db both name /abs.db.
		if strings.HasPrefix(rest, "//") {
			rest = strings.TrimPrefix(rest, "//")
		}
		return rest
	}
	return path
}

// sqlitePath turns the accepted spellings of a SQLite database into the name
// the driver opens: "sqlite:///abs.db" and "sqlite:/abs.db" become "/abs.db",
// "sqlite://rel.db" and "sqlite:rel.db" become "rel.db", and file: URIs and
// plain paths are left alone.
func sqlitePath(databaseURL string) string {
	p := databaseURL
	switch {
	case strings.HasPrefix(p, "sqlite://"):
		p = strings.TrimPrefix(p, "sqlite://")
	case strings.HasPrefix(p, "sqlite3://"):
		p = strings.TrimPrefix(p, "sqlite3://")
	case strings.HasPrefix(p, "sqlite:"):
		p = strings.TrimPrefix(p, "sqlite:")
	}
	if p == "" {
		return DefaultSQLitePath
	}
	return p
}

func isSQLiteMemory(path string) bool {
	name, query, _ := strings.Cut(path, "?")
	return name == ":memory:" || name == "file::memory:" ||
		strings.Contains("&"+query+"&", "&mode=memory&")
}

// sqliteDSN adds the connection settings agentapi relies on to a SQLite path.
// The pragmas run on every new connection, which matters because SQLite keeps
// most of them per connection rather than per file.
func sqliteDSN(path string, queryOnly bool) string {
	params := []string{
		// busy_timeout first: the pragmas after it may need a lock.
		"_pragma=busy_timeout(" + strconv.Itoa(sqliteBusyTimeout) + ")",
		"_pragma=foreign_keys(1)",
	}
	if queryOnly {
		// A safety net: a write sent down the read pool by mistake fails
		// loudly instead of racing the single writer.
		params = append(params, "_pragma=query_only(1)")
	} else {
		params = append(params,
			// WAL lets readers run alongside the writer; the mode is stored
			// in the file, so the writer setting it is enough.
			"_pragma=journal_mode(WAL)",
			// NORMAL is durable across application crashes in WAL mode
			// and skips an fsync per commit.
			"_pragma=synchronous(NORMAL)",
			// Temporary data, statement journals included, in memory:
			// a multi-row insert inside a transaction keeps a statement
			// journal, and a file for it costs a write call per page.
			"_pragma=temp_store(MEMORY)",
			// Take the write lock at BEGIN: a transaction that reads and
			// then writes would otherwise try to upgrade its lock
			// mid-way and fail with SQLITE_BUSY, which busy_timeout
			// cannot help with.
			"_txlock=immediate",
		)
	}
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return path + sep + strings.Join(params, "&")
}

// Dialect reports which database the store talks to: DialectSQLite or
// DialectPostgres.
func (s *Store) Dialect() string { return s.dialect }

// Ping checks that the database answers, for readiness probes.
func (s *Store) Ping(ctx context.Context) (err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	if err := s.write.PingContext(ctx); err != nil {
		return fmt.Errorf("store: ping %s: %w", s.dialect, err)
	}
	if s.read != s.write {
		if err := s.read.PingContext(ctx); err != nil {
			return fmt.Errorf("store: ping %s: %w", s.dialect, err)
		}
	}
	return nil
}

// Close releases the store's connections. Queries in flight are allowed to
// finish first.
func (s *Store) Close() error {
	var errs []error
	if s.read != s.write {
		errs = append(errs, s.read.Close())
	}
	errs = append(errs, s.write.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// op starts one operation: it returns ctx bounded by the store's time limit,
// and a function to defer with the address of the operation's error. That
// function releases the context and, when the database was unreachable or
// the time limit (not the caller) ended the operation, rewrites the error to
// wrap ErrUnavailable. The original error stays in the text but leaves the
// chain, so that a store timeout is not mistaken for the caller's own
// deadline (context.DeadlineExceeded) further up.
func (s *Store) op(ctx context.Context) (context.Context, func(*error)) {
	octx, cancel := context.WithTimeoutCause(ctx, s.opTimeout, errOpTimeout)
	return octx, func(errp *error) {
		defer cancel()
		err := *errp
		if err == nil || ctx.Err() != nil || errors.Is(err, ErrUnavailable) {
			return
		}
		timedOut := errors.Is(err, context.DeadlineExceeded) && errors.Is(context.Cause(octx), errOpTimeout)
		if timedOut || isConnectionError(err) {
			*errp = fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
}

// isConnectionError reports whether err says the database could not be
// reached or the connection broke, as opposed to the database refusing a
// statement. pgx reports failed connects as *pgconn.ConnectError, socket
// failures on an open connection as *net.OpError, and a connection the
// server (or something between) closed as io.ErrUnexpectedEOF or io.EOF: a
// pooled connection used within a second of its last use is not pinged
// first, so after a database restart that is what the next statement on it
// meets.
func isConnectionError(err error) bool {
	if _, ok := errors.AsType[*pgconn.ConnectError](err); ok {
		return true
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return true
	}
	_, ok := errors.AsType[*net.OpError](err)
	return ok
}

// q adapts a query written with ? placeholders to the store's dialect.
// Queries in this package never contain a literal question mark, so a plain
// scan is enough.
func (s *Store) q(query string) string {
	if s.dialect != DialectPostgres {
		return query
	}
	return rebindDollar(query)
}

// rebindDollar rewrites each ? in query as $1, $2, ... in order.
func rebindDollar(query string) string {
	n := strings.Count(query, "?")
	if n == 0 {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 2*n)
	i := 0
	for {
		j := strings.IndexByte(query, '?')
		if j < 0 {
			b.WriteString(query)
			return b.String()
		}
		i++
		b.WriteString(query[:j])
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(i))
		query = query[j+1:]
	}
}

// Constraint violations are told apart by the engines' error codes, which
// unlike their messages are a stable interface.
const (
	pgUniqueViolation     = "23505"
	pgForeignKeyViolation = "23503"
)

// isUniqueViolation reports whether err is a unique or primary-key
// constraint failure from either engine.
func isUniqueViolation(err error) bool {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return pgErr.Code == pgUniqueViolation
	}
	if sqlErr, ok := errors.AsType[*sqlite.Error](err); ok {
		code := sqlErr.Code()
		return code == sqlite3.SQLITE_CONSTRAINT_UNIQUE || code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}

// isForeignKeyViolation reports whether err says a referenced row (such as
// the user a key belongs to) does not exist.
func isForeignKeyViolation(err error) bool {
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		return pgErr.Code == pgForeignKeyViolation
	}
	if sqlErr, ok := errors.AsType[*sqlite.Error](err); ok {
		return sqlErr.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
	}
	return false
}

// classify maps driver errors onto the package's sentinels, keeping the
// driver error in the chain for logs.
func classify(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sql.ErrNoRows):
		return ErrNotFound
	case isUniqueViolation(err):
		return fmt.Errorf("%w: %w", ErrConflict, err)
	default:
		return err
	}
}

// Instants are stored as unix milliseconds; these two functions are the
// only conversions between the column values and time.Time.

func toMillis(t time.Time) int64 { return t.UnixMilli() }

func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

func fromNullMillis(ms sql.NullInt64) *time.Time {
	if !ms.Valid {
		return nil
	}
	t := fromMillis(ms.Int64)
	return &t
}

// now returns the current time at the precision the database keeps, so a
// value the store hands back compares equal to the same value read later.
func now() time.Time { return time.Now().UTC().Truncate(time.Millisecond) }

package store

import (
	"cmp"
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/shopspring/decimal"
)

// UsageRecord is the token count of one model call on behalf of a user.
type UsageRecord struct {
	// ID, when set, identifies the record for good: RecordUsage skips a
	// record whose ID is already stored, so a batch can be written again
	// after an error that left its outcome unknown without counting a call
	// twice. Records without an ID are always stored.
	ID     string
	UserID string
	// KeyID is the API key the request came in with, or empty when it was
	// authenticated some other way.
	KeyID            string
	Model            string
	PromptTokens     int64
	CompletionTokens int64
	// At is when the call was made; zero means the time of recording.
	At        time.Time
	RequestID string
	// Cost is what the call cost in USD, exactly; it is stored in
	// picodollars, so digits beyond the twelfth decimal place are dropped
	// (a catalogue price never has them).
	Cost decimal.Decimal
}

// picoPerUSD converts between USD and the stored picodollars.
var picoPerUSD = decimal.New(1, 12)

// toPico is cost in picodollars (truncated towards zero).
func toPico(cost decimal.Decimal) int64 { return cost.Mul(picoPerUSD).IntPart() }

// fromPico is picodollars as USD.
func fromPico(p int64) decimal.Decimal { return decimal.New(p, -12) }

// UsageDay is one user's usage of one model over one UTC calendar day.
type UsageDay struct {
	// Day is the UTC date, formatted YYYY-MM-DD.
	Day              string
	Model            string
	PromptTokens     int64
	CompletionTokens int64
	TotalTokens      int64
	Requests         int64
	// Cost is the calls' cost in USD, exactly.
	Cost decimal.Decimal
}

const millisPerDay = int64(24 * time.Hour / time.Millisecond)

// RecordUsage stores a batch of records in one transaction: either all of
// them are recorded or, on error, none. It returns ErrNotFound if a record
// names a user that does not exist.
//
// An error does not always mean that nothing was stored: when the connection
// breaks after COMMIT was sent, the database may have committed. Records with
// an ID are skipped if already stored, so writing such a batch again, as the
// usage recorder does after any error, still stores each record once.
func (s *Store) RecordUsage(ctx context.Context, recs []UsageRecord) (err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	if len(recs) == 0 {
		return nil
	}
	for i, r := range recs {
		if r.UserID == "" {
			return fmt.Errorf("store: record usage: record %d has no user id", i)
		}
	}
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: record usage: %w", err)
	}
	// After a successful Commit this is a no-op; after a failure it undoes
	// the part of the batch already inserted.
	defer func() { _ = tx.Rollback() }()
	recordedAt := now()
	// Rows go in by the hundred, one statement each: per row, a statement
	// of its own costs a round trip on PostgreSQL and the statement
	// machinery on SQLite, several times the insert itself.
	args := make([]any, 0, min(len(recs), usageRowsPerInsert)*usageColumns)
	var full *sql.Stmt // the full-chunk INSERT, prepared once per batch
	for start := 0; start < len(recs); start += usageRowsPerInsert {
		chunk := recs[start:min(start+usageRowsPerInsert, len(recs))]
		args = args[:0]
		for _, r := range chunk {
			at := r.At
			if at.IsZero() {
				at = recordedAt
			}
			var id any // NULL without an ID: never a conflict
			if r.ID != "" {
				id = r.ID
			}
			args = append(args, r.UserID, r.KeyID, r.Model, r.PromptTokens, r.CompletionTokens, toMillis(at), r.RequestID, id, toPico(r.Cost))
		}
		var err error
		if len(chunk) == usageRowsPerInsert {
			if full == nil {
				if full, err = tx.PrepareContext(ctx, s.insertUsageQuery(usageRowsPerInsert)); err != nil {
					return fmt.Errorf("store: record usage: %w", err)
				}
				defer full.Close()
			}
			_, err = full.ExecContext(ctx, args...)
		} else {
			_, err = tx.ExecContext(ctx, s.insertUsageQuery(len(chunk)), args...)
		}
		if err != nil {
			if isForeignKeyViolation(err) {
				return fmt.Errorf("store: record usage: a record names a user that does not exist: %w", ErrNotFound)
			}
			return fmt.Errorf("store: record usage: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: record usage: commit: %w", err)
	}
	return nil
}

// UsageByDay sums the user's usage in [from, to) per UTC day and model,
// ordered by day and then model.
func (s *Store) UsageByDay(ctx context.Context, userID string, from, to time.Time) (_ []UsageDay, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	// Integer division of the millisecond timestamp buckets rows by UTC day
	// in the same way on both engines; the date is formatted in Go. SUM is
	// cast because PostgreSQL widens a sum of BIGINT to NUMERIC.
	rows, err := s.read.QueryContext(ctx, s.q(`
		SELECT at / 86400000, model,
		       CAST(SUM(prompt_tokens) AS BIGINT),
		       CAST(SUM(completion_tokens) AS BIGINT),
		       COUNT(*),
		       CAST(SUM(cost_picousd) AS BIGINT)
		FROM usage_records
		WHERE user_id = ? AND at >= ? AND at < ?
		GROUP BY at / 86400000, model`),
		userID, toMillis(from), toMillis(to))
	if err != nil {
		return nil, fmt.Errorf("store: usage by day of user id %q: %w", userID, err)
	}
	defer rows.Close()
	var days []UsageDay
	for rows.Next() {
		var (
			d    UsageDay
			day  int64
			pico int64
		)
		if err := rows.Scan(&day, &d.Model, &d.PromptTokens, &d.CompletionTokens, &d.Requests, &pico); err != nil {
			return nil, fmt.Errorf("store: usage by day of user id %q: %w", userID, err)
		}
		d.Day = fromMillis(day * millisPerDay).Format(time.DateOnly)
		d.TotalTokens = d.PromptTokens + d.CompletionTokens
		d.Cost = fromPico(pico)
		days = append(days, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: usage by day of user id %q: %w", userID, err)
	}
	// Sorted here rather than in SQL because PostgreSQL would order model
	// names by the database's collation and SQLite by bytes; Go gives the
	// same byte order on both.
	slices.SortFunc(days, func(a, b UsageDay) int {
		return cmp.Or(cmp.Compare(a.Day, b.Day), cmp.Compare(a.Model, b.Model))
	})
	return days, nil
}

// TokensUsed returns the user's prompt plus completion tokens recorded at or
// after since.
func (s *Store) TokensUsed(ctx context.Context, userID string, since time.Time) (_ int64, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	var n int64
	err = s.read.QueryRowContext(ctx, s.q(`
		SELECT CAST(COALESCE(SUM(prompt_tokens + completion_tokens), 0) AS BIGINT)
		FROM usage_records
		WHERE user_id = ? AND at >= ?`),
		userID, toMillis(since)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: tokens used by user id %q: %w", userID, err)
	}
	return n, nil
}

// usageColumns is the number of values one usage row inserts, and
// usageRowsPerInsert the rows one INSERT carries at most (800 parameters,
// far below either engine's limit).
const (
	usageColumns       = 9
	usageRowsPerInsert = 100
)

// insertUsageQuery is the INSERT of n usage rows in this store's dialect.
// The full-size statement is built once; a batch's last, shorter chunk is
// built when needed.
func (s *Store) insertUsageQuery(n int) string {
	if n == usageRowsPerInsert {
		s.insertUsageOnce.Do(func() { s.insertUsageFull = s.buildInsertUsage(n) })
		return s.insertUsageFull
	}
	return s.buildInsertUsage(n)
}

func (s *Store) buildInsertUsage(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO usage_records
		(user_id, key_id, model, prompt_tokens, completion_tokens, at, request_id, record_id, cost_picousd) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?)")
	}
	b.WriteString(" ON CONFLICT (record_id) DO NOTHING")
	return s.q(b.String())
}

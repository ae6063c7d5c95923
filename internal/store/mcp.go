package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// MCPServer is one MCP server in the admin registry, as stored. The store
// keeps Headers as the opaque sealed text internal/mcp gives it and never
// reads it.
type MCPServer struct {
	Label       string
	URL         string
	Description string
	// Headers is the sealed form of the server's credentials; "" for none.
	Headers string
	// AllowedTools nil means every tool the server lists.
	AllowedTools []string
	// RequireApproval is "always" or "never".
	RequireApproval string
	// Tiers nil means every tier.
	Tiers     []string
	CreatedAt time.Time
	UpdatedAt time.Time
}

const mcpServerColumns = `label, url, description, headers, allowed_tools, require_approval, tiers, created_at, updated_at`

// CreateMCPServer registers s and returns it as stored; ErrConflict when
// its label is taken.
func (s *Store) CreateMCPServer(ctx context.Context, srv MCPServer) (_ MCPServer, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	if srv.Label == "" || srv.URL == "" {
		return MCPServer{}, fmt.Errorf("store: create mcp server: label and url are required")
	}
	at := now()
	srv.CreatedAt, srv.UpdatedAt = at, at
	_, err = s.write.ExecContext(ctx, s.q(`
		INSERT INTO mcp_servers (`+mcpServerColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`),
		srv.Label, srv.URL, srv.Description, srv.Headers, nullableNames(srv.AllowedTools),
		srv.RequireApproval, nullableNames(srv.Tiers), toMillis(at), toMillis(at))
	if err != nil {
		return MCPServer{}, fmt.Errorf("store: create mcp server %q: %w", srv.Label, classify(err))
	}
	return srv, nil
}

// UpdateMCPServer replaces every field of the server labelled srv.Label but
// its creation time; ErrNotFound when there is none.
func (s *Store) UpdateMCPServer(ctx context.Context, srv MCPServer) (_ MCPServer, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	at := now()
	res, err := s.write.ExecContext(ctx, s.q(`
		UPDATE mcp_servers SET url = ?, description = ?, headers = ?, allowed_tools = ?,
			require_approval = ?, tiers = ?, updated_at = ?
		WHERE label = ?`),
		srv.URL, srv.Description, srv.Headers, nullableNames(srv.AllowedTools),
		srv.RequireApproval, nullableNames(srv.Tiers), toMillis(at), srv.Label)
	if err != nil {
		return MCPServer{}, fmt.Errorf("store: update mcp server %q: %w", srv.Label, classify(err))
	}
	if n, err := res.RowsAffected(); err != nil {
		return MCPServer{}, fmt.Errorf("store: update mcp server %q: %w", srv.Label, err)
	} else if n == 0 {
		return MCPServer{}, fmt.Errorf("store: update mcp server %q: %w", srv.Label, ErrNotFound)
	}
	return s.readMCPServer(ctx, srv.Label)
}

// MCPServer returns the registered server labelled label; ErrNotFound when
// there is none.
func (s *Store) MCPServer(ctx context.Context, label string) (_ MCPServer, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	return s.readMCPServer(ctx, label)
}

func (s *Store) readMCPServer(ctx context.Context, label string) (MCPServer, error) {
	row := s.read.QueryRowContext(ctx, s.q(`SELECT `+mcpServerColumns+` FROM mcp_servers WHERE label = ?`), label)
	srv, err := scanMCPServer(row.Scan)
	if err != nil {
		return MCPServer{}, fmt.Errorf("store: mcp server %q: %w", label, classify(err))
	}
	return srv, nil
}

// ListMCPServers returns every registered server, by label. The registry
// is an admin's short list, so it is not paginated.
func (s *Store) ListMCPServers(ctx context.Context) (_ []MCPServer, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	rows, err := s.read.QueryContext(ctx, `SELECT `+mcpServerColumns+` FROM mcp_servers ORDER BY label`)
	if err != nil {
		return nil, fmt.Errorf("store: list mcp servers: %w", err)
	}
	defer rows.Close()
	var out []MCPServer
	for rows.Next() {
		srv, err := scanMCPServer(rows.Scan)
		if err != nil {
			return nil, fmt.Errorf("store: list mcp servers: %w", err)
		}
		out = append(out, srv)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: list mcp servers: %w", err)
	}
	return out, nil
}

// DeleteMCPServer removes the server labelled label; ErrNotFound when
// there is none. Its audit rows stay.
func (s *Store) DeleteMCPServer(ctx context.Context, label string) (err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	res, err := s.write.ExecContext(ctx, s.q(`DELETE FROM mcp_servers WHERE label = ?`), label)
	if err != nil {
		return fmt.Errorf("store: delete mcp server %q: %w", label, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("store: delete mcp server %q: %w", label, err)
	} else if n == 0 {
		return fmt.Errorf("store: delete mcp server %q: %w", label, ErrNotFound)
	}
	return nil
}

func scanMCPServer(scan func(...any) error) (MCPServer, error) {
	var (
		srv              MCPServer
		allowed, tiers   sql.NullString
		created, updated int64
	)
	if err := scan(&srv.Label, &srv.URL, &srv.Description, &srv.Headers, &allowed, &srv.RequireApproval, &tiers, &created, &updated); err != nil {
		return MCPServer{}, err
	}
	var err error
	if srv.AllowedTools, err = parseNames(allowed); err != nil {
		return MCPServer{}, fmt.Errorf("allowed_tools of %q: %w", srv.Label, err)
	}
	if srv.Tiers, err = parseNames(tiers); err != nil {
		return MCPServer{}, fmt.Errorf("tiers of %q: %w", srv.Label, err)
	}
	srv.CreatedAt, srv.UpdatedAt = fromMillis(created), fromMillis(updated)
	return srv, nil
}

// nullableNames stores a list of names as a JSON array, and nil as NULL
// (which means "no restriction", unlike an empty array).
func nullableNames(names []string) sql.NullString {
	if names == nil {
		return sql.NullString{}
	}
	b, _ := json.Marshal(names) // a []string always marshals
	return sql.NullString{String: string(b), Valid: true}
}

func parseNames(v sql.NullString) ([]string, error) {
	if !v.Valid {
		return nil, nil
	}
	out := []string{}
	if err := json.Unmarshal([]byte(v.String), &out); err != nil {
		return nil, err
	}
	return out, nil
}

// MCPCall is the audit record of one tool call: never its arguments or its
// result.
type MCPCall struct {
	ID     string
	UserID string
	// KeyID is the API key that authenticated the call; "" for a token.
	KeyID string
	// Via says which part of agentapi made the call ("gateway", "agent").
	Via      string
	Server   string
	Tool     string
	At       time.Time
	Duration time.Duration
	// Outcome is a short word: "ok", "tool_error", "timeout", ...
	Outcome string
	// Bytes is the size of the result the server sent.
	Bytes int64
}

// MCPCallFilter selects audit records; zero fields select everything.
type MCPCallFilter struct {
	UserID  string
	Server  string
	Tool    string
	Outcome string
	// Since keeps calls made at or after it.
	Since time.Time
	// Limit is the page size (DefaultListLimit when 0 or less), Offset
	// how many of the newest matching calls to skip.
	Limit  int
	Offset int
}

// RecordMCPCall stores one audit record; an empty ID is generated.
func (s *Store) RecordMCPCall(ctx context.Context, c MCPCall) error {
	return s.RecordMCPCalls(ctx, []MCPCall{c})
}

// RecordMCPCalls stores audit records in one transaction, so a busy
// gateway costs the single SQLite writer one commit per batch rather than
// one per call. Empty IDs are generated.
func (s *Store) RecordMCPCalls(ctx context.Context, calls []MCPCall) (err error) {
	if len(calls) == 0 {
		return nil
	}
	ctx, done := s.op(ctx)
	defer done(&err)
	tx, err := s.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("store: record mcp calls: %w", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, s.q(`
		INSERT INTO mcp_calls (id, user_id, key_id, via, server_label, tool, started_at, duration_ms, outcome, bytes)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`))
	if err != nil {
		return fmt.Errorf("store: record mcp calls: %w", err)
	}
	defer stmt.Close()
	for _, c := range calls {
		if c.ID == "" {
			if c.ID, err = newID(); err != nil {
				return fmt.Errorf("store: record mcp calls: %w", err)
			}
		}
		if c.At.IsZero() {
			c.At = now()
		}
		if _, err := stmt.ExecContext(ctx, c.ID, c.UserID, c.KeyID, c.Via, c.Server, c.Tool, toMillis(c.At), c.Duration.Milliseconds(), c.Outcome, c.Bytes); err != nil {
			return fmt.Errorf("store: record mcp calls: %w", classify(err))
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("store: record mcp calls: %w", err)
	}
	return nil
}

// MCPCalls returns the audit records f selects, newest first.
func (s *Store) MCPCalls(ctx context.Context, f MCPCallFilter) (_ []MCPCall, err error) {
	ctx, done := s.op(ctx)
	defer done(&err)
	var (
		where []string
		args  []any
	)
	add := func(cond string, v any) {
		where = append(where, cond)
		args = append(args, v)
	}
	if f.UserID != "" {
		add("user_id = ?", f.UserID)
	}
	if f.Server != "" {
		add("server_label = ?", f.Server)
	}
	if f.Tool != "" {
		add("tool = ?", f.Tool)
	}
	if f.Outcome != "" {
		add("outcome = ?", f.Outcome)
	}
	if !f.Since.IsZero() {
		add("started_at >= ?", toMillis(f.Since))
	}
	if f.Limit <= 0 {
		f.Limit = DefaultListLimit
	}
	query := `SELECT id, user_id, key_id, via, server_label, tool, started_at, duration_ms, outcome, bytes FROM mcp_calls`
	if len(where) > 0 {
		query += ` WHERE ` + strings.Join(where, " AND ")
	}
	query += ` ORDER BY started_at DESC, id DESC LIMIT ? OFFSET ?`
	args = append(args, f.Limit, max(f.Offset, 0))
	rows, err := s.read.QueryContext(ctx, s.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("store: mcp calls: %w", err)
	}
	defer rows.Close()
	out := []MCPCall{}
	for rows.Next() {
		var (
			c       MCPCall
			at, dur int64
		)
		if err := rows.Scan(&c.ID, &c.UserID, &c.KeyID, &c.Via, &c.Server, &c.Tool, &at, &dur, &c.Outcome, &c.Bytes); err != nil {
			return nil, fmt.Errorf("store: mcp calls: %w", err)
		}
		c.At, c.Duration = fromMillis(at), time.Duration(dur)*time.Millisecond
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: mcp calls: %w", err)
	}
	return out, nil
}

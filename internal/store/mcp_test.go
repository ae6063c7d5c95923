package store

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// runMCPSuite is the MCP registry's and audit's behaviour on both engines.
func runMCPSuite(t *testing.T, open func(t *testing.T) *Store) {
	t.Run("MCPServers", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		docs := MCPServer{Label: "docs", URL: "http://docs.internal/mcp", Description: "Docs", Headers: "sealed",
			AllowedTools: []string{"search"}, RequireApproval: "never", Tiers: []string{"pro"}}
		if _, err := s.CreateMCPServer(ctx, docs); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateMCPServer(ctx, MCPServer{Label: "docs", URL: "http://x"}); !errors.Is(err, ErrConflict) {
			t.Errorf("second docs err = %v, want ErrConflict", err)
		}
		// nil lists (every tool, every tier) and empty ones (none) stay apart.
		if _, err := s.CreateMCPServer(ctx, MCPServer{Label: "all", URL: "http://all", RequireApproval: "always", AllowedTools: []string{}}); err != nil {
			t.Fatal(err)
		}
		got, err := s.MCPServer(ctx, "docs")
		if err != nil {
			t.Fatal(err)
		}
		ignoreTimes := cmp.FilterPath(func(p cmp.Path) bool {
			n := p.Last().String()
			return n == ".CreatedAt" || n == ".UpdatedAt"
		}, cmp.Ignore())
		if d := cmp.Diff(docs, got, ignoreTimes); d != "" {
			t.Errorf("MCPServer(docs) (-want +got):\n%s", d)
		}
		list, err := s.ListMCPServers(ctx)
		if err != nil || len(list) != 2 || list[0].Label != "all" {
			t.Fatalf("ListMCPServers = %+v, %v; want all, docs", list, err)
		}
		if list[0].Tiers != nil || list[0].AllowedTools == nil || len(list[0].AllowedTools) != 0 {
			t.Errorf("all: tiers %#v (want nil), allowed %#v (want empty, not nil)", list[0].Tiers, list[0].AllowedTools)
		}

		docs.URL, docs.Tiers, docs.Headers = "https://docs.example/mcp", nil, ""
		up, err := s.UpdateMCPServer(ctx, docs)
		if err != nil || up.URL != docs.URL || up.Tiers != nil || up.Headers != "" || up.CreatedAt.IsZero() {
			t.Errorf("UpdateMCPServer = %+v, %v", up, err)
		}
		if _, err := s.UpdateMCPServer(ctx, MCPServer{Label: "nope", URL: "http://x"}); !errors.Is(err, ErrNotFound) {
			t.Errorf("update of unknown err = %v, want ErrNotFound", err)
		}
		if err := s.DeleteMCPServer(ctx, "docs"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteMCPServer(ctx, "docs"); !errors.Is(err, ErrNotFound) {
			t.Errorf("second delete err = %v, want ErrNotFound", err)
		}
		if _, err := s.MCPServer(ctx, "docs"); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleted server err = %v, want ErrNotFound", err)
		}
	})

	t.Run("MCPCalls", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		base := time.Now().UTC().Truncate(time.Millisecond).Add(-time.Hour)
		calls := []MCPCall{
			{UserID: "u1", KeyID: "k1", Via: "gateway", Server: "docs", Tool: "search", At: base, Duration: 15 * time.Millisecond, Outcome: "ok", Bytes: 120},
			{UserID: "u1", Via: "agent", Server: "docs", Tool: "fetch", At: base.Add(time.Minute), Duration: time.Second, Outcome: "timeout"},
			{UserID: "u2", Via: "gateway", Server: "math", Tool: "add", At: base.Add(2 * time.Minute), Outcome: "ok", Bytes: 3},
		}
		if err := s.RecordMCPCall(ctx, calls[0]); err != nil {
			t.Fatal(err)
		}
		if err := s.RecordMCPCalls(ctx, calls[1:]); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			f    MCPCallFilter
			want []string // tools, newest first
		}{
			{"all", MCPCallFilter{}, []string{"add", "fetch", "search"}},
			{"user", MCPCallFilter{UserID: "u1"}, []string{"fetch", "search"}},
			{"server", MCPCallFilter{Server: "math"}, []string{"add"}},
			{"tool", MCPCallFilter{Tool: "search"}, []string{"search"}},
			{"outcome", MCPCallFilter{Outcome: "timeout"}, []string{"fetch"}},
			{"since", MCPCallFilter{Since: base.Add(time.Minute)}, []string{"add", "fetch"}},
			{"page", MCPCallFilter{Limit: 1, Offset: 1}, []string{"fetch"}},
			{"none", MCPCallFilter{UserID: "u3"}, []string{}},
		}
		for _, tc := range tests {
			got, err := s.MCPCalls(ctx, tc.f)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			tools := []string{}
			for _, c := range got {
				tools = append(tools, c.Tool)
			}
			if d := cmp.Diff(tc.want, tools); d != "" {
				t.Errorf("%s (-want +got):\n%s", tc.name, d)
			}
		}
		got, err := s.MCPCalls(ctx, MCPCallFilter{Tool: "search"})
		if err != nil || len(got) != 1 {
			t.Fatal(got, err)
		}
		c := got[0]
		if c.ID == "" || c.KeyID != "k1" || c.Via != "gateway" || !c.At.Equal(base) || c.Duration != 15*time.Millisecond || c.Bytes != 120 {
			t.Errorf("stored call = %+v", c)
		}
	})
}

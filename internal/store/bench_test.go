package store

import (
	"context"
	"github.com/google/uuid"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/agentapi/agentapi/internal/pgtest"
)

// BenchmarkAPIKeyByHash is the database lookup behind an API-key request,
// on each backend (PostgreSQL only when TEST_DATABASE_URL is set).
func BenchmarkAPIKeyByHash(b *testing.B) {
	onEachBackend(b, func(b *testing.B, s *Store, u User) {
		ctx := context.Background()
		const hash = "5f1d7a3b2c4e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708"
		if _, err := s.CreateAPIKey(ctx, APIKey{UserID: u.ID, Name: "bench", Hash: hash, Prefix: "sk-bench"}); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			k, err := s.APIKeyByHash(ctx, hash)
			if err != nil || k.UserID != u.ID {
				b.Fatalf("APIKeyByHash = %+v, %v", k, err)
			}
		}
	})
}

// BenchmarkRecordUsage is the usage recorder's write: one batch of records
// with ids in one transaction, as it is sent every flush. The figure per
// op is the cost of one record.
func BenchmarkRecordUsage(b *testing.B) {
	onEachBackend(b, func(b *testing.B, s *Store, u User) {
		ctx := context.Background()
		const batch = 250
		recs := make([]UsageRecord, 0, batch)
		n := 0
		b.ReportAllocs()
		for b.Loop() {
			n++
			recs = append(recs, UsageRecord{ID: uuid.Must(uuid.NewV7()).String(), UserID: u.ID, Model: "gpt-4o-mini",
				PromptTokens: 42, CompletionTokens: 58, RequestID: "req-" + strconv.Itoa(n)})
			if len(recs) == batch {
				if err := s.RecordUsage(ctx, recs); err != nil {
					b.Fatal(err)
				}
				recs = recs[:0]
			}
		}
	})
}

// onEachBackend runs bench as a sub-benchmark on SQLite and on PostgreSQL
// (when TEST_DATABASE_URL is set), each with a fresh store holding one user.
func onEachBackend(b *testing.B, bench func(b *testing.B, s *Store, u User)) {
	for _, bk := range []struct {
		name string
		url  func(b *testing.B) string
	}{
		{"sqlite", func(b *testing.B) string { return filepath.Join(b.TempDir(), "bench.db") }},
		{"postgres", func(b *testing.B) string { return pgtest.URL(b) }},
	} {
		b.Run(bk.name, func(b *testing.B) {
			ctx := context.Background()
			s, err := Open(ctx, bk.url(b))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			u, err := s.CreateUser(ctx, User{Email: "bench@example.com"})
			if err != nil {
				b.Fatal(err)
			}
			bench(b, s, u)
		})
	}
}

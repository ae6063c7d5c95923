package store

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/agentapi/agentapi/internal/pgtest"
)

// TestSQLite runs the shared suite against a fresh SQLite file per subtest.
func TestSQLite(t *testing.T) {
	t.Parallel()
	runStoreSuite(t, func(t *testing.T) *Store {
		return openTestStore(t, filepath.Join(t.TempDir(), "test.db"))
	})
}

// TestPostgres runs the shared suite against a fresh schema per subtest. It
// skips when TEST_DATABASE_URL is unset.
func TestPostgres(t *testing.T) {
	t.Parallel()
	runStoreSuite(t, func(t *testing.T) *Store {
		return openTestStore(t, pgtest.URL(t))
	})
}

func openTestStore(t *testing.T, databaseURL string) *Store {
	t.Helper()
	s, err := Open(t.Context(), databaseURL)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// runStoreSuite is the behaviour both backends must share. open must return
// a store over an empty, migrated database of its own.
func runStoreSuite(t *testing.T, open func(t *testing.T) *Store) {
	runRefreshSuite(t, open)
	runResponsesSuite(t, open)
	runConversationsSuite(t, open)
	runMCPSuite(t, open)

	t.Run("Ping", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		if err := s.Ping(t.Context()); err != nil {
			t.Fatal(err)
		}
		if d := s.Dialect(); d != DialectSQLite && d != DialectPostgres {
			t.Errorf("Dialect() = %q", d)
		}
	})

	t.Run("CreateAndGetUser", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		before := time.Now().Add(-time.Second)
		u, err := s.CreateUser(ctx, User{Email: "  Alice@Example.COM ", PasswordHash: "h1"})
		if err != nil {
			t.Fatal(err)
		}
		if u.ID == "" {
			t.Error("CreateUser left ID empty")
		}
		if u.Email != "alice@example.com" || u.Tier != DefaultTier || u.Role != DefaultRole || u.Disabled || u.PasswordHash != "h1" {
			t.Errorf("CreateUser = %+v, want lower-cased email and default tier and role", u)
		}
		if u.CreatedAt.Before(before) || u.CreatedAt.Location() != time.UTC {
			t.Errorf("CreatedAt = %v, want a recent UTC time", u.CreatedAt)
		}

		byEmail, err := s.UserByEmail(ctx, "ALICE@example.com")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(u, byEmail); diff != "" {
			t.Errorf("UserByEmail differs from CreateUser (-created +read):\n%s", diff)
		}
		byID, err := s.UserByID(ctx, u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(u, byID); diff != "" {
			t.Errorf("UserByID differs from CreateUser (-created +read):\n%s", diff)
		}

		// Caller-chosen fields are kept.
		at := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
		custom, err := s.CreateUser(ctx, User{ID: "u-custom", Email: "b@example.com", Tier: "pro", Role: "admin", Disabled: true, CreatedAt: at})
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.UserByID(ctx, "u-custom")
		if err != nil {
			t.Fatal(err)
		}
		want := User{ID: "u-custom", Email: "b@example.com", Tier: "pro", Role: "admin", Disabled: true, CreatedAt: at.Truncate(time.Millisecond)}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("stored user (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(custom, got); diff != "" {
			t.Errorf("CreateUser result differs from stored user (-returned +stored):\n%s", diff)
		}

		if _, err := s.CreateUser(ctx, User{Email: "   "}); err == nil {
			t.Error("CreateUser with a blank email succeeded")
		}
	})

	t.Run("DuplicateEmailConflicts", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		if _, err := s.CreateUser(ctx, User{Email: "dup@example.com"}); err != nil {
			t.Fatal(err)
		}
		_, err := s.CreateUser(ctx, User{Email: "DUP@Example.com"})
		if !errors.Is(err, ErrConflict) {
			t.Fatalf("second CreateUser error = %v, want ErrConflict", err)
		}
		if errors.Is(err, ErrNotFound) {
			t.Errorf("conflict error also matches ErrNotFound: %v", err)
		}
		users, err := s.ListUsers(ctx, 0, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(users) != 1 {
			t.Errorf("%d users stored after a conflicting insert, want 1", len(users))
		}
		// The same id twice is a conflict too.
		if _, err := s.CreateUser(ctx, User{ID: "same", Email: "x@example.com"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateUser(ctx, User{ID: "same", Email: "y@example.com"}); !errors.Is(err, ErrConflict) {
			t.Errorf("CreateUser with a taken id: error = %v, want ErrConflict", err)
		}
	})

	t.Run("UserNotFound", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		checks := map[string]error{}
		_, checks["UserByEmail"] = s.UserByEmail(ctx, "nobody@example.com")
		_, checks["UserByID"] = s.UserByID(ctx, "nobody")
		_, checks["SetTier"] = s.SetTier(ctx, "nobody@example.com", "pro")
		checks["SetPassword"] = s.SetPassword(ctx, "nobody@example.com", "h")
		_, checks["SetDisabled"] = s.SetDisabled(ctx, "nobody", true)
		_, checks["SetRole"] = s.SetRole(ctx, "nobody", "admin")
		for name, err := range checks {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("%s: error = %v, want ErrNotFound", name, err)
			}
		}
	})

	t.Run("UpdateUser", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		u, err := s.CreateUser(ctx, User{Email: "carol@example.com", PasswordHash: "old"})
		if err != nil {
			t.Fatal(err)
		}

		got, err := s.SetTier(ctx, "Carol@Example.com", "pro")
		if err != nil {
			t.Fatal(err)
		}
		u.Tier = "pro"
		if diff := cmp.Diff(u, got); diff != "" {
			t.Errorf("SetTier result (-want +got):\n%s", diff)
		}

		if err := s.SetPassword(ctx, "CAROL@example.com", "new"); err != nil {
			t.Fatal(err)
		}
		u.PasswordHash = "new"

		got, err = s.SetDisabled(ctx, u.ID, true)
		if err != nil {
			t.Fatal(err)
		}
		u.Disabled = true
		if diff := cmp.Diff(u, got); diff != "" {
			t.Errorf("SetDisabled(true) result (-want +got):\n%s", diff)
		}

		got, err = s.SetRole(ctx, u.ID, "admin")
		if err != nil {
			t.Fatal(err)
		}
		u.Role = "admin"
		if diff := cmp.Diff(u, got); diff != "" {
			t.Errorf("SetRole result (-want +got):\n%s", diff)
		}

		stored, err := s.UserByEmail(ctx, u.Email)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(u, stored); diff != "" {
			t.Errorf("stored user after updates (-want +got):\n%s", diff)
		}

		got, err = s.SetDisabled(ctx, u.ID, false)
		if err != nil {
			t.Fatal(err)
		}
		if got.Disabled {
			t.Error("SetDisabled(false) left the user disabled")
		}
	})

	t.Run("ListUsers", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		emails := []string{"a_b@corp.io", "axb@corp.io", "dan@home.net", "erin@CORP.io", "100%@home.net"}
		for i, e := range emails {
			// Distinct creation times make the expected order explicit.
			if _, err := s.CreateUser(ctx, User{Email: e, CreatedAt: base.Add(time.Duration(i) * time.Minute)}); err != nil {
				t.Fatal(err)
			}
		}
		tests := []struct {
			name          string
			limit, offset int
			contains      string
			want          []string
		}{
			{"all", 0, 0, "", []string{"a_b@corp.io", "axb@corp.io", "dan@home.net", "erin@corp.io", "100%@home.net"}},
			{"page1", 2, 0, "", []string{"a_b@corp.io", "axb@corp.io"}},
			{"page2", 2, 2, "", []string{"dan@home.net", "erin@corp.io"}},
			{"past end", 2, 10, "", nil},
			{"filter case-insensitive", 0, 0, "CORP", []string{"a_b@corp.io", "axb@corp.io", "erin@corp.io"}},
			{"filter with paging", 1, 1, "corp", []string{"axb@corp.io"}},
			{"underscore is literal", 0, 0, "a_b", []string{"a_b@corp.io"}},
			{"percent is literal", 0, 0, "%", []string{"100%@home.net"}},
			{"no match", 0, 0, "zzz", nil},
		}
		for _, tt := range tests {
			users, err := s.ListUsers(ctx, tt.limit, tt.offset, tt.contains)
			if err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			var got []string
			for _, u := range users {
				got = append(got, u.Email)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("%s: ListUsers(%d, %d, %q) (-want +got):\n%s", tt.name, tt.limit, tt.offset, tt.contains, diff)
			}
		}
	})

	t.Run("APIKeys", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		alice := mustCreateUser(t, s, "alice@example.com")
		bob := mustCreateUser(t, s, "bob@example.com")

		base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
		var created []APIKey
		for i := range 3 {
			k, err := s.CreateAPIKey(ctx, APIKey{
				UserID:    alice.ID,
				Name:      fmt.Sprintf("key %d", i),
				Hash:      fmt.Sprintf("hash-%d", i),
				Prefix:    fmt.Sprintf("sk-%d", i),
				CreatedAt: base.Add(time.Duration(i) * time.Hour),
			})
			if err != nil {
				t.Fatal(err)
			}
			if k.ID == "" || k.RevokedAt != nil || k.LastUsedAt != nil {
				t.Errorf("CreateAPIKey = %+v, want an id and no use or revocation", k)
			}
			created = append(created, k)
		}
		bobKey, err := s.CreateAPIKey(ctx, APIKey{UserID: bob.ID, Name: "bob", Hash: "hash-bob", Prefix: "sk-b"})
		if err != nil {
			t.Fatal(err)
		}

		got, err := s.APIKeyByHash(ctx, "hash-1")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(created[1], got); diff != "" {
			t.Errorf("APIKeyByHash (-want +got):\n%s", diff)
		}
		if _, err := s.APIKeyByHash(ctx, "no-such-hash"); !errors.Is(err, ErrNotFound) {
			t.Errorf("APIKeyByHash(unknown): error = %v, want ErrNotFound", err)
		}
		if _, err := s.CreateAPIKey(ctx, APIKey{UserID: bob.ID, Hash: "hash-0"}); !errors.Is(err, ErrConflict) {
			t.Errorf("CreateAPIKey with a taken hash: error = %v, want ErrConflict", err)
		}
		if _, err := s.CreateAPIKey(ctx, APIKey{UserID: "no-such-user", Hash: "hash-x"}); !errors.Is(err, ErrNotFound) {
			t.Errorf("CreateAPIKey for a missing user: error = %v, want ErrNotFound", err)
		}

		list, err := s.ListAPIKeys(ctx, alice.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := []APIKey{created[2], created[1], created[0]}
		if diff := cmp.Diff(want, list); diff != "" {
			t.Errorf("ListAPIKeys, want newest first (-want +got):\n%s", diff)
		}
		if list, err := s.ListAPIKeys(ctx, "no-such-user"); err != nil || len(list) != 0 {
			t.Errorf("ListAPIKeys(unknown user) = %v, %v; want empty", list, err)
		}

		// Bob cannot revoke (or learn about) Alice's key.
		if _, err := s.RevokeAPIKey(ctx, bob.ID, created[0].ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("RevokeAPIKey by another user: error = %v, want ErrNotFound", err)
		}
		if _, err := s.RevokeAPIKey(ctx, alice.ID, "no-such-key"); !errors.Is(err, ErrNotFound) {
			t.Errorf("RevokeAPIKey of a missing key: error = %v, want ErrNotFound", err)
		}
		if k, err := s.APIKeyByHash(ctx, "hash-0"); err != nil || k.RevokedAt != nil {
			t.Fatalf("key revoked by a failed RevokeAPIKey: %+v, %v", k, err)
		}

		beforeRevoke := time.Now().Add(-time.Second)
		revoked, err := s.RevokeAPIKey(ctx, alice.ID, created[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if revoked.RevokedAt == nil || revoked.RevokedAt.Before(beforeRevoke) {
			t.Fatalf("RevokeAPIKey: RevokedAt = %v, want about now", revoked.RevokedAt)
		}
		wantRevoked := created[0]
		wantRevoked.RevokedAt = revoked.RevokedAt
		if diff := cmp.Diff(wantRevoked, revoked); diff != "" {
			t.Errorf("RevokeAPIKey result (-want +got):\n%s", diff)
		}
		// A revoked key is still found by hash, marked revoked.
		got, err = s.APIKeyByHash(ctx, "hash-0")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(revoked, got); diff != "" {
			t.Errorf("APIKeyByHash after revoke (-want +got):\n%s", diff)
		}
		// Revoking again keeps the first revocation time.
		again, err := s.RevokeAPIKey(ctx, alice.ID, created[0].ID)
		if err != nil {
			t.Fatal(err)
		}
		if !again.RevokedAt.Equal(*revoked.RevokedAt) {
			t.Errorf("second revoke moved RevokedAt from %v to %v", revoked.RevokedAt, again.RevokedAt)
		}

		since, err := s.RevokedAPIKeysSince(ctx, beforeRevoke)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]APIKey{revoked}, since); diff != "" {
			t.Errorf("RevokedAPIKeysSince(before) (-want +got):\n%s", diff)
		}
		since, err = s.RevokedAPIKeysSince(ctx, *revoked.RevokedAt)
		if err != nil {
			t.Fatal(err)
		}
		if len(since) != 1 {
			t.Errorf("RevokedAPIKeysSince(revocation time) returned %d keys, want 1 (the bound is inclusive)", len(since))
		}
		since, err = s.RevokedAPIKeysSince(ctx, revoked.RevokedAt.Add(time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		if len(since) != 0 {
			t.Errorf("RevokedAPIKeysSince(after) = %+v, want none", since)
		}

		// TouchAPIKey only moves LastUsedAt forward.
		t1 := time.Date(2025, 4, 1, 0, 0, 0, 0, time.UTC)
		if err := s.TouchAPIKey(ctx, bobKey.ID, t1); err != nil {
			t.Fatal(err)
		}
		if err := s.TouchAPIKey(ctx, bobKey.ID, t1.Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
		got, err = s.APIKeyByHash(ctx, "hash-bob")
		if err != nil {
			t.Fatal(err)
		}
		if got.LastUsedAt == nil || !got.LastUsedAt.Equal(t1) {
			t.Errorf("LastUsedAt = %v, want %v", got.LastUsedAt, t1)
		}
		if err := s.TouchAPIKey(ctx, "no-such-key", t1); !errors.Is(err, ErrNotFound) {
			t.Errorf("TouchAPIKey(unknown): error = %v, want ErrNotFound", err)
		}
	})

	t.Run("Usage", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		alice := mustCreateUser(t, s, "alice@example.com")
		bob := mustCreateUser(t, s, "bob@example.com")

		day1 := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
		day2 := day1.AddDate(0, 0, 1)
		recs := []UsageRecord{
			{UserID: alice.ID, KeyID: "k1", Model: "gpt-b", PromptTokens: 10, CompletionTokens: 5, At: day1.Add(time.Hour), RequestID: "r1"},
			{UserID: alice.ID, Model: "gpt-a", PromptTokens: 1, CompletionTokens: 2, At: day1.Add(2 * time.Hour), RequestID: "r2"},
			{UserID: alice.ID, Model: "gpt-b", PromptTokens: 20, CompletionTokens: 7, At: day1.Add(24*time.Hour - time.Millisecond), RequestID: "r3"},
			{UserID: alice.ID, Model: "gpt-b", PromptTokens: 100, CompletionTokens: 50, At: day2, RequestID: "r4"},
			{UserID: alice.ID, Model: "gpt-a", PromptTokens: 3, CompletionTokens: 4, At: day2.Add(23 * time.Hour), RequestID: "r5"},
			// Outside [day1, day2+1d): before and at the exclusive end.
			{UserID: alice.ID, Model: "gpt-a", PromptTokens: 1000, At: day1.Add(-time.Millisecond)},
			{UserID: alice.ID, Model: "gpt-a", PromptTokens: 2000, At: day2.AddDate(0, 0, 1)},
			// Someone else's usage.
			{UserID: bob.ID, Model: "gpt-a", PromptTokens: 5000, At: day1.Add(time.Hour)},
		}
		if err := s.RecordUsage(ctx, recs); err != nil {
			t.Fatal(err)
		}
		if err := s.RecordUsage(ctx, nil); err != nil {
			t.Errorf("RecordUsage(nil) = %v", err)
		}

		days, err := s.UsageByDay(ctx, alice.ID, day1, day2.AddDate(0, 0, 1))
		if err != nil {
			t.Fatal(err)
		}
		want := []UsageDay{
			{Day: "2025-06-01", Model: "gpt-a", PromptTokens: 1, CompletionTokens: 2, TotalTokens: 3, Requests: 1},
			{Day: "2025-06-01", Model: "gpt-b", PromptTokens: 30, CompletionTokens: 12, TotalTokens: 42, Requests: 2},
			{Day: "2025-06-02", Model: "gpt-a", PromptTokens: 3, CompletionTokens: 4, TotalTokens: 7, Requests: 1},
			{Day: "2025-06-02", Model: "gpt-b", PromptTokens: 100, CompletionTokens: 50, TotalTokens: 150, Requests: 1},
		}
		if diff := cmp.Diff(want, days); diff != "" {
			t.Errorf("UsageByDay (-want +got):\n%s", diff)
		}
		if days, err := s.UsageByDay(ctx, alice.ID, day2.AddDate(0, 0, 5), day2.AddDate(0, 0, 6)); err != nil || len(days) != 0 {
			t.Errorf("UsageByDay over an empty range = %v, %v; want none", days, err)
		}

		tests := []struct {
			user  string
			since time.Time
			want  int64
		}{
			{alice.ID, time.Time{}.Add(time.Hour), 3 + 42 + 7 + 150 + 1000 + 2000},
			{alice.ID, day2, 7 + 150 + 2000},
			{alice.ID, day2.AddDate(1, 0, 0), 0},
			{bob.ID, day1, 5000},
			{"no-such-user", day1, 0},
		}
		for _, tt := range tests {
			got, err := s.TokensUsed(ctx, tt.user, tt.since)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("TokensUsed(%q, %v) = %d, want %d", tt.user, tt.since, got, tt.want)
			}
		}

		// A batch naming a missing user is refused as a whole.
		before, err := s.TokensUsed(ctx, alice.ID, day1)
		if err != nil {
			t.Fatal(err)
		}
		err = s.RecordUsage(ctx, []UsageRecord{
			{UserID: alice.ID, Model: "gpt-a", PromptTokens: 9, At: day1},
			{UserID: "no-such-user", Model: "gpt-a", PromptTokens: 9, At: day1},
		})
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("RecordUsage with a missing user: error = %v, want ErrNotFound", err)
		}
		after, err := s.TokensUsed(ctx, alice.ID, day1)
		if err != nil {
			t.Fatal(err)
		}
		if after != before {
			t.Errorf("a failed batch still recorded %d tokens", after-before)
		}

		// A zero At means "now".
		start := time.Now().Add(-time.Second)
		if err := s.RecordUsage(ctx, []UsageRecord{{UserID: bob.ID, Model: "m", PromptTokens: 1}}); err != nil {
			t.Fatal(err)
		}
		if n, err := s.TokensUsed(ctx, bob.ID, start); err != nil || n != 1 {
			t.Errorf("TokensUsed after a record with zero At = %d, %v; want 1", n, err)
		}
	})

	// A batch written again after an error whose outcome was unknown (the
	// connection broke after COMMIT went out, and the server had stored it)
	// must not count its records twice: records with an ID are stored once.
	t.Run("UsageRecordedOncePerID", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		u := mustCreateUser(t, s, "once@example.com")
		at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
		batch := []UsageRecord{
			{ID: "a", UserID: u.ID, Model: "m", PromptTokens: 1, At: at},
			{ID: "b", UserID: u.ID, Model: "m", PromptTokens: 10, At: at},
			{UserID: u.ID, Model: "m", PromptTokens: 100, At: at}, // no ID: stored every time
		}
		retry := append(batch[:2:2], UsageRecord{ID: "c", UserID: u.ID, Model: "m", PromptTokens: 1000, At: at})
		for _, b := range [][]UsageRecord{batch, batch, retry} {
			if err := s.RecordUsage(ctx, b); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := s.TokensUsed(ctx, u.ID, at.Add(-time.Hour)); err != nil || n != 1+10+100+100+1000 {
			t.Errorf("TokensUsed = %d, %v; want %d (a, b and c once, the record without an ID twice)", n, err, 1+10+100+100+1000)
		}
		days, err := s.UsageByDay(ctx, u.ID, at.Add(-time.Hour), at.Add(time.Hour))
		if err != nil || len(days) != 1 || days[0].Requests != 5 {
			t.Errorf("UsageByDay = %+v, %v; want 5 requests", days, err)
		}
	})

	// Batches longer than one INSERT's rows: every chunk is stored, ids
	// already stored are skipped in any chunk, and a missing user in a later
	// chunk undoes the earlier chunks too.
	t.Run("UsageBatchesOfManyChunks", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		u := mustCreateUser(t, s, "chunks@example.com")
		at := time.Date(2025, 7, 1, 12, 0, 0, 0, time.UTC)
		n := 2*usageRowsPerInsert + 37
		batch := make([]UsageRecord, n)
		for i := range batch {
			batch[i] = UsageRecord{ID: fmt.Sprintf("r%04d", i), UserID: u.ID, Model: "m", PromptTokens: 1, CompletionTokens: int64(i), At: at}
		}
		if err := s.RecordUsage(ctx, batch[:usageRowsPerInsert+10]); err != nil {
			t.Fatal(err)
		}
		// The whole batch again: the first 110 are already stored.
		if err := s.RecordUsage(ctx, batch); err != nil {
			t.Fatal(err)
		}
		want := int64(n) + int64(n*(n-1)/2)
		if got, err := s.TokensUsed(ctx, u.ID, at.Add(-time.Hour)); err != nil || got != want {
			t.Errorf("TokensUsed = %d, %v; want %d (each of %d records once)", got, err, want, n)
		}

		bad := make([]UsageRecord, usageRowsPerInsert+5)
		for i := range bad {
			bad[i] = UsageRecord{ID: fmt.Sprintf("x%04d", i), UserID: u.ID, Model: "m", PromptTokens: 1000, At: at}
		}
		bad[len(bad)-1].UserID = "no-such-user"
		if err := s.RecordUsage(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("a missing user in the last chunk: error = %v, want ErrNotFound", err)
		}
		if got, err := s.TokensUsed(ctx, u.ID, at.Add(-time.Hour)); err != nil || got != want {
			t.Errorf("TokensUsed after a refused batch = %d, %v; want %d (nothing of it kept)", got, err, want)
		}
	})

	t.Run("ConcurrentCreateUser", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		const n = 20

		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, errs[i] = s.CreateUser(ctx, User{Email: fmt.Sprintf("user%d@example.com", i)})
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("CreateUser %d: %v", i, err)
			}
		}
		users, err := s.ListUsers(ctx, 100, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(users) != n {
			t.Errorf("%d users stored, want %d", len(users), n)
		}

		// The same email from everyone: exactly one wins, the rest
		// conflict cleanly.
		for i := range n {
			wg.Go(func() {
				_, errs[i] = s.CreateUser(ctx, User{Email: "Same@Example.com"})
			})
		}
		wg.Wait()
		var ok, conflict int
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrConflict):
				conflict++
			default:
				t.Errorf("CreateUser of a shared email: unexpected error %v", err)
			}
		}
		if ok != 1 || conflict != n-1 {
			t.Errorf("shared email: %d created, %d conflicts; want 1 and %d", ok, conflict, n-1)
		}
	})
}

func mustCreateUser(t *testing.T, s *Store, email string) User {
	t.Helper()
	u, err := s.CreateUser(t.Context(), User{Email: email})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// testReopen checks that migrations are idempotent: a second Open of a
// database that is already up to date succeeds and keeps the data.
func testReopen(t *testing.T, databaseURL string) {
	ctx := t.Context()
	s1, err := Open(ctx, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	u := mustCreateUser(t, s1, "keep@example.com")
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openTestStore(t, databaseURL)
	got, err := s2.UserByID(ctx, u.ID)
	if err != nil {
		t.Fatalf("user lost across reopen: %v", err)
	}
	if diff := cmp.Diff(u, got); diff != "" {
		t.Errorf("user after reopen (-want +got):\n%s", diff)
	}
	assertMigratedOnce(t, s2)
}

// assertMigratedOnce checks goose's bookkeeping: each migration applied once.
func assertMigratedOnce(t *testing.T, s *Store) {
	t.Helper()
	rows, err := s.read.QueryContext(t.Context(),
		`SELECT version_id, COUNT(*) FROM goose_db_version WHERE version_id > 0 GROUP BY version_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var versions int
	for rows.Next() {
		var v, n int64
		if err := rows.Scan(&v, &n); err != nil {
			t.Fatal(err)
		}
		versions++
		if n != 1 {
			t.Errorf("migration %d recorded %d times, want once", v, n)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if versions == 0 {
		t.Error("no migrations recorded")
	}
}

func TestSQLiteReopen(t *testing.T) {
	t.Parallel()
	testReopen(t, "sqlite://"+filepath.Join(t.TempDir(), "reopen.db"))
}

func TestPostgresReopen(t *testing.T) {
	t.Parallel()
	testReopen(t, pgtest.URL(t))
}

// TestPostgresConcurrentOpen starts three "replicas" at once against one
// schema, as a deployment does, and expects all of them to come up.
func TestPostgresConcurrentOpen(t *testing.T) {
	t.Parallel()
	t.Run("EmptySchema", func(t *testing.T) {
		t.Parallel()
		testConcurrentOpen(t, pgtest.URL(t))
	})
	// With goose's version table already there and every migration
	// pending, the replicas race straight for CREATE TABLE; without the
	// migration lock all but one fail. (From an empty schema goose itself
	// happens to stagger them: the losers of the race to create its version
	// table sleep a second, which would hide a missing lock.)
	t.Run("PendingMigrations", func(t *testing.T) {
		t.Parallel()
		url := pgtest.URL(t)
		pendingMigrations(t, url)
		testConcurrentOpen(t, url)
	})
}

// pendingMigrations leaves the database at url with goose's version table
// and every migration pending: migrated, then rolled back to version 0.
func pendingMigrations(t *testing.T, url string) {
	t.Helper()
	s, err := Open(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.migrationProvider()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.DownTo(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func testConcurrentOpen(t *testing.T, url string) {
	const n = 3
	stores := make([]*Store, n)
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			stores[i], errs[i] = Open(t.Context(), url)
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
			continue
		}
		t.Cleanup(func() { stores[i].Close() })
	}
	if t.Failed() {
		t.FailNow()
	}
	assertMigratedOnce(t, stores[0])
	// Every replica sees the one schema.
	u := mustCreateUser(t, stores[0], "shared@example.com")
	for i, s := range stores {
		if _, err := s.UserByID(t.Context(), u.ID); err != nil {
			t.Errorf("store %d: %v", i, err)
		}
	}
}

// TestSQLiteTwoStoresOneFile has two stores (as a server and a CLI process
// would) writing to one file at once. Each store serialises its own writers,
// so what is tested here is that busy_timeout makes them wait for each other
// rather than fail with "database is locked".
func TestSQLiteTwoStoresOneFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "shared.db")
	a := openTestStore(t, path)
	b := openTestStore(t, path)
	const perStore = 10
	errs := make(chan error, 2*perStore)
	var wg sync.WaitGroup
	for i := range perStore {
		for name, s := range map[string]*Store{"a": a, "b": b} {
			wg.Go(func() {
				_, err := s.CreateUser(t.Context(), User{Email: fmt.Sprintf("%s%d@example.com", name, i)})
				errs <- err
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	users, err := b.ListUsers(t.Context(), 100, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(users) != 2*perStore {
		t.Errorf("%d users, want %d", len(users), 2*perStore)
	}
}

// TestSQLiteSettings checks the per-connection settings the store depends
// on, on both of its pools.
func TestSQLiteSettings(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, filepath.Join(t.TempDir(), "settings.db"))
	ctx := t.Context()
	checks := []struct {
		pool   string
		pragma string
		want   string
	}{
		{"write", "journal_mode", "wal"},
		{"write", "foreign_keys", "1"},
		{"write", "busy_timeout", "5000"},
		{"write", "query_only", "0"},
		{"write", "temp_store", "2"},
		{"read", "journal_mode", "wal"},
		{"read", "foreign_keys", "1"},
		{"read", "busy_timeout", "5000"},
		{"read", "query_only", "1"},
	}
	for _, c := range checks {
		db := s.write
		if c.pool == "read" {
			db = s.read
		}
		var got string
		if err := db.QueryRowContext(ctx, "PRAGMA "+c.pragma).Scan(&got); err != nil {
			t.Fatalf("%s pool: PRAGMA %s: %v", c.pool, c.pragma, err)
		}
		if !strings.EqualFold(got, c.want) {
			t.Errorf("%s pool: PRAGMA %s = %q, want %q", c.pool, c.pragma, got, c.want)
		}
	}
	if _, err := s.read.ExecContext(ctx, `UPDATE users SET tier = 'x'`); err == nil {
		t.Error("the read pool accepted a write")
	}
	if s.read == s.write {
		t.Error("a SQLite file store should have separate read and write pools")
	}
}

func TestSQLiteMemory(t *testing.T) {
	t.Parallel()
	s := openTestStore(t, ":memory:")
	u := mustCreateUser(t, s, "mem@example.com")
	got, err := s.UserByEmail(t.Context(), "mem@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != u.ID {
		t.Errorf("UserByEmail = %+v, want %+v", got, u)
	}
}

// TestOpenDefaultPath checks that an empty URL means agentapi.db in the
// working directory. It changes directory, so it cannot run in parallel.
func TestOpenDefaultPath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	s := openTestStore(t, "")
	if s.Dialect() != DialectSQLite {
		t.Errorf("Dialect() = %q, want %q", s.Dialect(), DialectSQLite)
	}
	u := mustCreateUser(t, s, "default@example.com")
	// The same file, named explicitly by absolute path, holds the user.
	other := openTestStore(t, "sqlite://"+filepath.Join(dir, DefaultSQLitePath))
	if _, err := other.UserByID(t.Context(), u.ID); err != nil {
		t.Errorf("user not in %s in the working directory: %v", DefaultSQLitePath, err)
	}
}

func TestOpenPostgresErrorHidesPassword(t *testing.T) {
	t.Parallel()
	// Port 1 on loopback refuses at once; nothing listens there.
	_, err := Open(t.Context(), "postgres://someone:hunter2secret@127.0.0.1:1/db?sslmode=disable&connect_timeout=5")
	if err == nil {
		t.Fatal("Open of an unreachable server succeeded")
	}
	if strings.Contains(err.Error(), "hunter2secret") {
		t.Errorf("error reveals the password: %v", err)
	}
	_, err = Open(t.Context(), "postgres://someone:hunter2secret@127.0.0.1:notaport/db")
	if err == nil {
		t.Fatal("Open of a malformed URL succeeded")
	}
	if strings.Contains(err.Error(), "hunter2secret") {
		t.Errorf("error reveals the password: %v", err)
	}
}

func TestSQLitePath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", DefaultSQLitePath},
		{"sqlite://", DefaultSQLitePath},
		{"data/app.db", "data/app.db"},
		{"/var/lib/agentapi.db", "/var/lib/agentapi.db"},
		{"sqlite://app.db", "app.db"},
		{"sqlite:///var/lib/app.db", "/var/lib/app.db"},
		{"sqlite3:///var/lib/app.db", "/var/lib/app.db"},
		{"sqlite:app.db", "app.db"},
		{"sqlite:/var/lib/app.db", "/var/lib/app.db"},
		{"file:app.db?mode=rwc", "file:app.db?mode=rwc"},
		{":memory:", ":memory:"},
	}
	for _, tt := range tests {
		if got := sqlitePath(tt.in); got != tt.want {
			t.Errorf("sqlitePath(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSQLiteDSNKeepsUserQuery(t *testing.T) {
	got := sqliteDSN("file:app.db?mode=rwc", false)
	if !strings.HasPrefix(got, "file:app.db?mode=rwc&_pragma=busy_timeout(5000)&") {
		t.Errorf("sqliteDSN = %q", got)
	}
	if got := sqliteDSN("app.db", true); !strings.HasPrefix(got, "app.db?_pragma=") || !strings.Contains(got, "query_only(1)") {
		t.Errorf("sqliteDSN(read) = %q", got)
	}
}

func TestRebindDollar(t *testing.T) {
	tests := []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"a = ?", "a = $1"},
		{"a = ? AND b IN (?, ?) LIMIT ?", "a = $1 AND b IN ($2, $3) LIMIT $4"},
		{"?", "$1"},
	}
	for _, tt := range tests {
		if got := rebindDollar(tt.in); got != tt.want {
			t.Errorf("rebindDollar(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestOpenSQLiteURLForms opens one file through each accepted spelling and
// checks they all reach the same database.
func TestOpenSQLiteURLForms(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "forms.db")
	first := openTestStore(t, path)
	u := mustCreateUser(t, first, "forms@example.com")
	for _, url := range []string{
		"sqlite://" + path,
		"sqlite:" + path,
		"file:" + path,
		"file:" + path + "?mode=rwc",
	} {
		s := openTestStore(t, url)
		if s.Dialect() != DialectSQLite {
			t.Errorf("%s: Dialect() = %q", url, s.Dialect())
		}
		if _, err := s.UserByID(t.Context(), u.ID); err != nil {
			t.Errorf("%s: %v", url, err)
		}
	}
}

// TestSQLiteConcurrentOpen is TestPostgresConcurrentOpen on a SQLite file:
// servers (or `agentapi migrate` beside a server) starting together on a
// fresh file must each come up, the later ones finding nothing to do.
func TestSQLiteConcurrentOpen(t *testing.T) {
	t.Parallel()
	t.Run("FreshFile", func(t *testing.T) {
		t.Parallel()
		testConcurrentOpen(t, "sqlite://"+filepath.Join(t.TempDir(), "fresh.db"))
	})
	t.Run("PendingMigrations", func(t *testing.T) {
		t.Parallel()
		url := "sqlite://" + filepath.Join(t.TempDir(), "pending.db")
		pendingMigrations(t, url)
		testConcurrentOpen(t, url)
	})
}

package store

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// runResponsesSuite is the stored responses' behaviour on both engines.
func runResponsesSuite(t *testing.T, open func(t *testing.T) *Store) {
	save := func(t *testing.T, s *Store, id, user, prev string, expires time.Time) {
		t.Helper()
		err := s.SaveResponse(t.Context(), StoredResponse{ID: id, UserID: user, PreviousID: prev, Model: "m",
			Status: "completed", Body: []byte(`{"id":"` + id + `"}`), Input: []byte(`[]`), ExpiresAt: expires})
		if err != nil {
			t.Fatalf("save %s: %v", id, err)
		}
	}
	later := time.Now().Add(time.Hour)

	t.Run("ResponsesOwnedAndChained", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		alice := mustCreateUser(t, s, "alice@example.com").ID
		bob := mustCreateUser(t, s, "bob@example.com").ID
		save(t, s, "r1", alice, "", later)
		save(t, s, "r2", alice, "r1", later)
		save(t, s, "r3", alice, "r2", later)
		// Bob continues Alice's r3: his chain must not reach into hers.
		save(t, s, "b1", bob, "r3", later)

		got, err := s.Response(ctx, alice, "r2")
		if err != nil || string(got.Body) != `{"id":"r2"}` || got.PreviousID != "r1" || string(got.Input) != "[]" {
			t.Fatalf("Response(alice, r2) = %+v, %v", got, err)
		}
		if _, err := s.Response(ctx, bob, "r2"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Response(bob, alice's r2) err = %v, want ErrNotFound", err)
		}
		if err := s.SaveResponse(ctx, StoredResponse{ID: "r1", UserID: bob, Status: "completed", Body: []byte("{}"), Input: []byte("[]"), ExpiresAt: later}); !errors.Is(err, ErrConflict) {
			t.Errorf("second save of r1 err = %v, want ErrConflict", err)
		}

		chain, err := s.ResponseChain(ctx, alice, "r3", 0)
		if err != nil {
			t.Fatal(err)
		}
		if ids := chainIDs(chain); ids != "r1,r2,r3" {
			t.Errorf("chain of r3 = %s, want r1,r2,r3 (oldest first)", ids)
		}
		chain, err = s.ResponseChain(ctx, bob, "b1", 0)
		if err != nil || chainIDs(chain) != "b1" {
			t.Errorf("bob's chain = %s, %v; want b1 alone (the link to alice's row is not followed)", chainIDs(chain), err)
		}
		if _, err := s.ResponseChain(ctx, bob, "r3", 0); !errors.Is(err, ErrNotFound) {
			t.Errorf("bob's chain from alice's r3 err = %v, want ErrNotFound", err)
		}
		chain, err = s.ResponseChain(ctx, alice, "r3", 2)
		if !errors.Is(err, ErrChainTooDeep) || chainIDs(chain) != "r2,r3" {
			t.Errorf("chain of r3 at depth 2 = %s, %v; want r2,r3 and ErrChainTooDeep", chainIDs(chain), err)
		}

		// Deleting the middle cuts the chain there.
		if err := s.DeleteResponse(ctx, bob, "r2"); !errors.Is(err, ErrNotFound) {
			t.Errorf("bob deletes alice's r2: err = %v, want ErrNotFound", err)
		}
		if err := s.DeleteResponse(ctx, alice, "r2"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteResponse(ctx, alice, "r2"); !errors.Is(err, ErrNotFound) {
			t.Errorf("second delete err = %v, want ErrNotFound", err)
		}
		chain, err = s.ResponseChain(ctx, alice, "r3", 0)
		if err != nil || chainIDs(chain) != "r3" {
			t.Errorf("chain after deleting r2 = %s, %v; want r3", chainIDs(chain), err)
		}
	})

	t.Run("ResponsesExpire", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		u := mustCreateUser(t, s, "carol@example.com").ID
		past := time.Now().Add(-time.Minute)
		save(t, s, "old1", u, "", past)
		save(t, s, "old2", u, "", past)
		save(t, s, "new1", u, "old1", later)
		if _, err := s.Response(ctx, u, "old1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("expired response err = %v, want ErrNotFound", err)
		}
		chain, err := s.ResponseChain(ctx, u, "new1", 0)
		if err != nil || chainIDs(chain) != "new1" {
			t.Errorf("chain through an expired row = %s, %v; want new1", chainIDs(chain), err)
		}
		n, err := s.PurgeExpiredResponses(ctx, time.Now(), 1)
		if err != nil || n != 1 {
			t.Fatalf("purge batch of 1 = %d, %v", n, err)
		}
		n, err = s.PurgeExpiredResponses(ctx, time.Now(), 10)
		if err != nil || n != 1 {
			t.Fatalf("second purge = %d, %v; want the other expired row", n, err)
		}
		if _, err := s.Response(ctx, u, "new1"); err != nil {
			t.Errorf("unexpired row after purge: %v", err)
		}
	})

	t.Run("ResponseChainLong", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		u := mustCreateUser(t, s, "dave@example.com").ID
		prev := ""
		for i := range 60 {
			id := fmt.Sprintf("c%02d", i)
			save(t, s, id, u, prev, later)
			prev = id
		}
		chain, err := s.ResponseChain(t.Context(), u, prev, 0)
		if err != nil || len(chain) != 60 || chain[0].ID != "c00" || chain[59].ID != "c59" {
			t.Fatalf("chain of 60 = %d rows, %v", len(chain), err)
		}
	})
}

func chainIDs(chain []StoredResponse) string {
	s := ""
	for i, r := range chain {
		if i > 0 {
			s += ","
		}
		s += r.ID
	}
	return s
}

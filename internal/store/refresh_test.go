package store

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// runRefreshSuite is the refresh-token part of the shared suite.
func runRefreshSuite(t *testing.T, open func(t *testing.T) *Store) {
	t.Run("RefreshRotation", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		u := mustCreateUser(t, s, "rot@example.com")
		exp := time.Now().Add(time.Hour)
		first, err := s.StartRefreshFamily(ctx, u.ID, "h1", exp)
		if err != nil {
			t.Fatal(err)
		}
		if first.FamilyID == "" || first.UserID != u.ID || !first.ExpiresAt.Equal(exp.UTC().Truncate(time.Millisecond)) {
			t.Fatalf("StartRefreshFamily = %+v", first)
		}
		second, err := s.RotateRefreshToken(ctx, "h1", "h2", exp)
		if err != nil {
			t.Fatal(err)
		}
		if second.FamilyID != first.FamilyID || second.UserID != u.ID || second.Hash != "h2" {
			t.Fatalf("RotateRefreshToken = %+v, want the same family and user", second)
		}
		third, err := s.RotateRefreshToken(ctx, "h2", "h3", exp)
		if err != nil || third.FamilyID != first.FamilyID {
			t.Fatalf("second rotation = %+v, %v", third, err)
		}
		// Presenting h1 again is reuse: refused, and the family is revoked,
		// so even the newest token (h3) stops working.
		got, err := s.RotateRefreshToken(ctx, "h1", "h4", exp)
		if !errors.Is(err, ErrRefreshReused) {
			t.Fatalf("reuse of a replaced token: error = %v, want ErrRefreshReused", err)
		}
		if got.FamilyID != first.FamilyID || got.UserID != u.ID {
			t.Errorf("reuse error names family %q user %q, want %q %q", got.FamilyID, got.UserID, first.FamilyID, u.ID)
		}
		if _, err := s.RotateRefreshToken(ctx, "h3", "h5", exp); !errors.Is(err, ErrRevoked) {
			t.Fatalf("newest token after reuse: error = %v, want ErrRevoked", err)
		}
		if _, err := s.RotateRefreshToken(ctx, "nope", "h6", exp); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown token: error = %v, want ErrNotFound", err)
		}
		// Another family of the same user is untouched.
		other, err := s.StartRefreshFamily(ctx, u.ID, "o1", exp)
		if err != nil {
			t.Fatal(err)
		}
		if other.FamilyID == first.FamilyID {
			t.Fatal("two logins share a family")
		}
		if _, err := s.RotateRefreshToken(ctx, "o1", "o2", exp); err != nil {
			t.Fatalf("other family after a reuse elsewhere: %v", err)
		}
		if _, err := s.StartRefreshFamily(ctx, u.ID, "o2", exp); !errors.Is(err, ErrConflict) {
			t.Errorf("taken hash: error = %v, want ErrConflict", err)
		}
		if _, err := s.StartRefreshFamily(ctx, "no-such-user", "z1", exp); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown user: error = %v, want ErrNotFound", err)
		}
	})

	t.Run("RefreshExpiry", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		u := mustCreateUser(t, s, "exp@example.com")
		if _, err := s.StartRefreshFamily(ctx, u.ID, "old", time.Now().Add(-time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RotateRefreshToken(ctx, "old", "new", time.Now().Add(time.Hour)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("expired token: error = %v, want ErrNotFound", err)
		}
		if _, err := s.StartRefreshFamily(ctx, u.ID, "live", time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		n, err := s.DeleteExpiredRefreshTokens(ctx, time.Now())
		if err != nil || n != 1 {
			t.Fatalf("DeleteExpiredRefreshTokens = %d, %v; want 1", n, err)
		}
		if _, err := s.RotateRefreshToken(ctx, "live", "live2", time.Now().Add(time.Hour)); err != nil {
			t.Fatalf("live token after cleanup: %v", err)
		}
	})

	t.Run("RefreshRevokeFamily", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		alice := mustCreateUser(t, s, "alice-rt@example.com")
		bob := mustCreateUser(t, s, "bob-rt@example.com")
		exp := time.Now().Add(time.Hour)
		if _, err := s.StartRefreshFamily(ctx, alice.ID, "a1", exp); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RotateRefreshToken(ctx, "a1", "a2", exp); err != nil {
			t.Fatal(err)
		}
		// Bob cannot revoke Alice's session, even holding her token's hash.
		if err := s.RevokeRefreshFamilyOf(ctx, bob.ID, "a2"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("revoke by another user: error = %v, want ErrNotFound", err)
		}
		// Revoking through an old link of the chain ends the whole family.
		if err := s.RevokeRefreshFamilyOf(ctx, alice.ID, "a1"); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeRefreshFamilyOf(ctx, alice.ID, "a1"); err != nil {
			t.Fatalf("second revoke: %v", err)
		}
		if _, err := s.RotateRefreshToken(ctx, "a2", "a3", exp); !errors.Is(err, ErrRevoked) {
			t.Fatalf("token of a revoked family: error = %v, want ErrRevoked", err)
		}
		// By family id, as a logout without the refresh token does.
		fam, err := s.StartRefreshFamily(ctx, alice.ID, "b1", exp)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeRefreshFamily(ctx, bob.ID, fam.FamilyID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("revoke another user's family by id: error = %v, want ErrNotFound", err)
		}
		if err := s.RevokeRefreshFamily(ctx, alice.ID, fam.FamilyID); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeRefreshFamily(ctx, alice.ID, fam.FamilyID); err != nil {
			t.Fatalf("second revoke by id: %v", err)
		}
		if _, err := s.RotateRefreshToken(ctx, "b1", "b2", exp); !errors.Is(err, ErrRevoked) {
			t.Fatalf("token of a family revoked by id: error = %v, want ErrRevoked", err)
		}
	})

	t.Run("RefreshConcurrentRotation", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx := t.Context()
		u := mustCreateUser(t, s, "race-rt@example.com")
		exp := time.Now().Add(time.Hour)
		if _, err := s.StartRefreshFamily(ctx, u.ID, "r0", exp); err != nil {
			t.Fatal(err)
		}
		const n = 8
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, errs[i] = s.RotateRefreshToken(ctx, "r0", fmt.Sprintf("r1-%d", i), exp)
			})
		}
		wg.Wait()
		var ok int
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrRefreshReused), errors.Is(err, ErrRevoked):
			default:
				t.Errorf("concurrent rotation: unexpected error %v", err)
			}
		}
		if ok != 1 {
			t.Fatalf("%d of %d concurrent rotations of one token succeeded, want exactly 1", ok, n)
		}
		// The losers presented a used token, so the family is revoked and
		// the winner's new token is refused too.
		for i := range n {
			if errs[i] == nil {
				if _, err := s.RotateRefreshToken(ctx, fmt.Sprintf("r1-%d", i), "r2", exp); !errors.Is(err, ErrRevoked) {
					t.Errorf("winner's token after the race: error = %v, want ErrRevoked", err)
				}
			}
		}
	})
}

package auth

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// FuzzVerify feeds arbitrary strings to Verify: it must never panic, must
// refuse anything but a token we issued, and must answer a valid token
// edited in any way by refusing it. The seeds are a real token, its parts,
// and classic malformed shapes.
func FuzzVerify(f *testing.F) {
	tk, err := NewTokens(TokenOptions{Secret: newSecret, Algorithm: "HS256", TTL: time.Hour, Issuer: "agentapi", Audience: "agentapi"})
	if err != nil {
		f.Fatal(err)
	}
	good, _, err := tk.Issue("u1", "free")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Add(good[:len(good)-1])
	f.Add("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1MSJ9.")
	f.Add("..")
	f.Add(strings.Repeat(".", 1000))
	f.Add("rt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("sk-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := tk.Verify(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("Verify(%q) error %v does not wrap ErrInvalidToken", s, err)
			}
			return
		}
		// Only our issued token (or an encoding-equivalent spelling of it,
		// which the HMAC still covers) may pass, and it says what we signed.
		if c.UserID != "u1" || c.Tier != "free" {
			t.Fatalf("Verify(%q) accepted claims %+v", s, c)
		}
	})
}

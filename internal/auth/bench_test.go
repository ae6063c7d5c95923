package auth

import (
	"testing"
	"time"
)

func benchTokens(b *testing.B, alg string) *Tokens {
	b.Helper()
	tok, err := NewTokens(TokenOptions{Secret: "bench-secret-bench-secret-bench-secret", Algorithm: alg,
		TTL: 30 * time.Minute, Issuer: "agentapi", Audience: "agentapi"})
	if err != nil {
		b.Fatal(err)
	}
	return tok
}

// BenchmarkVerify is the per-request cost of authenticating with an access
// token: parse, HMAC check and claim validation.
func BenchmarkVerify(b *testing.B) {
	for _, alg := range []string{"HS256", "HS512"} {
		b.Run(alg, func(b *testing.B) {
			tok := benchTokens(b, alg)
			s, _, err := tok.Issue("0190f3a4-8c7e-7b1a-9f2d-3c4b5a697887", "pro")
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				c, err := tok.Verify(s)
				if err != nil || c.Tier != "pro" {
					b.Fatalf("Verify = %+v, %v", c, err)
				}
			}
		})
	}
}

// BenchmarkVerifyParallel shows whether verification scales across cores
// (the parser and key are shared by every request).
func BenchmarkVerifyParallel(b *testing.B) {
	tok := benchTokens(b, "HS256")
	s, _, err := tok.Issue("0190f3a4-8c7e-7b1a-9f2d-3c4b5a697887", "pro")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := tok.Verify(s); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkVerifyRejectsForgery is the cost of refusing a token with a bad
// signature, which an attacker can send at will.
func BenchmarkVerifyRejectsForgery(b *testing.B) {
	tok := benchTokens(b, "HS256")
	s, _, err := tok.Issue("0190f3a4-8c7e-7b1a-9f2d-3c4b5a697887", "pro")
	if err != nil {
		b.Fatal(err)
	}
	forged := s[:len(s)-4] + "AAAA"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tok.Verify(forged); err == nil {
			b.Fatal("forged token accepted")
		}
	}
}

// BenchmarkAPIKeyHash is the per-request work on an API key before the
// store lookup: recognise its shape and hash it into the lookup key.
func BenchmarkAPIKeyHash(b *testing.B) {
	key, _, want, err := NewAPIKey()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if !LooksLikeAPIKey(key) || HashAPIKey(key) != want {
			b.Fatal("key not recognised")
		}
	}
}

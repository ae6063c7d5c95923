package cache

import (
	"encoding/hex"
	"testing"
)

// FuzzNewKey checks the key derivation on arbitrary parts: a key is always
// 64 hex digits, the same parts always give the same key, and moving bytes
// across a boundary between parts (scope|model, model|request) always gives
// another key, so one user's scope can never be spelled into another's.
func FuzzNewKey(f *testing.F) {
	f.Add("user:u1", "gpt-4o-mini", []byte(`{"messages":[{"role":"user","content":"hi"}]}`), uint8(3))
	f.Add("global", "", []byte{}, uint8(0))
	f.Add("/v1/chat|user:a", "m", []byte("\x00\x01"), uint8(200))
	f.Fuzz(func(t *testing.T, scope, model string, req []byte, cut uint8) {
		k := NewKey(scope, model, req)
		if b, err := hex.DecodeString(string(k)); err != nil || len(b) != 32 {
			t.Fatalf("NewKey(%q, %q, %q) = %q, not 64 hex digits", scope, model, req, k)
		}
		if again := NewKey(scope, model, append([]byte(nil), req...)); again != k {
			t.Fatalf("NewKey is not deterministic: %q then %q", k, again)
		}
		if n := int(cut) % (len(model) + 1); n > 0 {
			if NewKey(scope+model[:n], model[n:], req) == k {
				t.Fatalf("moving %q from model to scope kept the key", model[:n])
			}
		}
		if n := int(cut) % (len(req) + 1); n > 0 {
			if NewKey(scope, model+string(req[:n]), req[n:]) == k {
				t.Fatalf("moving %q from request to model kept the key", req[:n])
			}
		}
		if n := int(cut) % (len(scope) + 1); n > 0 {
			if NewKey(scope[:len(scope)-n], scope[len(scope)-n:]+model, req) == k {
				t.Fatalf("moving %q from scope to model kept the key", scope[len(scope)-n:])
			}
		}
	})
}

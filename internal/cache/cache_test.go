package cache

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// store is what both caches provide.
type store interface {
	Get(ctx context.Context, k Key) ([]byte, bool, error)
	Set(ctx context.Context, k Key, v []byte) error
}

// suiteMaxEntry is the per-entry cap every cache under testCache has.
const suiteMaxEntry = 1024

// pollWait bounds how long a test waits for an expiry it knows must come.
// It is a budget against hanging, not a claim about speed.
const pollWait = 10 * time.Second

// testCache is the behaviour both caches must have. newCache returns a
// fresh, empty cache with the given TTL and a per-entry cap of
// suiteMaxEntry bytes.
func testCache(t *testing.T, newCache func(t *testing.T, ttl time.Duration) store) {
	t.Run("Miss", func(t *testing.T) {
		t.Parallel()
		c := newCache(t, time.Minute)
		v, ok, err := c.Get(t.Context(), NewKey("global", "m", []byte("never set")))
		if err != nil || ok || v != nil {
			t.Errorf("Get of an unset key = %q, %v, %v; want nil, false, nil", v, ok, err)
		}
	})

	t.Run("SetThenHit", func(t *testing.T) {
		t.Parallel()
		c := newCache(t, time.Minute)
		k := NewKey("user-1", "m", []byte(`{"q":1}`))
		mustSet(t, c, k, []byte("first"))
		if got := mustGet(t, c, k); string(got) != "first" {
			t.Errorf("Get = %q, want first", got)
		}
		mustSet(t, c, k, []byte("second"))
		if got := mustGet(t, c, k); string(got) != "second" {
			t.Errorf("Get after overwrite = %q, want second", got)
		}
		other := NewKey("user-2", "m", []byte(`{"q":1}`))
		if _, ok, _ := c.Get(t.Context(), other); ok {
			t.Error("another scope's key hit")
		}
	})

	t.Run("BinaryAndEmptyValues", func(t *testing.T) {
		t.Parallel()
		c := newCache(t, time.Minute)
		binary := make([]byte, 256)
		for i := range binary {
			binary[i] = byte(i)
		}
		for name, v := range map[string][]byte{"binary": binary, "empty": {}} {
			k := NewKey("global", name, nil)
			mustSet(t, c, k, v)
			if diff := cmp.Diff(v, mustGet(t, c, k)); diff != "" {
				t.Errorf("%s value (-want +got):\n%s", name, diff)
			}
		}
	})

	t.Run("Expiry", func(t *testing.T) {
		t.Parallel()
		c := newCache(t, 100*time.Millisecond)
		k := NewKey("global", "m", []byte("short-lived"))
		mustSet(t, c, k, []byte("v"))
		deadline := time.Now().Add(pollWait)
		for {
			_, ok, err := c.Get(t.Context(), k)
			if err != nil {
				t.Fatal(err)
			}
			if !ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("entry with a 100ms TTL still there after %v", pollWait)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})

	t.Run("OversizeSkipped", func(t *testing.T) {
		t.Parallel()
		c := newCache(t, time.Minute)
		big := NewKey("global", "m", []byte("big"))
		if err := c.Set(t.Context(), big, make([]byte, suiteMaxEntry+1)); err != nil {
			t.Fatalf("Set of an oversize value: %v, want nil", err)
		}
		if _, ok, _ := c.Get(t.Context(), big); ok {
			t.Error("oversize value was stored")
		}
		fits := NewKey("global", "m", []byte("fits"))
		mustSet(t, c, fits, make([]byte, suiteMaxEntry))
		if got := mustGet(t, c, fits); len(got) != suiteMaxEntry {
			t.Errorf("value at the cap: got %d bytes, want %d", len(got), suiteMaxEntry)
		}
	})

	t.Run("ValuesAreCopies", func(t *testing.T) {
		t.Parallel()
		c := newCache(t, time.Minute)
		k := NewKey("global", "m", []byte("copies"))
		v := []byte("original")
		mustSet(t, c, k, v)
		copy(v, "mutated!") // the caller reuses its buffer
		got := mustGet(t, c, k)
		if string(got) != "original" {
			t.Fatalf("after mutating the stored slice Get = %q, want original", got)
		}
		copy(got, "mutated!") // the caller edits what it got
		if again := mustGet(t, c, k); string(again) != "original" {
			t.Errorf("after mutating the returned slice Get = %q, want original", again)
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		t.Parallel()
		c := newCache(t, time.Minute)
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for i := range 50 {
					k := NewKey("global", "m", fmt.Appendf(nil, "%d", i))
					want := fmt.Appendf(nil, "value %d", i)
					if err := c.Set(t.Context(), k, want); err != nil {
						t.Errorf("goroutine %d Set: %v", g, err)
						return
					}
					got, ok, err := c.Get(t.Context(), k)
					if err != nil || !ok || !bytes.Equal(got, want) {
						t.Errorf("goroutine %d Get = %q, %v, %v; want %q", g, got, ok, err, want)
						return
					}
				}
			})
		}
		wg.Wait()
	})
}

func mustSet(t *testing.T, c store, k Key, v []byte) {
	t.Helper()
	if err := c.Set(t.Context(), k, v); err != nil {
		t.Fatalf("Set: %v", err)
	}
}

func mustGet(t *testing.T, c store, k Key) []byte {
	t.Helper()
	v, ok, err := c.Get(t.Context(), k)
	if err != nil || !ok {
		t.Fatalf("Get = %q, %v, %v; want a hit", v, ok, err)
	}
	return v
}

func TestNewKeyDeterministic(t *testing.T) {
	t.Parallel()
	a := NewKey("user-1", "gpt-4o", []byte(`{"messages":[]}`))
	b := NewKey("user-1", "gpt-4o", []byte(`{"messages":[]}`))
	if a != b {
		t.Errorf("same inputs gave %s and %s", a, b)
	}
	if len(a) != 64 {
		t.Errorf("key %q is %d characters, want 64 hex digits", a, len(a))
	}
}

// TestNewKeyGolden pins the derivation: a change to it silently empties
// every shared Redis cache on deploy, so it should be a deliberate one
// (bump keyDomain) and update this value.
func TestNewKeyGolden(t *testing.T) {
	t.Parallel()
	const want = Key("d77dabaa578777b8de70e9703f02af9c0e8b68b0d512c42e0d55bd5e30d6ba95")
	if got := NewKey("global", "gpt-4o-mini", []byte(`{"messages":[{"role":"user","content":"hi"}]}`)); got != want {
		t.Errorf("NewKey = %s, want %s", got, want)
	}
}

func TestNewKeyDistinguishesParts(t *testing.T) {
	t.Parallel()
	type parts struct {
		scope, model, request string
	}
	base := parts{"user-1", "gpt-4o", `{"q":1}`}
	variants := []parts{
		base,
		{"user-2", "gpt-4o", `{"q":1}`},
		{"global", "gpt-4o", `{"q":1}`},
		{"user-1", "gpt-4o-mini", `{"q":1}`},
		{"user-1", "gpt-4o", `{"q":2}`},
		{"user-1", "gpt-4o", `{"q":1} `},
		// Boundaries moved between parts: the same bytes in a row.
		{"ab", "c", "d"},
		{"a", "bc", "d"},
		{"a", "b", "cd"},
		{"", "abc", "d"},
		{"abcd", "", ""},
		{"", "", "abcd"},
		{"", "", ""},
	}
	seen := make(map[Key]parts)
	for _, p := range variants {
		k := NewKey(p.scope, p.model, []byte(p.request))
		if prev, dup := seen[k]; dup {
			t.Errorf("%+v and %+v share key %s", prev, p, k)
		}
		seen[k] = p
	}
}

func BenchmarkNewKey(b *testing.B) {
	for _, size := range []int{256, 4 << 10, 64 << 10} {
		req := bytes.Repeat([]byte("x"), size)
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				NewKey("user-123", "gpt-4o-mini", req)
			}
		})
	}
}

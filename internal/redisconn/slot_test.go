package redisconn

import "testing"

func TestSlotTag(t *testing.T) {
	t.Parallel()
	tests := []struct{ key, want string }{
		{"agentapi:rl:user:42", "{agentapi:rl:user:42}"},
		{"{app}:rl:user:42", "{app}"},
		{"a{b}c{d}", "{b}"},
		{"a{}b", ""}, // an empty tag does not count: the whole key does, and it holds a brace
		{"a{b", "{a{b}"},
		{"a}b", ""},  // the whole key counts and holds '}'
		{"{}}x", ""}, // likewise
		{"", ""},
	}
	for _, tt := range tests {
		if got := SlotTag(tt.key); got != tt.want {
			t.Errorf("SlotTag(%q) = %q, want %q", tt.key, got, tt.want)
		}
		if tag := SlotTag(tt.key); tag != "" && !SameSlot("p:"+tag+"rest", tt.key) {
			t.Errorf("a key tagged %q does not share %q's slot", tag, tt.key)
		}
	}
}

func TestKeyNear(t *testing.T) {
	t.Parallel()
	tests := []struct{ anchor, prefix, rest, want string }{
		{"agentapi:budget:u1:2026-12-06", "agentapi:budget:call:", "ab:1", "agentapi:budget:call:{agentapi:budget:u1:2026-12-06}ab:1"},
		{"{t}:budget:u1", "{t}:budget:call:", "1", "{t}:budget:call:{t}1"},
		// A prefix with a stray brace would take the tag over: left untagged.
		{"x{y:budget:u1", "x{y:budget:call:", "1", "x{y:budget:call:1"},
		{"a}b", "p:", "1", "p:1"},
	}
	for _, tt := range tests {
		got := KeyNear(tt.anchor, tt.prefix, tt.rest)
		if got != tt.want {
			t.Errorf("KeyNear(%q, %q, %q) = %q, want %q", tt.anchor, tt.prefix, tt.rest, got, tt.want)
		}
	}
}

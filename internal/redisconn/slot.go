package redisconn

import "strings"

// SlotTag returns a hash tag, "{...}", that puts a key in the same Redis
// Cluster hash slot as key when the tag is the first pair of braces in it.
// Keys a script or a pipeline must use together can then live on one node
// while key itself keeps its name: a key's slot is the CRC of its first
// non-empty {...} section, or of the whole key when it has none, and the
// tag holds exactly that text.
//
// It returns "" when no tag can do it: key is empty, or the text its slot
// comes from contains '}', which would end the tag early. Callers then
// leave the other key untagged; on one server or Sentinel nothing changes,
// and on a cluster the two keys may land on different nodes, which costs a
// round trip, not correctness, unless they meet inside one script.
func SlotTag(key string) string {
	hashed := slotText(key)
	if hashed == "" || strings.Contains(hashed, "}") {
		return ""
	}
	return "{" + hashed + "}"
}

// slotText is the part of key that Redis Cluster hashes to pick its slot.
func slotText(key string) string {
	open := strings.IndexByte(key, '{')
	if open < 0 {
		return key
	}
	end := strings.IndexByte(key[open+1:], '}')
	if end <= 0 { // no closing brace, or "{}": the whole key counts
		return key
	}
	return key[open+1 : open+1+end]
}

// SameSlot reports whether a and b hash to the same cluster slot because
// they hash the same text (the only way this package makes keys meet).
func SameSlot(a, b string) bool {
	return slotText(a) == slotText(b)
}

// KeyNear returns prefix+rest with [SlotTag] of anchor between them, so
// that the key lands in anchor's cluster slot. When no tag can do that
// (see SlotTag, and a prefix with stray braces, whose own braces would
// then decide the slot) it returns prefix+rest: correct everywhere, only
// not placed.
func KeyNear(anchor, prefix, rest string) string {
	if tag := SlotTag(anchor); tag != "" {
		if k := prefix + tag + rest; SameSlot(k, anchor) {
			return k
		}
	}
	return prefix + rest
}

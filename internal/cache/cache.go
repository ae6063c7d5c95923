// Package cache keeps model responses so that an identical request can be
// answered without calling the provider again.
//
// Values are opaque bytes: the caller decides what a response looks like on
// the wire and this package never parses it. [Memory] keeps entries in this
// process; [Redis] shares them between replicas. Both expire an entry a
// fixed time after it was written and both refuse entries over a size cap,
// so one huge response cannot push everything else out.
package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"
)

// Key names one cached response. It is a hex SHA-256 digest, so it is safe
// to use in Redis keys and logs: it reveals nothing of the prompt; a key
// made by [Key.Near] adds the name of its anchor after a '|'.
type Key string

// anchorSep parts a key's digest from its anchor; hex has no '|'.
const anchorSep = "|"

// Near returns k marked to be stored next to anchor, a name in another
// store of the caller's, such as the rate limiter's key for the user whose
// answer this is. A [Redis] cache told the other store's prefix (see
// [Redis.PlaceNear]) then keeps the entry in the same Redis Cluster slot as
// that store's key, so that a pipeline reading both goes to one node in
// one round trip. Other caches treat the result as just another key.
func (k Key) Near(anchor string) Key {
	if anchor == "" {
		return k
	}
	return k + anchorSep + Key(anchor)
}

// parts splits k into its digest and its anchor ("" if none).
func (k Key) parts() (digest, anchor string) {
	digest, anchor, _ = strings.Cut(string(k), anchorSep)
	return digest, anchor
}

// keyDomain is hashed before the parts. Changing it (say, to v2 when the
// normalisation of request bodies changes) retires every existing entry at
// once, because no new key can equal an old one.
const keyDomain = "agentapi/cache/v1"

// NewKey derives the key for a request: who may see the answer (a user id,
// or "global" for a cache shared by everyone), the model, and the
// normalised request body. Each part is hashed behind its length, so
// ("ab", "c") and ("a", "bc") give different keys.
func NewKey(scope, model string, request []byte) Key {
	// The small parts go into one buffer so the hash sees two writes, not
	// eight; each write through the hash.Hash interface would otherwise
	// move its argument to the heap.
	buf := make([]byte, 0, 4*8+len(keyDomain)+len(scope)+len(model))
	buf = appendPart(buf, keyDomain)
	buf = appendPart(buf, scope)
	buf = appendPart(buf, model)
	buf = binary.BigEndian.AppendUint64(buf, uint64(len(request)))
	h := sha256.New()
	h.Write(buf)
	h.Write(request)
	return Key(hex.EncodeToString(h.Sum(buf[:0])))
}

// appendPart appends s to buf behind its length as 8 big-endian bytes.
func appendPart(buf []byte, s string) []byte {
	buf = binary.BigEndian.AppendUint64(buf, uint64(len(s)))
	return append(buf, s...)
}

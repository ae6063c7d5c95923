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
	"hash"
)

// Key names one cached response. It is a hex SHA-256 digest, so it is safe
// to use in Redis keys and logs: it reveals nothing of the prompt.
type Key string

// keyDomain is hashed before the parts. Changing it (say, to v2 when the
// normalisation of request bodies changes) retires every existing entry at
// once, because no new key can equal an old one.
const keyDomain = "agentapi/cache/v1"

// NewKey derives the key for a request: who may see the answer (a user id,
// or "global" for a cache shared by everyone), the model, and the
// normalised request body. Each part is hashed behind its length, so
// ("ab", "c") and ("a", "bc") give different keys.
func NewKey(scope, model string, request []byte) Key {
	h := sha256.New()
	writePart(h, []byte(keyDomain))
	writePart(h, []byte(scope))
	writePart(h, []byte(model))
	writePart(h, request)
	var sum [sha256.Size]byte
	return Key(hex.EncodeToString(h.Sum(sum[:0])))
}

// writePart writes b to h behind its length as 8 big-endian bytes.
func writePart(h hash.Hash, b []byte) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(b)))
	h.Write(n[:])
	h.Write(b)
}

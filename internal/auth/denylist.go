package auth

import (
	"sync"
	"sync/atomic"
	"time"
)

// pruneEvery is how many additions pass between sweeps of expired entries.
const pruneEvery = 1024

// DenyList is the set of access-token ids (jti) refused until their expiry,
// e.g. after a logout. Each entry is dropped once its token would have
// expired anyway, so the list holds at most the tokens revoked within one
// token lifetime. Lookups take no lock, since every authenticated request
// makes one. It is safe for concurrent use; the zero value is not usable,
// but a nil *DenyList holds nothing.
type DenyList struct {
	now     func() time.Time
	entries sync.Map // jti → expiry (time.Time)
	size    atomic.Int64
	adds    atomic.Int64
}

// NewDenyList returns an empty list; now is time.Now when nil.
func NewDenyList(now func() time.Time) *DenyList {
	if now == nil {
		now = time.Now
	}
	return &DenyList{now: now}
}

// Add refuses jti until the given time (the token's expiry; leeway is added
// here). It reports whether jti was new to the list.
func (d *DenyList) Add(jti string, until time.Time) bool {
	until = until.Add(leeway)
	if jti == "" || !d.now().Before(until) {
		return false
	}
	if _, loaded := d.entries.LoadOrStore(jti, until); loaded {
		return false
	}
	d.size.Add(1)
	if d.adds.Add(1)%pruneEvery == 0 {
		d.prune()
	}
	return true
}

// Has reports whether jti is refused now.
func (d *DenyList) Has(jti string) bool {
	if d == nil || d.size.Load() == 0 {
		return false
	}
	v, ok := d.entries.Load(jti)
	return ok && d.now().Before(v.(time.Time))
}

// Len is the number of entries held, expired ones not yet swept included.
func (d *DenyList) Len() int {
	if d == nil {
		return 0
	}
	return int(d.size.Load())
}

// prune drops entries whose tokens have expired.
func (d *DenyList) prune() {
	now := d.now()
	d.entries.Range(func(k, v any) bool {
		if !now.Before(v.(time.Time)) {
			if d.entries.CompareAndDelete(k, v) {
				d.size.Add(-1)
			}
		}
		return true
	})
}

// Prune drops entries whose tokens have expired; Add also does so now and then.
func (d *DenyList) Prune() { d.prune() }

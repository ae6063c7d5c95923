package redistest

import (
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
)

// TestClusterServesEverySlot starts a cluster and writes keys that spread
// over all three primaries through a cluster client.
func TestClusterServesEverySlot(t *testing.T) {
	t.Parallel()
	c := StartCluster(t, DeployOptions{})
	cc := c.Client()
	primaries := map[int]bool{}
	for i := range 30 {
		k := fmt.Sprintf("k%d", i)
		if err := cc.Set(t.Context(), k, i, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
		primaries[c.PrimaryOf(k).Port] = true
	}
	if len(primaries) != 3 {
		t.Errorf("30 keys landed on %d primaries, want 3", len(primaries))
	}
}

// TestSentinelWithTLSAndACL starts a Sentinel deployment that accepts only
// TLS and one ACL user, and writes through the primary the Sentinels name.
func TestSentinelWithTLSAndACL(t *testing.T) {
	t.Parallel()
	s := StartSentinel(t, DeployOptions{TLS: true, User: "agent", Password: "s3cret-pw"})
	c := s.Client()
	if err := c.Set(t.Context(), "k", "v", 0).Err(); err != nil {
		t.Fatalf("SET through the Sentinels' primary: %v", err)
	}
	plain := redis.NewClient(s.anonymous(s.Primary.Addr()))
	defer plain.Close()
	if err := plain.Ping(t.Context()).Err(); err == nil {
		t.Error("the primary answers the default user; want only the ACL user")
	}
}

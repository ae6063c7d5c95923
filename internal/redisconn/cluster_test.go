package redisconn

import (
	"context"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/redistest"
)

// TestClusterFollowsFailover kills the primary holding a key and checks
// that the client finds the promoted replica once the cluster has settled,
// instead of sending the key's slot to the dead address until its
// periodic reload (a minute by default).
func TestClusterFollowsFailover(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, redistest.DeployOptions{})
	client, err := Open(Options{URL: c.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	// As the limiter sends its decision: a pipeline, under a deadline.
	call := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		pipe := client.Pipeline()
		set := pipe.Set(ctx, "k", "v", 0)
		_, _ = pipe.Exec(ctx)
		return set.Err()
	}
	if err := call(); err != nil {
		t.Fatalf("SET before the failover: %v", err)
	}
	c.PrimaryOf("k").Kill()
	if err := call(); err == nil {
		t.Fatal("SET to a killed primary succeeded")
	}
	c.WaitHealthy()
	var errs []error
	for range 20 {
		if err = call(); err == nil {
			break
		}
		errs = append(errs, err)
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("SET after the failover keeps failing: %v", errs)
	}
	t.Logf("errors after the cluster settled: %v", errs)
}

package admission

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/cache"
	"github.com/agentapi/agentapi/internal/ratelimit"
	"github.com/agentapi/agentapi/internal/redisconn"
	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// nodeTrips counts the round trips a cluster client makes to each node:
// one per pipeline or single command a node client sends.
type nodeTrips struct {
	mu    sync.Mutex
	trips map[string][]string // node address → the commands of each trip
}

func (n *nodeTrips) hook(addr string) redis.Hook { return tripHook{n, addr} }

func (n *nodeTrips) take() map[string][]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	t := n.trips
	n.trips = map[string][]string{}
	return t
}

type tripHook struct {
	n    *nodeTrips
	addr string
}

func (h tripHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h tripHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.record([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (h tripHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.record(cmds)
		return next(ctx, cmds)
	}
}

func (h tripHook) record(cmds []redis.Cmder) {
	var names []string
	for _, c := range cmds {
		names = append(names, c.Name())
	}
	slices.Sort(names)
	h.n.mu.Lock()
	h.n.trips[h.addr] = append(h.n.trips[h.addr], fmt.Sprint(names))
	h.n.mu.Unlock()
}

// TestPipelinedOnCluster counts the round trips of one admission on a real
// Redis Cluster: a user-scoped lookup shares the slot of the user's bucket
// and travels with the decision to one node in one round trip; a global
// entry lives wherever its digest puts it, and the client sends the two
// commands to their two nodes, one round trip each, in parallel.
func TestPipelinedOnCluster(t *testing.T) {
	t.Parallel()
	cl := redistest.StartCluster(t, redistest.DeployOptions{})
	u, err := redisconn.Open(redisconn.Options{URL: cl.URL(), IOTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	client := u.(*redis.ClusterClient)
	trips := &nodeTrips{trips: map[string][]string{}}
	client.OnNewNode(func(c *redis.Client) { c.AddHook(trips.hook(c.Options().Addr)) })

	prefix := redistest.Prefix(t)
	limitPrefix := prefix + "rl:"
	lim, err := ratelimit.NewFallback(ratelimit.NewRedis(client, limitPrefix), ratelimit.NewMemory(100),
		ratelimit.FallbackOptions{SharedTimeout: 5 * time.Second, ProbeInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	c := cache.NewRedis(client, prefix+"cache:", time.Minute, 0)
	c.PlaceNear(limitPrefix)
	a := Pipelined{Limiter: lim, Cache: c}
	ctx := t.Context()
	p := ratelimit.Policy{Name: "free", Capacity: 100, RefillPerSecond: 1}

	// Warm up: the script is loaded and connections dialled once per node.
	// A node meets the script for the first time with an EVALSHA that
	// fails (NOSCRIPT) and an EVAL, two round trips; 64 users spread over
	// the slots reach every primary (each misses one with odds of about
	// (2/3)^64), so the counted calls below find it loaded.
	for i := range 64 {
		if _, err := a.AllowAndGet(ctx, fmt.Sprintf("user:warm%d", i), p, cache.NewKey("warm", "m", []byte{byte(i)})); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range cl.Nodes {
		if _, err := a.AllowAndGet(ctx, "user:warm-"+n.Addr(), p, cache.NewKey("warm", "m", []byte(n.Addr())).Near("user:warm-"+n.Addr())); err != nil {
			t.Fatal(err)
		}
	}
	trips.take()

	t.Run("user scope: one node, one round trip", func(t *testing.T) {
		for i := range 5 {
			user := fmt.Sprintf("user:%d", i)
			k := cache.NewKey("chat|"+user, "m", []byte("question")).Near(user)
			if err := c.Set(ctx, k, []byte("answer")); err != nil {
				t.Fatal(err)
			}
			trips.take()
			res, err := a.AllowAndGet(ctx, user, p, k)
			if err != nil || !res.Decision.Allowed || !res.Hit || string(res.Value) != "answer" {
				t.Fatalf("%s: %+v, %v; want allowed and the cached answer", user, res, err)
			}
			got := trips.take()
			if len(got) != 1 {
				t.Errorf("%s: round trips by node %v, want one node", user, got)
			}
			for node, ts := range got {
				if !slices.Equal(ts, []string{"[evalsha get]"}) {
					t.Errorf("%s: round trips to %s: %v, want one carrying evalsha and get", user, node, ts)
				}
			}
		}
	})

	t.Run("global scope: two nodes in parallel", func(t *testing.T) {
		user := "user:global"
		bucket := cl.PrimaryOf(limitPrefix + user)
		var k cache.Key
		for i := range 100 {
			k = cache.NewKey("chat|global", "m", fmt.Appendf(nil, "q%d", i))
			if cl.PrimaryOf(prefix+"cache:"+string(k)) != bucket {
				break
			}
		}
		trips.take()
		res, err := a.AllowAndGet(ctx, user, p, k)
		if err != nil || !res.Decision.Allowed || !res.LookedUp || res.Hit || res.CacheErr != nil {
			t.Fatalf("%+v, %v; want allowed and a miss", res, err)
		}
		got := trips.take()
		var all []string
		for _, ts := range got {
			all = append(all, ts...)
		}
		slices.Sort(all)
		if len(got) != 2 || !slices.Equal(all, []string{"[evalsha]", "[get]"}) {
			t.Errorf("round trips by node %v, want evalsha to one node and get to another", got)
		}
	})
}

package redisconn

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"
)

// tuning is the subset of options this package is responsible for.
type tuning struct {
	Addr                  string
	DB                    int
	Password              string
	TLS                   bool
	DialTimeout           time.Duration
	DialerRetries         int
	ReadTimeout           time.Duration
	WriteTimeout          time.Duration
	PoolTimeout           time.Duration
	MaxRetries            int
	MinRetryBackoff       time.Duration
	MaxRetryBackoff       time.Duration
	ContextTimeoutEnabled bool
	MinIdleConns          int
}

func TestOpenOptions(t *testing.T) {
	t.Parallel()
	want := func(addr string, db int, password string, tls bool) tuning {
		return tuning{
			Addr: addr, DB: db, Password: password, TLS: tls,
			DialTimeout:           200 * time.Millisecond,
			DialerRetries:         1,
			ReadTimeout:           100 * time.Millisecond,
			WriteTimeout:          100 * time.Millisecond,
			PoolTimeout:           100 * time.Millisecond,
			MaxRetries:            1,
			MinRetryBackoff:       5 * time.Millisecond,
			MaxRetryBackoff:       20 * time.Millisecond,
			ContextTimeoutEnabled: true,
		}
	}
	overridden := want("redis:6379", 0, "", false)
	overridden.DialTimeout = time.Second
	overridden.MaxRetries = 0 // max_retries=-1 means "no retries" to go-redis
	patient := want("redis:6379", 0, "", false)
	patient.ReadTimeout, patient.WriteTimeout = 3*time.Second, 3*time.Second
	urlWins := want("redis:6379", 0, "", false)
	urlWins.ReadTimeout = 50 * time.Millisecond
	urlWins.WriteTimeout = 3 * time.Second

	tests := []struct {
		name string
		opts Options
		want tuning
	}{
		{"url", Options{URL: "redis://:s3cret@redis.internal:6380/2"}, want("redis.internal:6380", 2, "s3cret", false)},
		{"url wins over addr", Options{URL: "redis://a:1/3", Addr: "b:2", DB: 4, Password: "x"}, want("a:1", 3, "", false)},
		{"tls url", Options{URL: "rediss://cache.example.com:6379"}, want("cache.example.com:6379", 0, "", true)},
		{"addr", Options{Addr: "127.0.0.1:6379", DB: 5, Password: "pw"}, want("127.0.0.1:6379", 5, "pw", false)},
		{"query overrides", Options{URL: "redis://redis:6379?dial_timeout=1s&max_retries=-1"}, overridden},
		{"io timeout", Options{URL: "redis://redis:6379", IOTimeout: 3 * time.Second}, patient},
		{"query wins over io timeout", Options{URL: "redis://redis:6379?read_timeout=50ms", IOTimeout: 3 * time.Second}, urlWins},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Open(tt.opts)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer c.Close()
			o := c.(*redis.Client).Options()
			got := tuning{
				Addr: o.Addr, DB: o.DB, Password: o.Password, TLS: o.TLSConfig != nil,
				DialTimeout: o.DialTimeout, DialerRetries: o.DialerRetries,
				ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout, PoolTimeout: o.PoolTimeout,
				MaxRetries: o.MaxRetries, MinRetryBackoff: o.MinRetryBackoff, MaxRetryBackoff: o.MaxRetryBackoff,
				ContextTimeoutEnabled: o.ContextTimeoutEnabled, MinIdleConns: o.MinIdleConns,
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
	}{
		{"empty", Options{}},
		{"unknown scheme", Options{URL: "http://redis:6379"}},
		{"bad db", Options{URL: "redis://redis:6379/zero"}},
		{"unparsable", Options{URL: "redis://:hunter2@redis:port/0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Open(tt.opts)
			if err == nil {
				c.Close()
				t.Fatal("Open succeeded, want error")
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestOpenDoesNotDial(t *testing.T) {
	t.Parallel()
	c, err := Open(Options{Addr: testkit.SilentListener(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer c.Close()
	if n := c.(*redis.Client).PoolStats().TotalConns; n != 0 {
		t.Errorf("pool holds %d connections after Open, want 0", n)
	}
}

func TestOpenTalksToRedis(t *testing.T) {
	t.Parallel()
	c, err := Open(Options{URL: redistest.URL(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer c.Close()
	// Every call the server makes carries a deadline, which then bounds
	// the socket I/O; without one the 100ms read timeout applies, which a
	// loaded machine running the race detector can exceed on a first dial.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	key := redistest.Prefix(t) + "k"
	if err := c.Set(ctx, key, "v", time.Minute).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	got, err := c.Get(ctx, key).Result()
	if err != nil || got != "v" {
		t.Fatalf("GET = %q, %v; want \"v\", nil", got, err)
	}
}

func TestOpenUnreachableFails(t *testing.T) {
	t.Parallel()
	c, err := Open(Options{Addr: testkit.ClosedAddr(t)})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("Ping to a closed port succeeded")
	}
}

func TestLoggerWritesJSON(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	l := NewLogger(slog.New(slog.NewJSONHandler(&b, nil)))
	l.Printf(t.Context(), "redis: connection pool: failed to dial after %d attempts: %v", 1, errors.New("connection refused"))
	var rec struct {
		Level  string `json:"level"`
		Msg    string `json:"msg"`
		Detail string `json:"detail"`
	}
	if err := json.Unmarshal([]byte(b.String()), &rec); err != nil {
		t.Fatalf("not one JSON record: %q: %v", b.String(), err)
	}
	want := "connection pool: failed to dial after 1 attempts: connection refused"
	if rec.Level != "WARN" || rec.Msg != "redis client" || rec.Detail != want {
		t.Errorf("record = %+v, want WARN \"redis client\" with detail %q", rec, want)
	}
}

// clusterTuning is what Open sets on a cluster client.
type clusterTuning struct {
	Addrs                 []string
	Username, Password    string
	TLS                   bool
	DialTimeout           time.Duration
	DialerRetries         int
	ReadTimeout           time.Duration
	PoolTimeout           time.Duration
	MaxRetries            int
	ContextTimeoutEnabled bool
}

func TestOpenCluster(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		url  string
		want clusterTuning
	}{
		{"seeds and acl user", "redis+cluster://agent:pw@n1:7000,n2:7001,n3",
			clusterTuning{Addrs: []string{"n1:7000", "n2:7001", "n3:6379"}, Username: "agent", Password: "pw"}},
		{"tls and a query seed", "rediss+cluster://:pw@[::1]:7000/0?addr=[::1]:7001&read_timeout=300ms",
			clusterTuning{Addrs: []string{"[::1]:7000", "[::1]:7001"}, Password: "pw", TLS: true, ReadTimeout: 300 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Open(Options{URL: tt.url})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer c.Close()
			cc, ok := c.(*redis.ClusterClient)
			if !ok {
				t.Fatalf("Open returned %T, want *redis.ClusterClient", c)
			}
			o := cc.Options()
			want := tt.want
			want.DialTimeout, want.DialerRetries, want.PoolTimeout, want.MaxRetries, want.ContextTimeoutEnabled = 200*time.Millisecond, 1, 100*time.Millisecond, 1, true
			if want.ReadTimeout == 0 {
				want.ReadTimeout = 100 * time.Millisecond
			}
			got := clusterTuning{Addrs: o.Addrs, Username: o.Username, Password: o.Password, TLS: o.TLSConfig != nil,
				DialTimeout: o.DialTimeout, DialerRetries: o.DialerRetries, ReadTimeout: o.ReadTimeout, PoolTimeout: o.PoolTimeout,
				MaxRetries: o.MaxRetries, ContextTimeoutEnabled: o.ContextTimeoutEnabled}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("cluster options (-want +got):\n%s", diff)
			}
		})
	}
}

// failoverTuning is what Open reads from a redis+sentinel URL.
type failoverTuning struct {
	MasterName                         string
	SentinelAddrs                      []string
	Username, Password                 string
	SentinelUsername, SentinelPassword string
	DB                                 int
	TLS                                bool
	CAs                                bool
	DialTimeout                        time.Duration
	DialerRetries                      int
	ReadTimeout                        time.Duration
	MaxRetries                         int
	ContextTimeoutEnabled              bool
}

func TestParseSentinel(t *testing.T) {
	t.Parallel()
	ca := writeCA(t)
	tests := []struct {
		name string
		url  string
		want failoverTuning
	}{
		{"data user and sentinels", "redis+sentinel://agent:pw@s1:26379,s2,s3:26380/mymaster",
			failoverTuning{MasterName: "mymaster", SentinelAddrs: []string{"s1:26379", "s2:26379", "s3:26380"}, Username: "agent", Password: "pw"}},
		{"db, sentinel password, tls with a CA", "rediss+sentinel://:pw@s1/mymaster/3?sentinel_password=spw&tls_ca_file=" + ca,
			failoverTuning{MasterName: "mymaster", SentinelAddrs: []string{"s1:26379"}, Password: "pw", SentinelPassword: "spw", DB: 3, TLS: true, CAs: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := parse(tt.url)
			if err != nil {
				t.Fatalf("parse: %v", err)
			}
			if p.mode != ModeSentinel {
				t.Fatalf("mode %q, want sentinel", p.mode)
			}
			o, err := p.failoverOptions()
			if err != nil {
				t.Fatalf("failoverOptions: %v", err)
			}
			tune(0, failoverTunables(o))
			want := tt.want
			want.DialTimeout, want.DialerRetries, want.ReadTimeout, want.MaxRetries, want.ContextTimeoutEnabled = 200*time.Millisecond, 1, 100*time.Millisecond, 1, true
			got := failoverTuning{MasterName: o.MasterName, SentinelAddrs: o.SentinelAddrs, Username: o.Username, Password: o.Password,
				SentinelUsername: o.SentinelUsername, SentinelPassword: o.SentinelPassword, DB: o.DB,
				TLS: o.TLSConfig != nil, CAs: o.TLSConfig != nil && o.TLSConfig.RootCAs != nil,
				DialTimeout: o.DialTimeout, DialerRetries: o.DialerRetries, ReadTimeout: o.ReadTimeout,
				MaxRetries: o.MaxRetries, ContextTimeoutEnabled: o.ContextTimeoutEnabled}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("failover options (-want +got):\n%s", diff)
			}
			c, err := Open(Options{URL: tt.url})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer c.Close()
			if _, ok := c.(*redis.Client); !ok {
				t.Errorf("Open returned %T, want *redis.Client (the failover client)", c)
			}
		})
	}
}

// writeCA writes a throwaway self-signed certificate as a CA file.
func writeCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestOpenURLErrors(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "none.pem")
	tests := []struct {
		name, url, want string
	}{
		{"several hosts on a single url", "redis://:hunter2@a:1,b:2/0", "redis+cluster"},
		{"cluster db", "redis+cluster://:hunter2@a:1/2", "database 0 only"},
		{"sentinel without primary", "redis+sentinel://:hunter2@a:26379", "primary-name"},
		{"sentinel path too long", "redis+sentinel://:hunter2@a/m/1/2", "primary-name"},
		{"empty host in list", "redis+cluster://:hunter2@a:1,,b:2", "empty host"},
		{"bad port in list", "redis+cluster://:hunter2@a:1,b:x", "host:port"},
		{"ca file without tls", "redis+cluster://:hunter2@a:1?tls_ca_file=/x", "TLS"},
		{"missing ca file", "rediss+cluster://:hunter2@a:1?tls_ca_file=" + missing, "tls_ca_file"},
		{"sentinel password on a cluster", "redis+cluster://:hunter2@a:1?sentinel_password=x", "sentinel"},
		{"unknown option", "redis+cluster://:hunter2@a:1?colour=blue", "colour"},
		{"unknown scheme", "redis+shard://:hunter2@a:1", "unknown scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Open(Options{URL: tt.url})
			if err == nil {
				c.Close()
				t.Fatal("Open succeeded, want error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error leaks the password: %v", err)
			}
		})
	}
}

func TestModeOf(t *testing.T) {
	t.Parallel()
	for url, want := range map[string]Mode{
		"redis://a:1/0":                 ModeSingle,
		"unix:///run/redis.sock":        ModeSingle,
		"rediss+cluster://a:1,b:2":      ModeCluster,
		"redis+sentinel://a,b/primary":  ModeSentinel,
		"rediss+sentinel://a/primary/1": ModeSentinel,
	} {
		if got, err := ModeOf(url); err != nil || got != want {
			t.Errorf("ModeOf(%q) = %q, %v; want %q", url, got, err, want)
		}
	}
}

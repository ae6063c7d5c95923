package redistest

// Real multi-server Redis deployments for tests: a Redis Cluster of three
// primaries with a replica each, and a primary with a replica watched by
// three Sentinels, each started on free loopback ports in the test's temp
// directory and stopped when the test ends. They are what production runs,
// so a test that kills a primary sees a real failover, not a simulation.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// DeployOptions shape a [Cluster] or a [Sentinel] deployment.
type DeployOptions struct {
	// TLS serves every connection (clients, replication, the cluster bus)
	// over TLS only, with a certificate signed by a CA made for the test;
	// URLs then use rediss+ schemes and name the CA in tls_ca_file.
	TLS bool
	// User and Password, when set, make the servers refuse the default
	// user and accept only this ACL user (replicas and Sentinels
	// authenticate as it too). URLs carry them.
	User, Password string
	// NodeTimeout is how long a silent server counts as down before a
	// failover starts: cluster-node-timeout, or Sentinel's
	// down-after-milliseconds. 0 means 1s.
	NodeTimeout time.Duration
}

// settleWait bounds how long a deployment may take to form or to fail
// over. It is a budget for set-up, not an assertion about speed: on a
// loaded two-core machine a cluster forms in a few seconds.
const settleWait = 60 * time.Second

// Node is one redis-server (data node or Sentinel) of a deployment.
type Node struct {
	Port int
	// sentinel marks a Sentinel, which takes no ACL user.
	sentinel bool
	dir      string
	args     []string
	bin      string
	proc     *process
}

// Addr is the node's host:port.
func (n *Node) Addr() string { return "127.0.0.1:" + strconv.Itoa(n.Port) }

// Kill stops the node at once (SIGKILL), as a crash would.
func (n *Node) Kill() {
	if n.proc == nil {
		return
	}
	_ = n.proc.cmd.Process.Kill()
	<-n.proc.exited
	n.proc = nil
}

// Running reports whether the node's process is alive (not killed).
func (n *Node) Running() bool { return n.proc != nil }

// deployment is what a Cluster and a Sentinel share: their options, the
// test, and the files every node reads.
type deployment struct {
	t      testing.TB
	o      DeployOptions
	dir    string
	bin    string
	caFile string
	cert   string
	key    string
}

// newDeployment checks for the binaries, skipping the test without them.
func newDeployment(t testing.TB, o DeployOptions) *deployment {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redistest: redis-server is not on PATH; install Redis to run this test")
	}
	if _, err := exec.LookPath("redis-cli"); err != nil {
		t.Skip("redistest: redis-cli is not on PATH; install Redis to run this test")
	}
	if o.NodeTimeout <= 0 {
		o.NodeTimeout = time.Second
	}
	d := &deployment{t: t, o: o, dir: t.TempDir(), bin: bin}
	if o.TLS {
		d.caFile, d.cert, d.key = writeTestCerts(t, d.dir)
	}
	return d
}

// serverArgs are the arguments every node gets: loopback, no persistence,
// the listening port (TLS only when asked) and the ACL user.
func (d *deployment) serverArgs(port int, dir string) []string {
	args := []string{"--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no"}
	if d.o.TLS {
		args = append(args, "--port", "0", "--tls-port", strconv.Itoa(port),
			"--tls-cert-file", d.cert, "--tls-key-file", d.key, "--tls-ca-cert-file", d.caFile,
			"--tls-auth-clients", "no", "--tls-replication", "yes")
	} else {
		args = append(args, "--port", strconv.Itoa(port))
	}
	if d.o.User != "" {
		// redis-server joins the words after an option into one config
		// line, so each word is an argument of its own.
		args = append(args, "--user", "default", "off",
			"--user", d.o.User, "on", ">"+d.o.Password, "~*", "&*", "+@all")
	}
	return args
}

// dataArgs add what a data node needs to replicate as the ACL user.
func (d *deployment) dataArgs(port int, dir string) []string {
	args := d.serverArgs(port, dir)
	if d.o.User != "" {
		args = append(args, "--masteruser", d.o.User, "--masterauth", d.o.Password)
	}
	return args
}

// start runs a node with args (port picked free; retried when taken) and
// waits until it answers PING.
func (d *deployment) start(name string, args func(port int, dir string) []string) *Node {
	return d.startNode(name, false, args)
}

// startNode is start for a data node or, when sentinel, a Sentinel.
func (d *deployment) startNode(name string, sentinel bool, args func(port int, dir string) []string) *Node {
	d.t.Helper()
	dir := filepath.Join(d.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		d.t.Fatal(err)
	}
	var lastErr error
	for range startAttempts {
		port, err := freePort()
		if err != nil {
			lastErr = err
			continue
		}
		n := &Node{Port: port, sentinel: sentinel, dir: dir, bin: d.bin, args: args(port, dir)}
		if lastErr = d.run(n); lastErr == nil {
			d.t.Cleanup(n.Kill)
			return n
		}
	}
	d.t.Fatalf("redistest: start %s: %v", name, lastErr)
	return nil
}

// run starts n's process and waits for it to answer.
func (d *deployment) run(n *Node) error {
	cmd := exec.Command(n.bin, n.args...)
	cmd.Dir = n.dir
	log, err := os.Create(filepath.Join(n.dir, "server.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("exec %s: %w", n.bin, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		log.Close()
		close(p.exited)
	}()
	n.proc = p
	c := d.nodeClient(n.Addr())
	if n.sentinel {
		c = d.sentinelClient(n.Addr())
	}
	defer c.Close()
	err = pingUntilReady(c, p.exited, 500*time.Millisecond)
	switch {
	case errors.Is(err, errExited):
		n.proc = nil
		out, _ := os.ReadFile(filepath.Join(n.dir, "server.log"))
		return fmt.Errorf("port %d: %w; log:\n%s", n.Port, err, tail(out))
	case err != nil:
		n.Kill()
		return fmt.Errorf("port %d: %w", n.Port, err)
	}
	return nil
}

// tail is the last lines of a server log, for a failure message.
func tail(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// nodeClient is a plain client of one node, as the ACL user, over TLS when
// the deployment uses it; for set-up and inspection.
func (d *deployment) nodeClient(addr string) *redis.Client {
	opts := &redis.Options{Addr: addr, Username: d.o.User, Password: d.o.Password,
		DialTimeout: time.Second, DialerRetries: 1, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, MaxRetries: -1}
	if d.o.TLS {
		opts.TLSConfig = d.tlsConfig()
	}
	return redis.NewClient(opts)
}

// sentinelClient is a plain client of a Sentinel, which takes no user.
func (d *deployment) sentinelClient(addr string) *redis.Client {
	return redis.NewClient(d.anonymous(addr))
}

// anonymous are options for a connection without a user, as a Sentinel
// takes them.
func (d *deployment) anonymous(addr string) *redis.Options {
	opts := &redis.Options{Addr: addr, DialTimeout: time.Second, DialerRetries: 1, ReadTimeout: time.Second, MaxRetries: -1}
	if d.o.TLS {
		opts.TLSConfig = d.tlsConfig()
	}
	return opts
}

// cliArgs are the redis-cli flags to reach the deployment's nodes.
func (d *deployment) cliArgs() []string {
	var args []string
	if d.o.TLS {
		args = append(args, "--tls", "--cacert", d.caFile)
	}
	if d.o.User != "" {
		args = append(args, "--user", d.o.User, "--pass", d.o.Password, "--no-auth-warning")
	}
	return args
}

// urlOf builds a URL of scheme (without its "s") for hosts and path.
func (d *deployment) urlOf(scheme string, hosts []string, path string) string {
	if d.o.TLS {
		scheme = strings.Replace(scheme, "redis", "rediss", 1)
	}
	u := url.URL{Scheme: scheme, Host: strings.Join(hosts, ","), Path: path}
	if d.o.User != "" {
		u.User = url.UserPassword(d.o.User, d.o.Password)
	}
	if d.o.TLS {
		u.RawQuery = url.Values{"tls_ca_file": {d.caFile}}.Encode()
	}
	return u.String()
}

// Cluster is a Redis Cluster of three primaries with one replica each.
type Cluster struct {
	*deployment
	// Nodes are all six servers, in start order.
	Nodes []*Node
}

// StartCluster starts six cluster-enabled servers, joins them with
// redis-cli --cluster create (three primaries, a replica each) and waits
// until every slot is served and every replica is in sync. The test is
// skipped when redis-server or redis-cli is missing.
func StartCluster(t testing.TB, o DeployOptions) *Cluster {
	t.Helper()
	c := &Cluster{deployment: newDeployment(t, o)}
	timeout := strconv.FormatInt(c.o.NodeTimeout.Milliseconds(), 10)
	for i := range 6 {
		c.Nodes = append(c.Nodes, c.start(fmt.Sprintf("node%d", i), func(port int, dir string) []string {
			args := append(c.dataArgs(port, dir), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
				"--cluster-node-timeout", timeout,
				// A replica takes over however long it was cut off: the
				// tests kill primaries moments after writing.
				"--cluster-replica-validity-factor", "0")
			if c.o.TLS {
				args = append(args, "--tls-cluster", "yes")
			}
			return args
		}))
	}
	args := append(c.cliArgs(), "--cluster", "create")
	for _, n := range c.Nodes {
		args = append(args, n.Addr())
	}
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitHealthy()
	return c
}

// URL is the cluster's redis+cluster:// URL, naming every node as a seed.
func (c *Cluster) URL() string {
	var hosts []string
	for _, n := range c.Nodes {
		hosts = append(hosts, n.Addr())
	}
	return c.urlOf("redis+cluster", hosts, "")
}

// Client returns a cluster client for inspecting and changing data,
// closed when the test ends. It waits patiently, unlike the service's.
func (c *Cluster) Client() *redis.ClusterClient {
	var addrs []string
	for _, n := range c.Nodes {
		if n.Running() {
			addrs = append(addrs, n.Addr())
		}
	}
	opts := &redis.ClusterOptions{Addrs: addrs, Username: c.o.User, Password: c.o.Password,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second}
	if c.o.TLS {
		opts.TLSConfig = c.tlsConfig()
	}
	cc := redis.NewClusterClient(opts)
	c.t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// PrimaryOf returns the running node that serves key's slot as primary.
func (c *Cluster) PrimaryOf(key string) *Node {
	c.t.Helper()
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		nc := c.nodeClient(n.Addr())
		slot, err := nc.ClusterKeySlot(context.Background(), key).Result()
		if err != nil {
			nc.Close()
			c.t.Fatalf("redistest: CLUSTER KEYSLOT: %v", err)
		}
		role, err := nc.Do(context.Background(), "ROLE").Slice()
		mine := err == nil && len(role) > 0 && role[0] == "master" && c.servesSlot(nc, int(slot))
		nc.Close()
		if mine {
			return n
		}
	}
	c.t.Fatalf("redistest: no running primary serves %q", key)
	return nil
}

// servesSlot reports whether the node nc talks to holds slot as primary,
// by its own view (CLUSTER NODES, "myself" line).
func (c *Cluster) servesSlot(nc *redis.Client, slot int) bool {
	out, err := nc.ClusterNodes(context.Background()).Result()
	if err != nil {
		return false
	}
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.Contains(f[2], "myself") {
			continue
		}
		for _, r := range f[8:] {
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 == nil && err2 == nil && a <= slot && slot <= b {
				return true
			}
		}
	}
	return false
}

// WaitHealthy waits until every running node says the cluster is ok with
// all 16384 slots served, and every running replica's link to its primary
// is up; it fails the test after settleWait.
func (c *Cluster) WaitHealthy() {
	c.t.Helper()
	var why error
	deadline := time.Now().Add(settleWait)
	for time.Now().Before(deadline) {
		if why = c.healthy(); why == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatalf("redistest: cluster not healthy after %s: %v", settleWait, why)
}

func (c *Cluster) healthy() error {
	ctx := context.Background()
	for _, n := range c.Nodes {
		if !n.Running() {
			continue
		}
		nc := c.nodeClient(n.Addr())
		info, err := nc.ClusterInfo(ctx).Result()
		if err == nil && (!strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384")) {
			err = fmt.Errorf("%s: cluster not ok yet", n.Addr())
		}
		var repl string
		if err == nil {
			repl, err = nc.Info(ctx, "replication").Result()
		}
		nc.Close()
		if err != nil {
			return err
		}
		if strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up") {
			return fmt.Errorf("%s: replica not in sync yet", n.Addr())
		}
	}
	return nil
}

// Sentinel is a primary with one replica, watched by three Sentinels.
type Sentinel struct {
	*deployment
	// Primary and Replica are the data nodes as started; after a
	// failover their roles are swapped.
	Primary, Replica *Node
	// Sentinels are the three Sentinel processes.
	Sentinels []*Node
}

// SentinelPrimaryName is the name the Sentinels know the primary by.
const SentinelPrimaryName = "agentapi-test"

// StartSentinel starts a primary, a replica of it and three Sentinels
// (quorum two), and waits until the Sentinels agree on the primary and
// know its replica. The test is skipped when redis-server or redis-cli is
// missing.
func StartSentinel(t testing.TB, o DeployOptions) *Sentinel {
	t.Helper()
	s := &Sentinel{deployment: newDeployment(t, o)}
	s.Primary = s.start("primary", s.dataArgs)
	s.Replica = s.start("replica", func(port int, dir string) []string {
		return append(s.dataArgs(port, dir), "--replicaof", "127.0.0.1", strconv.Itoa(s.Primary.Port))
	})
	for i := range 3 {
		s.Sentinels = append(s.Sentinels, s.startNode(fmt.Sprintf("sentinel%d", i), true, s.sentinelArgs))
	}
	s.waitSentinels(func(primary string, replicas int) error {
		if primary != s.Primary.Addr() || replicas < 1 {
			return fmt.Errorf("sentinels see primary %s with %d replicas", primary, replicas)
		}
		return nil
	})
	return s
}

// sentinelArgs writes a Sentinel's config file (Sentinel rewrites it, so
// it must be a file of its own) and returns the arguments to run it.
func (s *Sentinel) sentinelArgs(port int, dir string) []string {
	var conf strings.Builder
	fmt.Fprintf(&conf, "sentinel monitor %s 127.0.0.1 %d 2\n", SentinelPrimaryName, s.Primary.Port)
	fmt.Fprintf(&conf, "sentinel down-after-milliseconds %s %d\n", SentinelPrimaryName, s.o.NodeTimeout.Milliseconds())
	fmt.Fprintf(&conf, "sentinel failover-timeout %s %d\n", SentinelPrimaryName, 10*s.o.NodeTimeout.Milliseconds())
	if s.o.User != "" {
		fmt.Fprintf(&conf, "sentinel auth-user %s %s\nsentinel auth-pass %s %s\n", SentinelPrimaryName, s.o.User, SentinelPrimaryName, s.o.Password)
	}
	file := filepath.Join(dir, "sentinel.conf")
	if err := os.WriteFile(file, []byte(conf.String()), 0o600); err != nil {
		s.t.Fatal(err)
	}
	// The Sentinels themselves accept anyone: the URL's user is for the
	// data nodes (see package redisconn).
	args := []string{file, "--sentinel", "--bind", "127.0.0.1", "--dir", dir, "--daemonize", "no"}
	if s.o.TLS {
		args = append(args, "--port", "0", "--tls-port", strconv.Itoa(port),
			"--tls-cert-file", s.cert, "--tls-key-file", s.key, "--tls-ca-cert-file", s.caFile,
			"--tls-auth-clients", "no", "--tls-replication", "yes")
	} else {
		args = append(args, "--port", strconv.Itoa(port))
	}
	return args
}

// URL is the deployment's redis+sentinel:// URL, naming the Sentinels.
func (s *Sentinel) URL() string {
	var hosts []string
	for _, n := range s.Sentinels {
		hosts = append(hosts, n.Addr())
	}
	return s.urlOf("redis+sentinel", hosts, "/"+SentinelPrimaryName)
}

// Client returns a client of the current primary (found through the
// Sentinels) for inspecting and changing data, closed when the test ends.
func (s *Sentinel) Client() *redis.Client {
	var addrs []string
	for _, n := range s.Sentinels {
		addrs = append(addrs, n.Addr())
	}
	opts := &redis.FailoverOptions{MasterName: SentinelPrimaryName, SentinelAddrs: addrs,
		Username: s.o.User, Password: s.o.Password,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second}
	if s.o.TLS {
		opts.TLSConfig = s.tlsConfig()
	}
	c := redis.NewFailoverClient(opts)
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// WaitFailover waits until the Sentinels name the replica as primary (the
// old primary having been killed) and it accepts writes.
func (s *Sentinel) WaitFailover() {
	s.t.Helper()
	s.waitSentinels(func(primary string, _ int) error {
		if primary != s.Replica.Addr() {
			return fmt.Errorf("sentinels still name %s as primary", primary)
		}
		nc := s.nodeClient(s.Replica.Addr())
		defer nc.Close()
		role, err := nc.Do(context.Background(), "ROLE").Slice()
		if err != nil || len(role) == 0 || role[0] != "master" {
			return fmt.Errorf("%s is not primary yet (%v, %v)", s.Replica.Addr(), role, err)
		}
		return nil
	})
}

// waitSentinels waits until ok accepts what every running Sentinel says:
// the primary's address and how many replicas it has.
func (s *Sentinel) waitSentinels(ok func(primary string, replicas int) error) {
	s.t.Helper()
	var why error
	deadline := time.Now().Add(settleWait)
	for time.Now().Before(deadline) {
		why = nil
		for _, n := range s.Sentinels {
			if why = s.sentinelView(n, ok); why != nil {
				break
			}
		}
		if why == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("redistest: sentinels not settled after %s: %v", settleWait, why)
}

func (s *Sentinel) sentinelView(n *Node, ok func(string, int) error) error {
	sc := redis.NewSentinelClient(s.anonymous(n.Addr()))
	defer sc.Close()
	ctx := context.Background()
	addr, err := sc.GetMasterAddrByName(ctx, SentinelPrimaryName).Result()
	if err != nil {
		return fmt.Errorf("sentinel %s: %w", n.Addr(), err)
	}
	if len(addr) != 2 {
		return fmt.Errorf("sentinel %s: primary address %v", n.Addr(), addr)
	}
	replicas, err := sc.Replicas(ctx, SentinelPrimaryName).Result()
	if err != nil {
		return fmt.Errorf("sentinel %s: %w", n.Addr(), err)
	}
	live := 0
	for _, r := range replicas {
		if !strings.Contains(r["flags"], "down") && !strings.Contains(r["flags"], "disconnected") {
			live++
		}
	}
	return ok(net.JoinHostPort(addr[0], addr[1]), live)
}

// tlsConfig trusts the deployment's test CA.
func (d *deployment) tlsConfig() *tls.Config {
	d.t.Helper()
	b, err := os.ReadFile(d.caFile)
	if err != nil {
		d.t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(b) {
		d.t.Fatalf("redistest: %s holds no PEM certificate", d.caFile)
	}
	return &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// writeTestCerts makes a CA and a server certificate for 127.0.0.1 signed
// by it, writes them as PEM files under dir and returns their paths.
func writeTestCerts(t testing.TB, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "redistest CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", der), write("server-key.pem", "EC PRIVATE KEY", keyDER)
}

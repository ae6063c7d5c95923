package netguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// countingListener is a loopback listener that counts the connections it
// accepts: a refused dial must leave it at zero.
type countingListener struct {
	net.Listener
	accepts atomic.Int64
}

func listen(t *testing.T, network, addr string) *countingListener {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("cannot listen on %s %s: %v", network, addr, err)
	}
	cl := &countingListener{Listener: ln}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "reached")
	})}
	go srv.Serve(cl)
	t.Cleanup(func() { srv.Close() })
	return cl
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepts.Add(1)
	}
	return c, err
}

func (l *countingListener) port() string {
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

// fakeResolver answers from a table.
type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

func TestCheckClasses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		addr, want string
	}{
		{"127.0.0.1", "loopback"},
		{"127.255.0.9", "loopback"},
		{"::1", "loopback"},
		{"10.1.2.3", "private"},
		{"172.16.0.1", "private"},
		{"172.31.255.255", "private"},
		{"192.168.1.1", "private"},
		{"100.64.0.1", "shared (carrier-grade NAT)"},
		{"100.127.255.254", "shared (carrier-grade NAT)"},
		{"169.254.169.254", "metadata"},
		{"169.254.1.1", "link-local"},
		{"fe80::1", "link-local"},
		{"fd00:ec2::254", "metadata"},
		{"fc00::1", "unique-local"},
		{"fd12:3456::1", "unique-local"},
		{"0.0.0.0", "unspecified"},
		{"::", "unspecified"},
		{"224.0.0.1", "multicast"},
		{"ff02::1", "multicast"},
		{"255.255.255.255", "reserved"},
		{"240.0.0.1", "reserved"},
		{"::ffff:127.0.0.1", "loopback"},
		{"::ffff:10.0.0.1", "private"},
		{"::ffff:169.254.169.254", "metadata"},
		{"64:ff9b::a00:1", "private (embedded in IPv6)"},
		{"2002:7f00:1::", "loopback (embedded in IPv6)"},
		{"::7f00:1", "loopback (embedded in IPv6)"},
		{"fe80::1%eth0", "link-local"},
		// Public addresses pass.
		{"93.184.215.14", ""},
		{"8.8.8.8", ""},
		{"172.32.0.1", ""},
		{"100.128.0.1", ""},
		{"2606:4700::6810:84e5", ""},
		{"::ffff:8.8.8.8", ""},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			t.Parallel()
			if got := Check(netip.MustParseAddr(tt.addr)); got != tt.want {
				t.Errorf("Check(%s) = %q, want %q", tt.addr, got, tt.want)
			}
		})
	}
}

// TestRefusedWithoutConnecting dials forbidden addresses for real, with
// a listener on loopback counting accepts: each is refused with
// ErrBlocked and the listener never sees a connection.
func TestRefusedWithoutConnecting(t *testing.T) {
	t.Parallel()
	ln4 := listen(t, "tcp4", "127.0.0.1:0")
	tests := []struct {
		name     string
		url      string
		resolver fakeResolver
		reason   string
	}{
		{name: "loopback literal", url: "http://127.0.0.1:" + ln4.port() + "/", reason: "loopback"},
		{name: "loopback mapped", url: "http://[::ffff:127.0.0.1]:" + ln4.port() + "/", reason: "loopback"},
		{name: "loopback 127.1", url: "http://127.0.0.2:" + ln4.port() + "/", reason: "loopback"},
		{name: "unspecified", url: "http://0.0.0.0:" + ln4.port() + "/", reason: "unspecified"},
		{name: "name resolving to loopback", url: "http://rebind.example:" + ln4.port() + "/",
			resolver: fakeResolver{"rebind.example": addrs("127.0.0.1")}, reason: "loopback"},
		{name: "name with one loopback address among public ones", url: "http://mixed.example:" + ln4.port() + "/",
			resolver: fakeResolver{"mixed.example": addrs("93.184.215.14", "127.0.0.1")}, reason: "loopback"},
		{name: "localhost", url: "http://localhost:" + ln4.port() + "/",
			resolver: fakeResolver{"localhost": addrs("127.0.0.1", "::1")}, reason: "loopback"},
		{name: "metadata", url: "http://169.254.169.254/latest/meta-data/", reason: "metadata"},
		{name: "metadata v6", url: "http://[fd00:ec2::254]/", reason: "metadata"},
		{name: "private", url: "http://10.0.0.1/", reason: "private"},
		{name: "cgnat", url: "http://100.64.1.1/", reason: "shared (carrier-grade NAT)"},
		{name: "link-local v6", url: "http://[fe80::1]/", reason: "link-local"},
		{name: "unique-local", url: "http://[fd00::1]/", reason: "unique-local"},
		{name: "multicast", url: "http://224.0.0.251/", reason: "multicast"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var dials atomic.Int64
			var d net.Dialer
			c := NewClient(Options{AllowHTTP: true, Resolver: tt.resolver,
				Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
					dials.Add(1)
					return d.DialContext(ctx, network, addr)
				}})
			resp, err := c.Get(tt.url)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("GET %s succeeded", tt.url)
			}
			var be *BlockedError
			if !errors.Is(err, ErrBlocked) || !errors.As(err, &be) {
				t.Fatalf("GET %s: %v, want ErrBlocked", tt.url, err)
			}
			if be.Reason != tt.reason {
				t.Errorf("reason %q, want %q", be.Reason, tt.reason)
			}
			if n := dials.Load(); n != 0 {
				t.Errorf("%d dials made", n)
			}
		})
	}
	// Every subtest has finished (they are parallel within this test's
	// body); t.Cleanup order checks the listener afterwards.
	t.Cleanup(func() {
		if n := ln4.accepts.Load(); n != 0 {
			t.Errorf("the loopback listener accepted %d connections", n)
		}
	})
}

// TestDefaultDialerControlRefuses covers the second line: the default
// dialer's Control refuses a forbidden address even if it was reached
// without Guard.Dial's resolution.
func TestDefaultDialerControlRefuses(t *testing.T) {
	t.Parallel()
	ln := listen(t, "tcp4", "127.0.0.1:0")
	g := NewGuard(Options{})
	if _, err := g.dial(context.Background(), "tcp", "127.0.0.1:"+ln.port()); !errors.Is(err, ErrBlocked) {
		t.Fatalf("dial loopback through the default dialer: %v, want ErrBlocked", err)
	}
	if n := ln.accepts.Load(); n != 0 {
		t.Errorf("the listener accepted %d connections", n)
	}
}

// TestRedirectToPrivateRefused follows a public server's redirect to a
// loopback and a private address: the first hop is reached, the
// redirect's dial is refused, and the target listener sees nothing.
func TestRedirectToPrivateRefused(t *testing.T) {
	t.Parallel()
	target := listen(t, "tcp4", "127.0.0.1:0")
	public := netip.MustParseAddr("93.184.215.14")
	for _, loc := range []string{
		"http://127.0.0.1:" + target.port() + "/secret",
		"http://internal.example:" + target.port() + "/secret",
		"http://169.254.169.254/latest/meta-data/",
	} {
		t.Run(loc, func(t *testing.T) {
			t.Parallel()
			// srv answers every request with a redirect to loc.
			srv := &http.Server{Handler: http.RedirectHandler(loc, http.StatusFound)}
			ln, err := net.Listen("tcp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go srv.Serve(ln)
			t.Cleanup(func() { srv.Close() })
			var mu sync.Mutex
			var dialled []string
			var d net.Dialer
			c := NewClient(Options{AllowHTTP: true,
				Resolver: fakeResolver{"public.example": []netip.Addr{public}, "internal.example": addrs("127.0.0.1")},
				// The test's network: the public address is the
				// redirecting server; anything else is a real dial.
				Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
					mu.Lock()
					dialled = append(dialled, addr)
					mu.Unlock()
					if strings.HasPrefix(addr, public.String()+":") {
						return d.DialContext(ctx, network, ln.Addr().String())
					}
					return d.DialContext(ctx, network, addr)
				}})
			resp, err := c.Get("http://public.example/start")
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Fatalf("redirect followed: %d %q", resp.StatusCode, body)
			}
			if !errors.Is(err, ErrBlocked) {
				t.Fatalf("GET: %v, want ErrBlocked", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(dialled) != 1 || !strings.HasPrefix(dialled[0], public.String()+":") {
				t.Errorf("dials %v, want only the public address", dialled)
			}
		})
	}
	t.Cleanup(func() {
		if n := target.accepts.Load(); n != 0 {
			t.Errorf("the redirect's target accepted %d connections", n)
		}
	})
}

func TestSchemes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		url       string
		allowHTTP bool
		ok        bool
	}{
		{"https://mcp.example.com/mcp", false, true},
		{"HTTPS://mcp.example.com/mcp", false, true},
		{"http://mcp.example.com/mcp", false, false},
		{"http://mcp.example.com/mcp", true, true},
		{"ftp://mcp.example.com/", true, false},
		{"file:///etc/passwd", true, false},
		{"mcp.example.com/mcp", true, false},
		{"", true, false},
	}
	for _, tt := range tests {
		err := CheckURL(tt.url, tt.allowHTTP)
		if (err == nil) != tt.ok {
			t.Errorf("CheckURL(%q, %v) = %v, want ok=%v", tt.url, tt.allowHTTP, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrScheme) {
			t.Errorf("CheckURL(%q): %v does not wrap ErrScheme", tt.url, err)
		}
	}
}

// TestHTTPRefusedBeforeDialling: a client that allows only https refuses
// an http URL, and an https redirect to http, without dialling.
func TestHTTPRefusedBeforeDialling(t *testing.T) {
	t.Parallel()
	var dials atomic.Int64
	c := NewClient(Options{Resolver: fakeResolver{"public.example": addrs("93.184.215.14")},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials.Add(1)
			return nil, fmt.Errorf("no network in this test")
		}})
	_, err := c.Get("http://public.example/")
	if !errors.Is(err, ErrScheme) {
		t.Fatalf("GET http: %v, want ErrScheme", err)
	}
	if n := dials.Load(); n != 0 {
		t.Errorf("%d dials", n)
	}
}

// TestPublicAddressIsDialled: a public address passes the check and is
// dialled (here into the test's own network).
func TestPublicAddressIsDialled(t *testing.T) {
	t.Parallel()
	ln := listen(t, "tcp4", "127.0.0.1:0")
	var d net.Dialer
	c := NewClient(Options{AllowHTTP: true, Resolver: fakeResolver{"public.example": addrs("93.184.215.14")},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if addr != "93.184.215.14:80" {
				return nil, fmt.Errorf("unexpected dial of %s", addr)
			}
			return d.DialContext(ctx, network, ln.Addr().String())
		}})
	resp, err := c.Get("http://public.example/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "reached" || ln.accepts.Load() != 1 {
		t.Errorf("body %q, accepts %d", body, ln.accepts.Load())
	}
}

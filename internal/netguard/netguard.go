// Package netguard makes outbound HTTP requests to addresses a user chose
// (an MCP server_url given in a request) without letting them reach inside
// the deployment: loopback, private and carrier-grade NAT ranges,
// link-local (where cloud metadata services live), unique-local,
// unspecified, multicast and reserved addresses are refused.
//
// The check is made at connection time, on every address the host name
// resolves to, so neither DNS rebinding (a name that resolves to a public
// address when a URL is checked and to a private one when it is dialled)
// nor a redirect to a private address gets through: every dial, the first
// or a redirect's, goes through the same check. IPv4 addresses written in
// IPv6 forms (IPv4-mapped, IPv4-compatible, NAT64, 6to4) are checked as
// the IPv4 address they carry.
package netguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

// ErrBlocked is wrapped by every refusal to dial an address.
var ErrBlocked = errors.New("netguard: address not allowed")

// ErrScheme is wrapped by a refused URL scheme (http where only https is
// allowed, or anything else).
var ErrScheme = errors.New("netguard: scheme not allowed")

// BlockedError is a refused dial: the host asked for, the address it
// resolved to and the class of that address.
type BlockedError struct {
	Host   string
	Addr   netip.Addr
	Reason string
}

func (e *BlockedError) Error() string {
	if e.Host != "" && e.Host != e.Addr.String() {
		return fmt.Sprintf("netguard: %s resolves to %s, a %s address, which is not allowed", e.Host, e.Addr, e.Reason)
	}
	return fmt.Sprintf("netguard: %s is a %s address, which is not allowed", e.Addr, e.Reason)
}

func (e *BlockedError) Unwrap() error { return ErrBlocked }

// blockedRanges are the IPv4 and IPv6 ranges no user-chosen request may
// reach, with the class named in errors. Order matters only for the name:
// the first match is reported.
var blockedRanges = []struct {
	prefix netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("10.0.0.0/8"), "private"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared (carrier-grade NAT)"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.169.254/32"), "metadata"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("172.16.0.0/12"), "private"},
	{netip.MustParsePrefix("192.0.0.0/24"), "reserved"},
	{netip.MustParsePrefix("192.0.2.0/24"), "reserved"},
	{netip.MustParsePrefix("192.88.99.0/24"), "reserved"},
	{netip.MustParsePrefix("192.168.0.0/16"), "private"},
	{netip.MustParsePrefix("198.18.0.0/15"), "reserved"},
	{netip.MustParsePrefix("198.51.100.0/24"), "reserved"},
	{netip.MustParsePrefix("203.0.113.0/24"), "reserved"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "reserved"}, // local-use NAT64: where it leads is the operator's
	{netip.MustParsePrefix("100::/64"), "reserved"},
	{netip.MustParsePrefix("2001:db8::/32"), "reserved"},
	{netip.MustParsePrefix("fd00:ec2::254/128"), "metadata"},
	{netip.MustParsePrefix("fc00::/7"), "unique-local"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("fec0::/10"), "site-local"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// Embedded IPv4 forms: the IPv4 address in these IPv6 ranges is what a
// packet really reaches (through a translator), so it is checked too.
var (
	nat64     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFour = netip.MustParsePrefix("2002::/16")
	v4compat  = netip.MustParsePrefix("::/96")
)

// Check reports why a may not be dialled ("" when it may): the class of a
// refused address, such as "loopback" or "private".
func Check(a netip.Addr) string {
	if !a.IsValid() {
		return "invalid"
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		if v4, ok := embeddedV4(a); ok {
			if r := Check(v4); r != "" {
				return r + " (embedded in IPv6)"
			}
		}
	}
	for _, r := range blockedRanges {
		if r.prefix.Contains(a) {
			return r.reason
		}
	}
	return ""
}

// embeddedV4 is the IPv4 address an IPv6 address carries, in the forms
// that route to it.
func embeddedV4(a netip.Addr) (netip.Addr, bool) {
	b := a.As16()
	switch {
	case nat64.Contains(a), v4compat.Contains(a) && a != netip.IPv6Unspecified() && a != netip.IPv6Loopback():
		return netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]}), true
	case sixToFour.Contains(a):
		return netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]}), true
	}
	return netip.Addr{}, false
}

// Resolver looks host names up (net.Resolver has this method).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// DialFunc dials an address already checked ("ip:port").
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Options configure a guarded client. The zero value refuses plain http,
// resolves with the system resolver and dials with a net.Dialer.
type Options struct {
	// AllowHTTP lets plain http URLs through (an administrator's choice;
	// the address check applies all the same).
	AllowHTTP bool
	// Resolver resolves host names; nil is net.DefaultResolver.
	Resolver Resolver
	// Dial dials the checked address; nil is a net.Dialer whose Control
	// checks the address once more, at the socket.
	Dial DialFunc
	// Timeout bounds a whole request (0: 30 s); the caller's context may
	// bound it more.
	Timeout time.Duration
	// MaxRedirects is how many redirects a request follows (0: 5).
	MaxRedirects int
}

// Guard is the connection-time check: Dial refuses forbidden addresses
// before any connection is made.
type Guard struct {
	resolver Resolver
	dial     DialFunc
}

// NewGuard builds a Guard from o.
func NewGuard(o Options) *Guard {
	g := &Guard{resolver: o.Resolver, dial: o.Dial}
	if g.resolver == nil {
		g.resolver = net.DefaultResolver
	}
	if g.dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: controlCheck}
		g.dial = d.DialContext
	}
	return g
}

// controlCheck re-checks the address at the socket, after any resolution
// the dialer did itself: a second line behind Guard.Dial.
func controlCheck(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable address %q", ErrBlocked, address)
	}
	if r := Check(ap.Addr()); r != "" {
		return &BlockedError{Addr: ap.Addr().Unmap(), Reason: r}
	}
	return nil
}

// Dial resolves addr's host, refuses it if any address it resolves to is
// forbidden, and dials the resolved addresses in turn.
func (g *Guard) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("netguard: dial %q: %w", addr, err)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return nil, fmt.Errorf("netguard: dial %q: bad port", addr)
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		lookup := "ip"
		switch network {
		case "tcp4":
			lookup = "ip4"
		case "tcp6":
			lookup = "ip6"
		}
		ips, err = g.resolver.LookupNetIP(ctx, lookup, host)
		if err != nil {
			return nil, fmt.Errorf("netguard: resolve %q: %w", host, err)
		}
		if len(ips) == 0 {
			return nil, fmt.Errorf("netguard: resolve %q: no addresses", host)
		}
	}
	// Every address is checked before any is dialled: a name with one
	// private address among public ones is refused whole, so which one a
	// dial picks cannot matter.
	for _, ip := range ips {
		if r := Check(ip); r != "" {
			return nil, &BlockedError{Host: host, Addr: ip.Unmap().WithZone(""), Reason: r}
		}
	}
	var errs []error
	for _, ip := range ips {
		c, err := g.dial(ctx, network, netip.AddrPortFrom(ip.Unmap().WithZone(""), mustPort(port)).String())
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("netguard: dial %s: %w", host, errors.Join(errs...))
}

func mustPort(s string) uint16 {
	n, _ := strconv.ParseUint(s, 10, 16)
	return uint16(n)
}

// CheckURL refuses a URL whose scheme is not allowed (https, and http
// when allowHTTP). The address is checked when it is dialled.
func CheckURL(u string, allowHTTP bool) error {
	scheme, _, ok := cutScheme(u)
	if !ok {
		return fmt.Errorf("%w: %q has no scheme", ErrScheme, truncate(u))
	}
	switch scheme {
	case "https":
		return nil
	case "http":
		if allowHTTP {
			return nil
		}
		return fmt.Errorf("%w: plain http is not allowed; use https", ErrScheme)
	}
	return fmt.Errorf("%w: %q", ErrScheme, truncate(scheme))
}

func cutScheme(u string) (string, string, bool) {
	for i := 0; i < len(u); i++ {
		switch c := u[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case (c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') && i > 0:
		case c == ':' && i > 0:
			return lower(u[:i]), u[i+1:], true
		default:
			return "", "", false
		}
	}
	return "", "", false
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

// NewClient returns an *http.Client whose every connection goes through
// a Guard: no proxy (a proxy would dial for us, unchecked), the guard's
// dial for each new connection, and redirects re-checked for their
// scheme (their address is checked when dialled).
func NewClient(o Options) *http.Client {
	g := NewGuard(o)
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	maxRedirects := o.MaxRedirects
	if maxRedirects <= 0 {
		maxRedirects = 5
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           g.Dial,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: timeout,
	}
	allowHTTP := o.AllowHTTP
	return &http.Client{
		Transport: &schemeCheck{next: tr, allowHTTP: allowHTTP},
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return fmt.Errorf("netguard: stopped after %d redirects", maxRedirects)
			}
			return CheckURL(req.URL.String(), allowHTTP)
		},
	}
}

// schemeCheck refuses a request whose scheme is not allowed before it
// reaches the transport.
type schemeCheck struct {
	next      http.RoundTripper
	allowHTTP bool
}

func (s *schemeCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := CheckURL(req.URL.Scheme+":", s.allowHTTP); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	return s.next.RoundTrip(req)
}

// CheckHost resolves host and refuses it if any address it resolves to is
// forbidden, without dialling: an early, friendly refusal. The dial checks
// again (the answer may change between the two).
func (g *Guard) CheckHost(ctx context.Context, host string) error {
	if ip, err := netip.ParseAddr(host); err == nil {
		if r := Check(ip); r != "" {
			return &BlockedError{Host: host, Addr: ip.Unmap().WithZone(""), Reason: r}
		}
		return nil
	}
	ips, err := g.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("netguard: resolve %q: %w", host, err)
	}
	for _, ip := range ips {
		if r := Check(ip); r != "" {
			return &BlockedError{Host: host, Addr: ip.Unmap().WithZone(""), Reason: r}
		}
	}
	return nil
}

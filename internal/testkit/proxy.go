package testkit

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards loopback TCP connections to a server (Redis, PostgreSQL)
// and plays that server's failures, without touching the server itself,
// which other tests share:
//
//   - Freeze: connections stay open and nothing answers, as in a network
//     partition or a frozen server; new connections are accepted and held.
//   - Reset: every connection is reset (TCP RST), and so is each new one,
//     as when the server is killed while the port still answers.
//   - Refuse: nothing listens (new connections are refused, the open ones
//     closed), as when the server is stopped.
//   - Restore ends any of them: the proxy forwards again on its address,
//     and the connections a freeze held (which have lost their place in
//     the protocol) are closed.
//   - SetLatency: every reply reaches the client that much later, while
//     commands reach the server at once (a slow answer, not a lost one).
//   - CutAfter: the next command that contains a given string reaches the
//     server and runs, and then the connection dies before its reply
//     arrives, so the client cannot know that it ran.
//
// It can also count a Redis client's round trips (RecordTurns) and the
// replies that contain a string (WatchReplies), and it reports the
// goroutines and descriptors it holds, for a process that measures its
// own (the load harness).
//
// The proxy keeps its address for its whole life, so a client configured
// with it reconnects after Restore without being told anything.
type Proxy struct {
	t       TB // nil outside a test
	target  string
	address string

	mu       sync.Mutex
	ln       net.Listener // nil while refusing
	mode     proxyMode
	latency  time.Duration
	cut      []byte      // armed by CutAfter, nil when not armed
	cutReply chan []byte // gets the reply dropped by the cut
	links    map[*proxyLink]bool
	watches  []*replyWatch
	turns    map[string]int // nil until RecordTurns

	goroutines atomic.Int64
	fds        atomic.Int64
}

type proxyMode uint8

const (
	proxyUp proxyMode = iota
	proxyFrozen
	proxyReset
)

// proxyLink is one client connection and its connection to the server
// (nil for a connection held by a freeze from its start).
type proxyLink struct {
	client, server net.Conn
	// cut is set once a command meant to lose its reply went through.
	cut atomic.Bool
	// pending is what the client sent since the server last answered,
	// while turns are recorded.
	mu      sync.Mutex
	pending []byte
}

func (l *proxyLink) close(reset bool) {
	if reset {
		resetConn(l.client)
	} else {
		l.client.Close()
	}
	if l.server != nil {
		l.server.Close()
	}
}

// replyWatch counts the server's replies that contain needle.
type replyWatch struct {
	needle []byte
	n      atomic.Int64
}

// countedConn takes its descriptor off the proxy's count once, however
// often it is closed.
type countedConn struct {
	net.Conn
	once sync.Once
	fds  *atomic.Int64
}

func (c *countedConn) Close() error {
	err := net.ErrClosed
	c.once.Do(func() {
		c.fds.Add(-1)
		err = c.Conn.Close()
	})
	return err
}

// resetConn closes c with an RST, as a peer that went away would.
func resetConn(c net.Conn) {
	if cc, ok := c.(*countedConn); ok {
		if tc, ok := cc.Conn.(*net.TCPConn); ok {
			tc.SetLinger(0)
		}
	}
	c.Close()
}

// StartProxy listens on a free loopback port and forwards to target
// (host:port). Close stops it.
func StartProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("proxy: listen: %w", err)
	}
	p := &Proxy{target: target, address: ln.Addr().String(), ln: ln, links: map[*proxyLink]bool{}}
	p.spawn(func() { p.accept(ln) })
	return p, nil
}

// NewProxy is StartProxy for a test: it closes with the test, and a
// Restore that cannot listen again fails it.
func NewProxy(t TB, target string) *Proxy {
	t.Helper()
	p, err := StartProxy(target)
	fail(t, err)
	p.t = t
	t.Cleanup(p.Close)
	return p
}

// StartBehind starts a proxy to the server that a redis:// or postgres://
// URL names and returns that URL rewritten to connect through it.
func StartBehind(serverURL string) (*Proxy, string, error) {
	u, err := url.Parse(serverURL)
	if err != nil {
		return nil, "", fmt.Errorf("proxy: %w", err)
	}
	target := u.Host
	if u.Port() == "" {
		port := map[string]string{"redis": "6379", "rediss": "6379", "postgres": "5432", "postgresql": "5432"}[u.Scheme]
		if port == "" {
			return nil, "", fmt.Errorf("proxy: %s names no port", u.Redacted())
		}
		target = net.JoinHostPort(u.Hostname(), port)
	}
	p, err := StartProxy(target)
	if err != nil {
		return nil, "", err
	}
	u.Host = p.address
	return p, u.String(), nil
}

// Behind is StartBehind for a test, with NewProxy's cleanup.
func Behind(t TB, serverURL string) (string, *Proxy) {
	t.Helper()
	p, proxied, err := StartBehind(serverURL)
	fail(t, err)
	p.t = t
	t.Cleanup(p.Close)
	return proxied, p
}

// Addr is the proxy's address (host:port), the same for its whole life.
func (p *Proxy) Addr() string { return p.address }

// Goroutines is how many goroutines the proxy runs now.
func (p *Proxy) Goroutines() int64 { return p.goroutines.Load() }

// FDs is how many descriptors the proxy holds now for connections: the
// clients' connections to it and its connections to the server.
func (p *Proxy) FDs() int64 { return p.fds.Load() }

// Links is how many client connections the proxy holds now.
func (p *Proxy) Links() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.links)
}

func (p *Proxy) spawn(f func()) {
	p.goroutines.Add(1)
	go func() {
		defer p.goroutines.Add(-1)
		f()
	}()
}

func (p *Proxy) accept(ln net.Listener) {
	for {
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		p.fds.Add(1)
		c := &countedConn{Conn: raw, fds: &p.fds}
		p.mu.Lock()
		mode := p.mode
		if mode == proxyFrozen {
			// Held open, never answered; closed by Restore, Refuse or Close.
			p.links[&proxyLink{client: c}] = true
		}
		p.mu.Unlock()
		switch mode {
		case proxyFrozen:
			continue
		case proxyReset:
			resetConn(c)
			continue
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			resetConn(c)
			continue
		}
		p.fds.Add(1)
		l := &proxyLink{client: c, server: &countedConn{Conn: up, fds: &p.fds}}
		p.mu.Lock()
		switch {
		case p.ln != ln: // refused meanwhile
			p.mu.Unlock()
			l.close(false)
			return
		case p.mode == proxyReset: // reset meanwhile
			p.mu.Unlock()
			l.close(true)
			continue
		case p.mode == proxyFrozen: // frozen meanwhile: held, unanswered
			p.links[l] = true
			p.mu.Unlock()
			continue
		}
		p.links[l] = true
		p.mu.Unlock()
		p.spawn(func() { p.toServer(l) })
		p.spawn(func() { p.toClient(l) })
	}
}

func (p *Proxy) forget(l *proxyLink) {
	l.close(false)
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// toServer copies what the client sends, arming the link's cut when a
// chunk holds the needle of CutAfter.
func (p *Proxy) toServer(l *proxyLink) {
	defer p.forget(l)
	buf := make([]byte, 32<<10)
	for {
		n, err := l.client.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		frozen, recording := p.mode == proxyFrozen, p.turns != nil
		if p.cut != nil && bytes.Contains(buf[:n], p.cut) {
			p.cut = nil
			l.cut.Store(true)
		}
		p.mu.Unlock()
		if recording {
			l.mu.Lock()
			l.pending = append(l.pending, buf[:n]...)
			l.mu.Unlock()
		}
		if frozen {
			continue
		}
		if _, err := l.server.Write(buf[:n]); err != nil {
			return
		}
	}
}

// toClient copies what the server sends back, each chunk delivered
// latency after it arrived (a reader and a writer, so that latency does
// not add up over chunks that arrive close together).
func (p *Proxy) toClient(l *proxyLink) {
	type chunk struct {
		b   []byte
		due time.Time
	}
	chunks := make(chan chunk, 64)
	p.spawn(func() {
		defer close(chunks)
		buf := make([]byte, 32<<10)
		for {
			n, err := l.server.Read(buf)
			if err != nil {
				return
			}
			b := bytes.Clone(buf[:n])
			// The answer closes the client's turn, before the client sees
			// it and can start the next.
			l.mu.Lock()
			turn := l.pending
			l.pending = nil
			l.mu.Unlock()
			p.mu.Lock()
			if p.turns != nil && len(turn) > 0 {
				p.turns[strings.Join(commandNames(turn), " ")]++
			}
			frozen, latency, watches, cutReply := p.mode == proxyFrozen, p.latency, p.watches, p.cutReply
			p.mu.Unlock()
			if frozen {
				continue
			}
			for _, w := range watches {
				if bytes.Contains(b, w.needle) {
					w.n.Add(1)
				}
			}
			if l.cut.Load() {
				// The command ran; its answer is lost with the connection.
				select {
				case cutReply <- b:
				default:
				}
				l.close(false)
				return
			}
			chunks <- chunk{b, time.Now().Add(latency)}
		}
	})
	defer p.forget(l)
	for c := range chunks {
		if d := time.Until(c.due); d > 0 {
			time.Sleep(d)
		}
		if _, err := l.client.Write(c.b); err != nil {
			return
		}
	}
}

// Freeze stops all traffic through the proxy without closing anything:
// open connections stay open and unanswered, new ones are accepted and
// held.
func (p *Proxy) Freeze() {
	p.mu.Lock()
	p.mode = proxyFrozen
	p.mu.Unlock()
}

// Reset resets every open connection and, until Restore, each new one as
// soon as it is accepted.
func (p *Proxy) Reset() {
	p.mu.Lock()
	p.mode = proxyReset
	links := p.takeLinks()
	p.mu.Unlock()
	for _, l := range links {
		l.close(true)
	}
}

// takeLinks empties the link set and returns what it held; p.mu is held.
func (p *Proxy) takeLinks() []*proxyLink {
	links := make([]*proxyLink, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	clear(p.links)
	return links
}

// Refuse closes the listener and every connection: new connections are
// refused until Restore.
func (p *Proxy) Refuse() {
	p.mu.Lock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	links := p.takeLinks()
	p.mu.Unlock()
	for _, l := range links {
		l.close(false)
	}
}

// Restore ends a freeze, a reset or a refusal: the proxy listens on its
// address again and forwards. Connections held by a freeze are closed.
// The address was the proxy's a moment ago; should another process take
// it meanwhile, Restore retries for a while, then returns an error (and
// fails the test of NewProxy or Behind).
func (p *Proxy) Restore() error {
	p.mu.Lock()
	var held []*proxyLink
	if p.mode == proxyFrozen {
		held = p.takeLinks()
	}
	p.mode = proxyUp
	listening := p.ln != nil
	p.mu.Unlock()
	for _, l := range held {
		l.close(false)
	}
	if listening {
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err := net.Listen("tcp", p.address)
		if err == nil {
			p.mu.Lock()
			p.ln = ln
			p.mu.Unlock()
			p.spawn(func() { p.accept(ln) })
			return nil
		}
		if time.Now().After(deadline) {
			err = fmt.Errorf("proxy: listen on %s again: %w", p.address, err)
			if p.t != nil {
				p.t.Helper()
				p.t.Fatalf("%v", err)
			}
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Close stops the proxy for good: the listener and every connection close.
func (p *Proxy) Close() {
	p.Refuse()
}

// SetLatency delays every reply from the server by d from now on.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// CutAfter arms a one-shot fault: the next chunk a client sends that
// contains needle is forwarded, the server's reply to it is dropped and
// both connections are closed. The returned channel gets the dropped reply.
func (p *Proxy) CutAfter(needle string) <-chan []byte {
	ch := make(chan []byte, 1)
	p.mu.Lock()
	p.cut, p.cutReply = []byte(needle), ch
	p.mu.Unlock()
	return ch
}

// WatchReplies counts from now on the server's replies that contain needle.
func (p *Proxy) WatchReplies(needle string) *atomic.Int64 {
	w := &replyWatch{needle: []byte(needle)}
	p.mu.Lock()
	p.watches = append(p.watches, w)
	p.mu.Unlock()
	return &w.n
}

// RecordTurns starts counting round trips of a Redis client: a turn is
// what a client sends before the server answers, so a pipeline of two
// commands is one turn and two commands sent one after the other are two.
// Each turn is named by its commands, space-separated, lower-case
// ("evalsha get").
func (p *Proxy) RecordTurns() {
	p.mu.Lock()
	if p.turns == nil {
		p.turns = map[string]int{}
	}
	p.mu.Unlock()
}

// TakeTurns returns the turns recorded since the last take, leaving out
// those made only of commands in skip.
func (p *Proxy) TakeTurns(skip map[string]bool) map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for turn, n := range p.turns {
		if slices.ContainsFunc(strings.Fields(turn), func(c string) bool { return !skip[c] }) {
			out[turn] += n
		}
	}
	clear(p.turns)
	return out
}

// commandNames reads the names of the RESP commands in b (arrays of bulk
// strings, as Redis clients send them).
func commandNames(b []byte) []string {
	var names []string
	r := bufio.NewReader(bytes.NewReader(b))
	line := func() string {
		s, _ := r.ReadString('\n')
		return strings.TrimRight(s, "\r\n")
	}
	for {
		head := line()
		if !strings.HasPrefix(head, "*") {
			return names
		}
		n, _ := strconv.Atoi(head[1:])
		for i := range n {
			size, _ := strconv.Atoi(strings.TrimPrefix(line(), "$"))
			if size < 0 {
				return names
			}
			arg := make([]byte, size+2)
			if _, err := io.ReadFull(r, arg); err != nil {
				return names
			}
			if i == 0 {
				names = append(names, strings.ToLower(string(arg[:size])))
			}
		}
	}
}

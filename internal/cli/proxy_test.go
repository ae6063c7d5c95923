package cli

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tcpProxy forwards loopback connections to a server (Redis, PostgreSQL)
// and can play that server's failures:
//
//   - silence: connections stay open and nothing answers, as in a network
//     partition or a frozen server;
//   - refuse and restore: nothing listens (connections are refused, the
//     open ones are closed), then the same address accepts again, as when
//     the server is stopped and started while its data survives;
//   - latency: every reply reaches the client that much later, while
//     commands reach the server at once (a slow answer, not a lost one);
//   - cutAfter: the next command that contains a given string reaches the
//     server and runs, and then the connection dies before its reply
//     arrives, so the client cannot know that it ran.
//
// It can also count a Redis client's round trips (recordTurns).
//
// The proxy keeps its address for its whole life, so a client configured
// with it reconnects after restore without being told anything.
type tcpProxy struct {
	t       testing.TB
	target  string
	address string

	mu       sync.Mutex
	ln       net.Listener // nil while refusing
	silent   bool
	latency  time.Duration
	cut      []byte      // armed by cutAfter, nil when not armed
	cutReply chan []byte // gets the reply dropped by the cut
	links    map[*proxyLink]bool
	watches  []*replyWatch
	turns    map[string]int // nil until recordTurns
}

// proxyLink is one client connection and its connection to the server
// (nil for a connection held open in silence).
type proxyLink struct {
	client, server net.Conn
	// cut is set once a command meant to lose its reply went through.
	cut atomic.Bool
	// pending is what the client sent since the server last answered,
	// while turns are recorded.
	mu      sync.Mutex
	pending []byte
}

func (l *proxyLink) close() {
	l.client.Close()
	if l.server != nil {
		l.server.Close()
	}
}

// replyWatch counts the server's replies that contain needle.
type replyWatch struct {
	needle []byte
	n      atomic.Int64
}

func newTCPProxy(t testing.TB, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{t: t, target: target, address: ln.Addr().String(), ln: ln, links: map[*proxyLink]bool{}}
	go p.accept(ln)
	t.Cleanup(p.refuse)
	return p
}

func (p *tcpProxy) addr() string { return p.address }

func (p *tcpProxy) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		silent := p.silent
		if silent {
			// Held open, never answered; closed by refuse or cleanup.
			p.links[&proxyLink{client: c}] = true
		}
		p.mu.Unlock()
		if silent {
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		l := &proxyLink{client: c, server: up}
		p.mu.Lock()
		if p.ln != ln { // refused meanwhile
			p.mu.Unlock()
			l.close()
			return
		}
		p.links[l] = true
		p.mu.Unlock()
		go p.toServer(l)
		go p.toClient(l)
	}
}

func (p *tcpProxy) forget(l *proxyLink) {
	l.close()
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// toServer copies what the client sends, arming the link's cut when a
// chunk holds the needle of cutAfter.
func (p *tcpProxy) toServer(l *proxyLink) {
	defer p.forget(l)
	buf := make([]byte, 32<<10)
	for {
		n, err := l.client.Read(buf)
		if err != nil {
			return
		}
		p.mu.Lock()
		silent, recording := p.silent, p.turns != nil
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
		if silent {
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
func (p *tcpProxy) toClient(l *proxyLink) {
	type chunk struct {
		b   []byte
		due time.Time
	}
	chunks := make(chan chunk, 64)
	go func() {
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
			silent, latency, watches, cutReply := p.silent, p.latency, p.watches, p.cutReply
			p.mu.Unlock()
			if silent {
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
				l.close()
				return
			}
			chunks <- chunk{b, time.Now().Add(latency)}
		}
	}()
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

// silence stops all traffic through the proxy without closing anything.
func (p *tcpProxy) silence() {
	p.mu.Lock()
	p.silent = true
	p.mu.Unlock()
}

// refuse closes the listener and every connection: new connections are
// refused until restore.
func (p *tcpProxy) refuse() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for l := range p.links {
		l.close()
	}
	clear(p.links)
}

// restore ends refusal and silence: the proxy listens on its address again
// and forwards. The address was ours a moment ago; should another process
// take it meanwhile, restore retries for a while, then fails the test.
func (p *tcpProxy) restore() {
	p.t.Helper()
	p.mu.Lock()
	p.silent = false
	listening := p.ln != nil
	p.mu.Unlock()
	if listening {
		return
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ln, err := net.Listen("tcp", p.address)
		if err == nil {
			p.mu.Lock()
			p.ln = ln
			p.mu.Unlock()
			go p.accept(ln)
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("proxy: listen on %s again: %v", p.address, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// setLatency delays every reply from the server by d from now on.
func (p *tcpProxy) setLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// cutAfter arms a one-shot fault: the next chunk a client sends that
// contains needle is forwarded, the server's reply to it is dropped and
// both connections are closed. The returned channel gets the dropped reply.
func (p *tcpProxy) cutAfter(needle string) <-chan []byte {
	ch := make(chan []byte, 1)
	p.mu.Lock()
	p.cut, p.cutReply = []byte(needle), ch
	p.mu.Unlock()
	return ch
}

// watchReplies counts from now on the server's replies that contain needle.
func (p *tcpProxy) watchReplies(needle string) *atomic.Int64 {
	w := &replyWatch{needle: []byte(needle)}
	p.mu.Lock()
	p.watches = append(p.watches, w)
	p.mu.Unlock()
	return &w.n
}

// recordTurns starts counting round trips of a Redis client: a turn is
// what a client sends before the server answers, so a pipeline of two
// commands is one turn and two commands sent one after the other are two.
// Each turn is named by its commands, space-separated, lower-case
// ("evalsha get").
func (p *tcpProxy) recordTurns() {
	p.mu.Lock()
	if p.turns == nil {
		p.turns = map[string]int{}
	}
	p.mu.Unlock()
}

// takeTurns returns the turns recorded since the last take, leaving out
// those made only of commands in skip.
func (p *tcpProxy) takeTurns(skip map[string]bool) map[string]int {
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

// behindProxy starts a proxy to the server a postgres:// or redis:// URL
// names, and returns the URL rewritten to connect through it, with the
// proxy.
func behindProxy(t *testing.T, serverURL string) (string, *tcpProxy) {
	t.Helper()
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatal(err)
	}
	p := newTCPProxy(t, u.Host)
	u.Host = p.addr()
	return u.String(), p
}

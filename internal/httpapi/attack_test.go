package httpapi

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// The attack suite: hostile requests end to end. Token forgery (alg none,
// other algorithm or key, expiry, nbf, iss, aud, missing exp, edited claims,
// 100,000 dots, hostile kid values, key rotation) is covered where it is
// decided, in package auth (TestForgedTokensRefused, TestHostileKeyIDs,
// TestKeyRotation); refresh-as-access, replayed refresh and a logout seen by
// another replica in sessions_test.go; canaries in the log in
// TestLogsAreJSONAndCarryNoSecrets; CORS in TestCORS.

// TestMassAssignment: fields a client must not set (tier, role, id,
// disabled, user_id) are ignored wherever they are sent.
func TestMassAssignment(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	r := a.do("POST", "/auth/register", "", map[string]any{"email": "mal@example.com", "password": "password123",
		"tier": "pro", "role": "admin", "id": "chosen-id", "disabled": false, "created_at": "2000-01-01T00:00:00Z"})
	if r.status != 201 {
		t.Fatalf("register: %d %s", r.status, r.body)
	}
	m := r.json(t)
	if m["tier"] != "free" || m["id"] == "chosen-id" {
		t.Fatalf("register honoured client-set fields: %s", r.body)
	}
	u, err := a.store.UserByEmail(t.Context(), "mal@example.com")
	if err != nil || u.Tier != "free" || u.Role != "user" || u.ID == "chosen-id" {
		t.Fatalf("stored user %+v, %v", u, err)
	}
	tok := a.do("POST", "/auth/login", "", map[string]any{"email": "mal@example.com", "password": "password123", "tier": "pro", "role": "admin"}).json(t)["access_token"].(string)
	if c, _ := a.tokens.Verify(tok); c.Tier != "free" {
		t.Fatalf("login honoured a client-set tier: %+v", c)
	}
	if r := a.do("GET", "/admin/users", tok, nil); r.status != 403 {
		t.Fatalf("self-made admin reached /admin: %d", r.status)
	}
	victim := a.user("victim@example.com")
	vc, _ := a.tokens.Verify(victim)
	r = a.do("POST", "/chat", tok, map[string]any{"message": "hi", "user_id": vc.UserID, "tier": "pro"})
	if r.status != 200 {
		t.Fatalf("chat: %d %s", r.status, r.body)
	}
	// The spend went to the caller's free bucket, not the victim's.
	q := a.do("GET", "/chat/quota", tok, nil).json(t)
	if q["tier"] != "free" || q["remaining"].(float64) != 9 || q["user_id"] == vc.UserID {
		t.Fatalf("caller's quota after a chat naming another user: %v", q)
	}
	if v := a.do("GET", "/chat/quota", victim, nil).json(t); v["remaining"].(float64) != 10 {
		t.Fatalf("victim's quota was spent: %v", v)
	}
}

// TestOversizeBodiesEverywhere: every endpoint that reads a body stops at
// MAX_BODY_BYTES with 413, whoever calls.
func TestOversizeBodiesEverywhere(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{maxBody: 1024})
	tok := a.user("big@example.com")
	big := `{"message":"` + strings.Repeat("x", 4096) + `","refresh_token":"x","email":"a@b.co","password":"p"}`
	for _, path := range []string{"/auth/register", "/auth/login", "/auth/refresh", "/auth/logout", "/chat", "/v1/chat/completions", "/keys"} {
		if r := a.do("POST", path, tok, big); r.status != 413 {
			t.Errorf("POST %s with a 4 KiB body over a 1 KiB limit: %d %s", path, r.status, r.body)
		}
	}
}

// TestLogInjection: values an attacker controls (path, query, headers, JSON
// fields) cannot split a log line or forge one: every line stays one JSON
// object and no line carries the forged message.
func TestLogInjection(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	forged := `{"level":"ERROR","msg":"forged-line"}`
	a.do("GET", "/%0A"+strings.ReplaceAll(forged, `"`, "%22")+"?q=%0D%0A"+forged, "", nil)
	a.do("POST", "/auth/login", "", map[string]string{"email": "x@example.com\n" + forged, "password": "p\r\n" + forged})
	a.do("POST", "/auth/register", "", map[string]string{"email": "\u2028" + forged, "password": "password123"})
	a.do("GET", "/health", "", nil, "X-Request-ID", "id\u2028"+forged, "User-Agent", "ua "+forged)
	for i, line := range strings.Split(strings.TrimSpace(a.logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %d is not one JSON object: %q", i, line)
		}
		if m["msg"] == "forged-line" || m["level"] == "ERROR" {
			t.Fatalf("log line %d was forged: %q", i, line)
		}
	}
}

// TestSlowHeadersAreCut: many connections trickling their headers are cut
// at ReadHeaderTimeout, while ordinary requests are answered meanwhile.
func TestSlowHeadersAreCut(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	srv := NewServerWith("127.0.0.1:0", handleHealth(), slog.New(slog.DiscardHandler), ServerOptions{ReadHeaderTimeout: timeout})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()

	const slow = 100
	start := time.Now()
	var wg sync.WaitGroup
	cut := make(chan time.Duration, slow)
	for range slow {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		wg.Go(func() {
			// One header byte every 50ms: a header that would take
			// minutes to finish.
			if _, err := io.WriteString(c, "GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
				cut <- time.Since(start)
				return
			}
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			go func() {
				for {
					time.Sleep(50 * time.Millisecond)
					if _, err := c.Write([]byte("a")); err != nil {
						return
					}
				}
			}()
			// The server either closes the connection or answers 408 and
			// closes; both end the read before our 5s deadline.
			_, err := io.ReadAll(bufio.NewReader(c))
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Errorf("a slow-header connection was still open after 5s")
			}
			cut <- time.Since(start)
		})
	}
	// Meanwhile an ordinary client is served at once.
	client := &http.Client{Timeout: 2 * time.Second}
	for range 5 {
		resp, err := client.Get("http://" + addr + "/health")
		if err != nil {
			t.Fatalf("ordinary request during the attack: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("ordinary request during the attack: %d", resp.StatusCode)
		}
	}
	wg.Wait()
	close(cut)
	for d := range cut {
		if d < timeout-50*time.Millisecond {
			t.Fatalf("a slow connection was cut after %v, before ReadHeaderTimeout (%v)", d, timeout)
		}
	}
}

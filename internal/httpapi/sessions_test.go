package httpapi

import (
	"context"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/auth"
	"github.com/agentapi/agentapi/internal/redistest"
	"github.com/agentapi/agentapi/internal/revocation"
)

// login returns the access and refresh tokens of a fresh login.
func (a *testAPI) login(email string, hdr ...string) (access, refresh string) {
	a.t.Helper()
	r := a.do("POST", "/auth/login", "", map[string]string{"email": email, "password": "password123"}, hdr...)
	if r.status != 200 {
		a.t.Fatalf("login %s: %d %s", email, r.status, r.body)
	}
	m := r.json(a.t)
	rt, _ := m["refresh_token"].(string)
	if !auth.LooksLikeRefreshToken(rt) || m["refresh_expires_in"].(float64) <= 0 {
		a.t.Fatalf("login answer without a refresh token: %s", r.body)
	}
	return m["access_token"].(string), rt
}

func (a *testAPI) refresh(rt string) result {
	a.t.Helper()
	return a.do("POST", "/auth/refresh", "", map[string]string{"refresh_token": rt})
}

func TestRefreshRotationAndReuse(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	a.user("rot@example.com")
	_, rt1 := a.login("rot@example.com")

	r := a.refresh(rt1)
	if r.status != 200 {
		t.Fatalf("refresh: %d %s", r.status, r.body)
	}
	m := r.json(t)
	access2, rt2 := m["access_token"].(string), m["refresh_token"].(string)
	if rt2 == rt1 || !auth.LooksLikeRefreshToken(rt2) {
		t.Fatalf("refresh did not rotate the refresh token: %s", r.body)
	}
	if q := a.do("GET", "/chat/quota", access2, nil); q.status != 200 {
		t.Fatalf("refreshed access token refused: %d %s", q.status, q.body)
	}
	r = a.refresh(rt2)
	if r.status != 200 {
		t.Fatalf("second refresh: %d %s", r.status, r.body)
	}
	rt3 := r.json(t)["refresh_token"].(string)

	// rt1 was replaced: presenting it again is refused and ends the
	// session, so the newest refresh token (rt3) stops working too.
	if r := a.refresh(rt1); r.status != 401 {
		t.Fatalf("replayed refresh token: %d %s", r.status, r.body)
	}
	if r := a.refresh(rt3); r.status != 401 {
		t.Fatalf("newest refresh token after a replay: %d %s", r.status, r.body)
	}
	if !containsLog(a.logs.String(), "refresh token presented twice") {
		t.Error("a replayed refresh token is not logged")
	}
	// Another login of the same user is another session, untouched.
	_, other := a.login("rot@example.com")
	if r := a.refresh(other); r.status != 200 {
		t.Fatalf("another session after a replay elsewhere: %d %s", r.status, r.body)
	}
}

func TestTokenKindsAreNotInterchangeable(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	a.user("kinds@example.com")
	access, rt := a.login("kinds@example.com")
	if r := a.do("GET", "/chat/quota", rt, nil); r.status != 401 {
		t.Fatalf("refresh token as a bearer access token: %d %s", r.status, r.body)
	}
	if r := a.do("POST", "/auth/logout", rt, nil); r.status != 401 {
		t.Fatalf("refresh token as the bearer of a logout: %d %s", r.status, r.body)
	}
	for name, body := range map[string]any{
		"access token":     map[string]string{"refresh_token": access},
		"api key shape":    map[string]string{"refresh_token": "sk-" + rt[3:]},
		"unknown but well": map[string]string{"refresh_token": "rt_" + rt[4:] + "A"},
		"wrong type":       `{"refresh_token": 12}`,
	} {
		r := a.do("POST", "/auth/refresh", "", body)
		if r.status != 401 && r.status != 422 {
			t.Errorf("%s as a refresh token: %d %s", name, r.status, r.body)
		}
	}
	if r := a.do("POST", "/auth/refresh", "", `{}`); r.status != 422 {
		t.Errorf("refresh without a token: %d %s", r.status, r.body)
	}
	// The refresh token survived all of that.
	if r := a.refresh(rt); r.status != 200 {
		t.Fatalf("refresh after refused attempts: %d %s", r.status, r.body)
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{})
	a.user("out@example.com")
	access, rt := a.login("out@example.com")
	keep, keepRT := a.login("out@example.com")
	// Used first, so the verifier has it cached when the logout comes.
	if r := a.do("GET", "/chat/quota", access, nil); r.status != 200 {
		t.Fatal(r)
	}
	if r := a.do("POST", "/auth/logout", access, nil); r.status != 204 {
		t.Fatalf("logout: %d %s", r.status, r.body)
	}
	if r := a.do("GET", "/chat/quota", access, nil); r.status != 401 {
		t.Fatalf("access token after logout: %d %s", r.status, r.body)
	}
	if r := a.refresh(rt); r.status != 401 {
		t.Fatalf("refresh token of a logged-out session: %d %s", r.status, r.body)
	}
	if r := a.do("POST", "/auth/logout", access, nil); r.status != 401 {
		t.Fatalf("second logout with the same token: %d %s", r.status, r.body)
	}
	// The other session lives on.
	if r := a.do("GET", "/chat/quota", keep, nil); r.status != 200 {
		t.Fatalf("other session's access token: %d %s", r.status, r.body)
	}
	// Logout naming a refresh token ends that session too; a foreign or
	// malformed one is ignored without saying so.
	third, thirdRT := a.login("out@example.com")
	if r := a.do("POST", "/auth/logout", third, map[string]string{"refresh_token": keepRT}); r.status != 204 {
		t.Fatalf("logout with a refresh token: %d %s", r.status, r.body)
	}
	if r := a.refresh(keepRT); r.status != 401 {
		t.Fatalf("refresh token named at logout: %d %s", r.status, r.body)
	}
	if r := a.refresh(thirdRT); r.status != 401 {
		t.Fatalf("refresh token of the logged-out session: %d %s", r.status, r.body)
	}
	a.user("other@example.com")
	otherAccess, otherRT := a.login("other@example.com")
	mine, _ := a.login("out@example.com")
	if r := a.do("POST", "/auth/logout", mine, map[string]string{"refresh_token": otherRT}); r.status != 204 {
		t.Fatalf("logout naming another user's refresh token: %d %s", r.status, r.body)
	}
	if r := a.refresh(otherRT); r.status != 200 {
		t.Fatalf("another user's session was ended by my logout: %d %s", r.status, r.body)
	}
	if r := a.do("GET", "/chat/quota", otherAccess, nil); r.status != 200 {
		t.Fatal(r)
	}
}

// TestLogoutReachesOtherReplica: two replicas share a database and a Redis;
// a token logged out on one is refused by the other within a second, with no
// Redis call on the request path (the other replica's list is fed by its
// background poll).
func TestLogoutReachesOtherReplica(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t)
	key := redistest.Prefix(t) + "revoked"
	replica := func(o testOptions) *testAPI {
		deny := auth.NewDenyList(nil)
		list, err := revocation.New(deny, revocation.Options{Redis: rdb, Key: key, MaxTokenLifetime: time.Hour, PollInterval: 50 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		go list.Run(ctx)
		o.denyList, o.revoker = deny, list
		return newTestAPI(t, o)
	}
	a := replica(testOptions{})
	// Same database and signing key: b is another replica of one deployment.
	b := replica(testOptions{store: a.store})
	a.user("repl@example.com")
	access, _ := a.login("repl@example.com")
	if r := b.do("GET", "/chat/quota", access, nil); r.status != 200 {
		t.Fatalf("replica b before logout: %d %s", r.status, r.body)
	}
	if r := a.do("POST", "/auth/logout", access, nil); r.status != 204 {
		t.Fatal(r)
	}
	deadline := time.Now().Add(time.Second)
	for {
		r := b.do("GET", "/chat/quota", access, nil)
		if r.status == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica b still accepts the logged-out token after a second: %d", r.status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLoginThrottle: guesses are slowed per account and address (429 with
// Retry-After), the throttle treats unknown accounts alike, and guesses
// spread over many addresses cannot lock the owner out of an address the
// owner has logged in from.
func TestLoginThrottle(t *testing.T) {
	t.Parallel()
	a := newTestAPI(t, testOptions{loginLimits: LoginLimits{Attempts: 2,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("::1/128")}}})
	a.user("owner@example.com")
	from := func(addr string) []string { return []string{"X-Forwarded-For", addr} }
	wrong := func(email, addr string) result {
		return a.do("POST", "/auth/login", "", map[string]string{"email": email, "password": "wrong-password"}, from(addr)...)
	}
	// The owner logs in once from home (and the test's register+login
	// above came from 127.0.0.1, which is not "home").
	a.login("owner@example.com", from("198.51.100.7")...)

	// One address, one account: two attempts, then 429.
	for i := range 2 {
		if r := wrong("owner@example.com", "203.0.113.1"); r.status != 401 {
			t.Fatalf("attempt %d: %d %s", i+1, r.status, r.body)
		}
	}
	r := wrong("owner@example.com", "203.0.113.1")
	if r.status != 429 {
		t.Fatalf("third attempt from one address: %d %s", r.status, r.body)
	}
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
		t.Fatalf("429 without a usable Retry-After: %q", r.header.Get("Retry-After"))
	}
	// An unknown account is throttled the same way (no enumeration).
	for range 2 {
		wrong("nobody@example.com", "203.0.113.2")
	}
	if r := wrong("nobody@example.com", "203.0.113.2"); r.status != 429 {
		t.Fatalf("unknown account, third attempt: %d", r.status)
	}
	// Many addresses against one account: the account-wide bucket (10x)
	// runs dry and new addresses are refused...
	limited := false
	for i := range 30 {
		if r := wrong("owner@example.com", "192.0.2."+strconv.Itoa(i+1)); r.status == 429 {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("30 addresses guessed one account without a 429")
	}
	// ...but the owner, from the address they logged in from, gets in.
	if r := a.do("POST", "/auth/login", "", map[string]string{"email": "owner@example.com", "password": "password123"}, from("198.51.100.7")...); r.status != 200 {
		t.Fatalf("owner locked out by a distributed attack: %d %s", r.status, r.body)
	}
	// A forged X-Forwarded-For from an untrusted peer is not believed: the
	// hop added by our trusted proxy (the right-most) is the client.
	if got := clientAddr(&http.Request{RemoteAddr: "127.0.0.1:5000", Header: http.Header{"X-Forwarded-For": {"1.2.3.4, 203.0.113.9"}}},
		a.loginTrusted()); got != netip.MustParseAddr("203.0.113.9") {
		t.Errorf("client behind a trusted proxy = %v", got)
	}
	if got := clientAddr(&http.Request{RemoteAddr: "203.0.113.5:5000", Header: http.Header{"X-Forwarded-For": {"1.2.3.4"}}},
		a.loginTrusted()); got != netip.MustParseAddr("203.0.113.5") {
		t.Errorf("client claiming an address through an untrusted peer = %v", got)
	}
	if got := addressKey(netip.MustParseAddr("2001:db8:1:2:3:4:5:6")); got != "2001:db8:1:2::/64" {
		t.Errorf("IPv6 address key = %q, want its /64", got)
	}
}

func (a *testAPI) loginTrusted() []netip.Prefix {
	return []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
}

func containsLog(logs, msg string) bool {
	return strings.Contains(logs, `"msg":"`+msg)
}

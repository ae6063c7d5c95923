package console

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// fakeSessions stands in for /auth's handlers: login answers a token pair,
// refresh rotates rt_1 to rt_2 and refuses anything else, logout records
// the refresh token it was given.
type fakeSessions struct {
	loggedOut string
	authz     string
}

func (f *fakeSessions) sessions() Sessions {
	pair := func(w http.ResponseWriter, rt string) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"access_token":"at","token_type":"bearer","expires_in":60,"refresh_token":"`+rt+`","refresh_expires_in":3600}`)
	}
	return Sessions{
		Login: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var in struct{ Email, Password string }
			json.NewDecoder(r.Body).Decode(&in)
			if in.Password != "right-password" {
				w.Header().Set("Retry-After", "7")
				w.WriteHeader(http.StatusTooManyRequests)
				io.WriteString(w, `{"error":"Too many login attempts; try again later","path":"/auth/login"}`)
				return
			}
			pair(w, "rt_1")
		}),
		Refresh: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var in struct {
				RefreshToken string `json:"refresh_token"`
			}
			json.NewDecoder(r.Body).Decode(&in)
			if in.RefreshToken != "rt_1" {
				w.WriteHeader(http.StatusUnauthorized)
				io.WriteString(w, `{"error":"Invalid refresh token"}`)
				return
			}
			pair(w, "rt_2")
		}),
		Logout: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var in struct {
				RefreshToken string `json:"refresh_token"`
			}
			json.NewDecoder(r.Body).Decode(&in)
			f.loggedOut, f.authz = in.RefreshToken, r.Header.Get("Authorization")
			w.WriteHeader(http.StatusNoContent)
		}),
	}
}

func newTestConsole(t *testing.T) (*Console, *fakeSessions) {
	t.Helper()
	f := &fakeSessions{}
	c, err := New(slog.New(slog.DiscardHandler), f.sessions())
	if err != nil {
		t.Fatal(err)
	}
	return c, f
}

func refreshCookie(t *testing.T, resp *http.Response) *http.Cookie {
	t.Helper()
	for _, c := range resp.Cookies() {
		if c.Name == RefreshCookie {
			return c
		}
	}
	return nil
}

func TestSessionEndpoints(t *testing.T) {
	t.Parallel()
	c, f := newTestConsole(t)

	t.Run("sign-in moves the refresh token into a strict cookie", func(t *testing.T) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/console/api/session", strings.NewReader(`{"email":"a@b.co","password":"right-password"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		c.SignIn().ServeHTTP(rec, req)
		resp := rec.Result()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, rec.Body)
		}
		if strings.Contains(rec.Body.String(), "rt_1") || !strings.Contains(rec.Body.String(), `"access_token":"at"`) {
			t.Errorf("body %s: want the access token and no refresh token", rec.Body)
		}
		ck := refreshCookie(t, resp)
		if ck == nil || ck.Value != "rt_1" || !ck.HttpOnly || !ck.Secure || ck.SameSite != http.SameSiteStrictMode || ck.Path != CookiePath || ck.MaxAge != 3600 {
			t.Errorf("cookie %+v: want rt_1, HttpOnly, Secure, SameSite=Strict, Path=%s, Max-Age=3600", ck, CookiePath)
		}
	})

	t.Run("a refused sign-in is relayed with Retry-After and sets nothing", func(t *testing.T) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/console/api/session", strings.NewReader(`{"email":"a@b.co","password":"wrong"}`))
		req.Header.Set("Content-Type", "application/json")
		c.SignIn().ServeHTTP(rec, req)
		if rec.Code != 429 || rec.Header().Get("Retry-After") != "7" || refreshCookie(t, rec.Result()) != nil {
			t.Errorf("got %d Retry-After %q cookies %v", rec.Code, rec.Header().Get("Retry-After"), rec.Result().Cookies())
		}
	})

	t.Run("cross-site and non-JSON requests are refused", func(t *testing.T) {
		cases := []struct {
			name    string
			h       http.Handler
			method  string
			path    string
			headers map[string]string
			want    int
		}{
			{"sign-in from another site", c.SignIn(), "POST", "/console/api/session", map[string]string{"Sec-Fetch-Site": "cross-site", "Content-Type": "application/json"}, 403},
			{"sign-in from a sibling subdomain", c.SignIn(), "POST", "/console/api/session", map[string]string{"Sec-Fetch-Site": "same-site", "Content-Type": "application/json"}, 403},
			{"sign-in as a form post", c.SignIn(), "POST", "/console/api/session", map[string]string{"Content-Type": "text/plain"}, 415},
			{"refresh from another origin", c.Refresh(), "POST", "/console/api/session/refresh", map[string]string{"Origin": "https://evil.example", "Cookie": RefreshCookie + "=rt_1"}, 403},
			{"sign-out from another site", c.SignOut(), "DELETE", "/console/api/session", map[string]string{"Sec-Fetch-Site": "cross-site", "Cookie": RefreshCookie + "=rt_1"}, 403},
		}
		for _, tc := range cases {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(tc.method, "http://console.example"+tc.path, strings.NewReader(`{"email":"a@b.co","password":"right-password"}`))
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			tc.h.ServeHTTP(rec, req)
			if rec.Code != tc.want || refreshCookie(t, rec.Result()) != nil {
				t.Errorf("%s: got %d (cookies %v), want %d and no cookie", tc.name, rec.Code, rec.Result().Cookies(), tc.want)
			}
		}
	})

	t.Run("refresh rotates the cookie; a refused token clears it", func(t *testing.T) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "http://console.example/console/api/session/refresh", nil)
		req.Header.Set("Origin", "http://console.example")
		req.AddCookie(&http.Cookie{Name: RefreshCookie, Value: "rt_1"})
		c.Refresh().ServeHTTP(rec, req)
		if ck := refreshCookie(t, rec.Result()); rec.Code != 200 || ck == nil || ck.Value != "rt_2" || strings.Contains(rec.Body.String(), "rt_2") {
			t.Errorf("got %d %s cookie %+v, want 200 and rt_2 in the cookie only", rec.Code, rec.Body, ck)
		}

		// Behind a proxy that rewrites Host, the browser's own
		// same-origin verdict is what counts.
		rec = httptest.NewRecorder()
		req = httptest.NewRequest("POST", "http://backend:8000/console/api/session/refresh", nil)
		req.Header.Set("Origin", "https://console.example")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		req.AddCookie(&http.Cookie{Name: RefreshCookie, Value: "rt_1"})
		c.Refresh().ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Errorf("same-origin behind a Host-rewriting proxy: got %d, want 200", rec.Code)
		}

		rec = httptest.NewRecorder()
		req = httptest.NewRequest("POST", "/console/api/session/refresh", nil)
		req.AddCookie(&http.Cookie{Name: RefreshCookie, Value: "rt_replaced"})
		c.Refresh().ServeHTTP(rec, req)
		if ck := refreshCookie(t, rec.Result()); rec.Code != 401 || ck == nil || ck.MaxAge >= 0 {
			t.Errorf("got %d cookie %+v, want 401 and the cookie cleared", rec.Code, ck)
		}

		rec = httptest.NewRecorder()
		c.Refresh().ServeHTTP(rec, httptest.NewRequest("POST", "/console/api/session/refresh", nil))
		if rec.Code != 401 {
			t.Errorf("no cookie: got %d, want 401", rec.Code)
		}
	})

	t.Run("sign-out hands logout the cookie's token and clears the cookie", func(t *testing.T) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("DELETE", "/console/api/session", nil)
		req.Header.Set("Authorization", "Bearer at")
		req.AddCookie(&http.Cookie{Name: RefreshCookie, Value: "rt_2"})
		c.SignOut().ServeHTTP(rec, req)
		if ck := refreshCookie(t, rec.Result()); rec.Code != 204 || ck == nil || ck.MaxAge >= 0 {
			t.Errorf("got %d cookie %+v, want 204 and the cookie cleared", rec.Code, ck)
		}
		if f.loggedOut != "rt_2" || f.authz != "Bearer at" {
			t.Errorf("logout saw refresh token %q and Authorization %q", f.loggedOut, f.authz)
		}
	})
}

func TestPagesAndAssets(t *testing.T) {
	t.Parallel()
	c, _ := newTestConsole(t)
	mux := http.NewServeMux()
	mux.Handle("GET /console/{$}", c.Page())
	mux.Handle("GET /console/{page}", c.Page())
	mux.Handle("GET /console/assets/{file}", c.Asset())

	for _, p := range pages {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/console/"+p.name, nil))
		body := rec.Body.String()
		if rec.Code != 200 || rec.Header().Get("Content-Security-Policy") != ContentSecurityPolicy || rec.Header().Get("X-Frame-Options") != "DENY" {
			t.Errorf("/console/%s: %d, headers %v", p.name, rec.Code, rec.Header())
		}
		// The CSP would refuse inline script and style; the pages must
		// not depend on any.
		for _, bad := range []string{"<script>", "style=", "<style", "onclick=", "javascript:"} {
			if strings.Contains(body, bad) {
				t.Errorf("/console/%s contains %q", p.name, bad)
			}
		}
		if !strings.Contains(body, "<title>"+p.title) || !strings.Contains(body, `href="/docs"`) {
			t.Errorf("/console/%s: no title %q or no link to /docs", p.name, p.title)
		}
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/console/nope", nil))
	if rec.Code != 404 {
		t.Errorf("/console/nope: %d, want 404", rec.Code)
	}

	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/console/assets/core.js", nil))
	etag := rec.Header().Get("ETag")
	if rec.Code != 200 || !strings.HasPrefix(rec.Header().Get("Content-Type"), "text/javascript") || etag == "" {
		t.Fatalf("core.js: %d %v", rec.Code, rec.Header())
	}
	req := httptest.NewRequest("GET", "/console/assets/core.js", nil)
	req.Header.Set("If-None-Match", etag)
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, req)
	if rec.Code != 304 {
		t.Errorf("revalidation: %d, want 304", rec.Code)
	}
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/console/assets/..%2fconsole.go", nil))
	if rec.Code != 404 {
		t.Errorf("an escaping asset path: %d, want 404", rec.Code)
	}
}

package console

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// RefreshCookie holds the console's refresh token. The __Secure- prefix
// makes browsers refuse it unless it is Secure; HttpOnly keeps it from
// script; SameSite=Strict keeps it off requests started by other sites;
// and its path limits it to the session endpoints, so no other request
// (API calls included) ever carries it.
const RefreshCookie = "__Secure-agentapi-refresh"

// CookiePath is the one path prefix the refresh cookie is sent to.
const CookiePath = "/console/api/session"

// maxInnerAnswer bounds the answer of a wrapped session handler; theirs are
// a few hundred bytes.
const maxInnerAnswer = 64 << 10

// tokenAnswer is the part of a login or refresh answer the console reads.
type tokenAnswer struct {
	AccessToken      string `json:"access_token"`
	TokenType        string `json:"token_type"`
	ExpiresIn        int64  `json:"expires_in"`
	RefreshToken     string `json:"refresh_token"`
	RefreshExpiresIn int64  `json:"refresh_expires_in"`
}

// consoleSession is what the console's script receives: the access token
// only. Persistent says whether a refresh cookie was set (false when the
// service runs without refresh tokens: the session then ends with the page).
type consoleSession struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Persistent  bool   `json:"persistent"`
}

// recorded is a wrapped handler's answer, held so that the refresh token
// can be moved from the body into a cookie.
type recorded struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (rec *recorded) Header() http.Header { return rec.header }
func (rec *recorded) WriteHeader(code int) {
	if rec.status == 0 {
		rec.status = code
	}
}
func (rec *recorded) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if rec.body.Len()+len(b) > maxInnerAnswer {
		return 0, io.ErrShortWrite
	}
	return rec.body.Write(b)
}

// call runs a wrapped handler on r with body as its JSON body.
func call(h http.Handler, r *http.Request, body []byte) *recorded {
	in := r.Clone(r.Context())
	in.Body = io.NopCloser(bytes.NewReader(body))
	in.ContentLength = int64(len(body))
	in.Header.Set("Content-Type", "application/json")
	rec := &recorded{header: http.Header{}}
	h.ServeHTTP(rec, in)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec
}

// relay sends a wrapped handler's refusal as it is (status, headers such as
// Retry-After, body).
func relay(w http.ResponseWriter, rec *recorded) {
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.status)
	w.Write(rec.body.Bytes())
}

// writeProblem answers in the service's error shape.
func writeProblem(w http.ResponseWriter, r *http.Request, status int, msg string) {
	b, _ := json.Marshal(struct {
		Error string `json:"error"`
		Path  string `json:"path"`
	}{msg, r.URL.Path})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// sameOrigin refuses requests that a browser says come from another site:
// together with SameSite=Strict this keeps other sites (and same-site
// neighbours such as other subdomains, which SameSite does not separate)
// from signing a visitor in or out, or from reading a fresh access token.
// Sec-Fetch-Site is the browser's own verdict and survives proxies that
// rewrite Host, so it decides when present; browsers too old to send it
// have their Origin compared with Host. Clients that are not browsers send
// neither and are not a CSRF vector.
func sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" {
		return s == "same-origin"
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return false
		}
	}
	return true
}

func setRefreshCookie(w http.ResponseWriter, token string, maxAge int64) {
	http.SetCookie(w, &http.Cookie{Name: RefreshCookie, Value: token, Path: CookiePath,
		MaxAge: int(maxAge), Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

func clearRefreshCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: RefreshCookie, Value: "", Path: CookiePath,
		MaxAge: -1, Expires: time.Unix(0, 0), Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// answerSession moves the refresh token of a login or refresh answer into
// the cookie and gives script the access token only.
func answerSession(w http.ResponseWriter, r *http.Request, rec *recorded) {
	var t tokenAnswer
	if err := json.Unmarshal(rec.body.Bytes(), &t); err != nil || t.AccessToken == "" {
		writeProblem(w, r, http.StatusInternalServerError, "Internal server error")
		return
	}
	out := consoleSession{AccessToken: t.AccessToken, TokenType: t.TokenType, ExpiresIn: t.ExpiresIn}
	if t.RefreshToken != "" {
		setRefreshCookie(w, t.RefreshToken, t.RefreshExpiresIn)
		out.Persistent = true
	}
	b, _ := json.Marshal(out)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(http.StatusOK)
	w.Write(append(b, '\n'))
}

// SignIn is POST /console/api/session: the body of POST /auth/login, and
// the same checks and throttle; the refresh token goes into the cookie.
func (c *Console) SignIn() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !sameOrigin(r) {
			writeProblem(w, r, http.StatusForbidden, "Cross-site request refused")
			return
		}
		if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
			writeProblem(w, r, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
			return
		}
		body, err := io.ReadAll(r.Body) // bounded by the server's body limit
		if err != nil {
			writeProblem(w, r, http.StatusRequestEntityTooLarge, "Request body too large")
			return
		}
		rec := call(c.sessions.Login, r, body)
		if rec.status != http.StatusOK {
			relay(w, rec)
			return
		}
		answerSession(w, r, rec)
	})
}

// Refresh is POST /console/api/session/refresh: the cookie's refresh token
// is exchanged as by POST /auth/refresh; the successor replaces it in the
// cookie. A refused token clears the cookie.
func (c *Console) Refresh() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !sameOrigin(r) {
			writeProblem(w, r, http.StatusForbidden, "Cross-site request refused")
			return
		}
		ck, err := r.Cookie(RefreshCookie)
		if err != nil || ck.Value == "" {
			writeProblem(w, r, http.StatusUnauthorized, "Not signed in")
			return
		}
		body, _ := json.Marshal(map[string]string{"refresh_token": ck.Value})
		rec := call(c.sessions.Refresh, r, body)
		if rec.status != http.StatusOK {
			if rec.status == http.StatusUnauthorized || rec.status == http.StatusNotFound {
				clearRefreshCookie(w)
			}
			relay(w, rec)
			return
		}
		answerSession(w, r, rec)
	})
}

// SignOut is DELETE /console/api/session with the access token in
// Authorization: it ends the session as POST /auth/logout does (the access
// token, and the refresh tokens of its session and of the cookie's) and
// clears the cookie. The cookie alone cannot sign anyone out.
func (c *Console) SignOut() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !sameOrigin(r) {
			writeProblem(w, r, http.StatusForbidden, "Cross-site request refused")
			return
		}
		body := []byte("{}")
		if ck, err := r.Cookie(RefreshCookie); err == nil && ck.Value != "" {
			body, _ = json.Marshal(map[string]string{"refresh_token": ck.Value})
		}
		rec := call(c.sessions.Logout, r, body)
		clearRefreshCookie(w)
		if rec.status != http.StatusNoContent {
			relay(w, rec)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
}

// Package console is the web console served at /console: server-rendered
// pages (html/template) whose few scripts call the service's own JSON API
// with an access token kept in memory, and the session endpoints that hold
// the refresh token in an HttpOnly cookie instead of handing it to script.
//
// Every page, script and style sheet is embedded in the binary, so the
// console works offline and needs no build step. Pages are sent with a
// strict Content-Security-Policy: scripts and styles only from this origin,
// nothing inline, no eval, never framed.
package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed templates/*.html assets/*
var files embed.FS

// ContentSecurityPolicy is sent with every console page. It names 'self'
// for everything the pages use and nothing else: no inline script or
// style, no eval, no plug-ins, no framing by any site.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Sessions are the service's own session handlers, which the console's
// session endpoints call so that a console sign-in is the same sign-in as
// POST /auth/login (same throttle, same refresh-token families).
type Sessions struct {
	// Login answers POST /auth/login: credentials in, access and refresh
	// tokens out.
	Login http.Handler
	// Refresh answers POST /auth/refresh: {"refresh_token"} in, a new
	// pair out.
	Refresh http.Handler
	// Logout answers POST /auth/logout behind authentication: it ends the
	// bearer token's session and the one of the refresh token in the body.
	Logout http.Handler
}

// Console serves the console's pages, assets and session endpoints.
type Console struct {
	logger   *slog.Logger
	sessions Sessions
	pages    map[string]*template.Template
	assets   map[string]asset
}

type asset struct {
	body        []byte
	contentType string
	etag        string
}

// page is one console page: its path below /console/ and what it shows.
type page struct {
	name, title string
	nav         bool // listed in the navigation
	public      bool // reachable signed out (sign in, register)
}

var pages = []page{
	{name: "", title: "Overview", nav: true},
	{name: "keys", title: "API keys", nav: true},
	{name: "playground", title: "Playground", nav: true},
	{name: "usage", title: "Usage", nav: true},
	{name: "admin", title: "Admin", nav: true},
	{name: "signin", title: "Sign in", public: true},
	{name: "register", title: "Create an account", public: true},
}

// New parses the embedded templates and indexes the assets.
func New(logger *slog.Logger, s Sessions) (*Console, error) {
	c := &Console{logger: logger, sessions: s, pages: map[string]*template.Template{}, assets: map[string]asset{}}
	entries, err := fs.ReadDir(files, "assets")
	if err != nil {
		return nil, fmt.Errorf("console: assets: %w", err)
	}
	for _, e := range entries {
		b, err := files.ReadFile("assets/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("console: asset %s: %w", e.Name(), err)
		}
		sum := sha256.Sum256(b)
		ct := mime.TypeByExtension(path.Ext(e.Name()))
		if ct == "" {
			ct = "application/octet-stream"
		}
		c.assets[e.Name()] = asset{body: b, contentType: ct, etag: `"` + hex.EncodeToString(sum[:10]) + `"`}
	}
	version := func(name string) (string, error) {
		a, ok := c.assets[name]
		if !ok {
			return "", fmt.Errorf("console: no asset %q", name)
		}
		return "/console/assets/" + name + "?v=" + strings.Trim(a.etag, `"`), nil
	}
	for _, p := range pages {
		file := p.name
		if file == "" {
			file = "overview"
		}
		t, err := template.New("layout.html").Funcs(template.FuncMap{"asset": version}).
			ParseFS(files, "templates/layout.html", "templates/"+file+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", file, err)
		}
		// Render once now, so a template that cannot execute fails at
		// start-up rather than on a visitor's request.
		if err := t.Execute(&bytes.Buffer{}, c.data(p)); err != nil {
			return nil, fmt.Errorf("console: template %s: %w", file, err)
		}
		c.pages[p.name] = t
	}
	return c, nil
}

// pageData is what the layout and the pages' templates see.
type pageData struct {
	Title  string
	Page   string // the body's data-page, which script dispatches on
	Public bool
	Nav    []navLink
}

type navLink struct {
	Href, Label string
	Current     bool
	AdminOnly   bool
}

func (c *Console) data(p page) pageData {
	d := pageData{Title: p.title, Page: p.name, Public: p.public}
	if d.Page == "" {
		d.Page = "overview"
	}
	for _, q := range pages {
		if q.nav {
			d.Nav = append(d.Nav, navLink{Href: "/console/" + q.name, Label: q.title, Current: q.name == p.name, AdminOnly: q.name == "admin"})
		}
	}
	return d
}

// setPageHeaders sets what every console page needs besides the service's
// usual security headers.
func setPageHeaders(h http.Header) {
	h.Set("Content-Security-Policy", ContentSecurityPolicy)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// Root redirects /console to /console/, where the relative world of the
// console begins.
func (c *Console) Root() http.Handler {
	return http.RedirectHandler("/console/", http.StatusMovedPermanently)
}

// Page renders the page named by the {page} path value ("" for the
// overview); an unknown name is a 404 page.
func (c *Console) Page() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("page")
		t, ok := c.pages[name]
		var p page
		for _, q := range pages {
			if q.name == name {
				p = q
			}
		}
		setPageHeaders(w.Header())
		if !ok {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprintln(w, "No such console page. The console starts at /console/.")
			return
		}
		var buf bytes.Buffer
		if err := t.Execute(&buf, c.data(p)); err != nil {
			c.logger.LogAttrs(r.Context(), slog.LevelError, "console page failed", slog.String("page", name), slog.String("error", err.Error()))
			http.Error(w, "Internal server error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(buf.Bytes())
	})
}

// Asset serves an embedded script, style sheet or image by the {file} path
// value. Pages name them with a content hash (?v=), and the ETag lets a
// browser revalidate cheaply.
func (c *Console) Asset() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := c.assets[r.PathValue("file")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.contentType)
		h.Set("ETag", a.etag)
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
	})
}

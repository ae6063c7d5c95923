package console_test

// The console's browser test: one headless Chromium (Debian's chromium
// package) drives the real program (cli.Run serve, SQLite, an OpenAI-like
// upstream that streams slowly) through every page. The browser is started
// once; users are separate browser contexts (separate cookie jars).

import (
	"bufio"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentapi/agentapi/internal/cli"
	"github.com/agentapi/agentapi/internal/console"
	"github.com/agentapi/agentapi/internal/testkit"
	"github.com/agentapi/agentapi/internal/testkit/fakeopenai"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/tidwall/gjson"
)

//go:embed testdata/axe.min.js
var axeSource string

const (
	adminEmail = "admin@example.com"
	adminPass  = "admin-password-1"
	userEmail  = "person@example.com"
	userPass   = "person-password-1"
	model      = "fake-model"
)

// screenshotDir is where the test saves its screenshots (git-ignored);
// CONSOLE_SCREENSHOTS overrides it.
func screenshotDir() string {
	if d := os.Getenv("CONSOLE_SCREENSHOTS"); d != "" {
		return d
	}
	return filepath.Join("testdata", "screenshots")
}

func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// newUpstream is an OpenAI-like model that streams its answer a word at a
// time, slowly enough for the page to show it growing; a prompt containing
// "forever" streams until the request is cancelled, which it counts.
func newUpstream(t *testing.T) *fakeopenai.Server {
	return fakeopenai.New(t, fakeopenai.Options{
		Model:    model,
		Interval: 120 * time.Millisecond,
		Respond: func(r fakeopenai.Request) fakeopenai.Answer {
			last := r.LastMessage()
			n := gjson.GetBytes(r.Body, "messages.#").Int()
			text := strings.Join(strings.Fields(fmt.Sprintf("You said %q after %d messages and this answer arrives one word at a time", last, n)), " ")
			a := fakeopenai.Answer{Text: text, Usage: fakeopenai.Usage{Prompt: 5, Completion: len(strings.Fields(text))}}
			if strings.Contains(last, "forever") {
				a.Fault = fakeopenai.Endless
			}
			return a
		},
	})
}

// startService runs `agentapi users create` for the admin and then
// `agentapi serve`, and returns the server's base URL.
func startService(t *testing.T, upstreamURL string) string {
	t.Helper()
	env := map[string]string{
		"HOST": "127.0.0.1", "PORT": "0",
		"DATABASE_URL":    filepath.Join(t.TempDir(), "console.db"),
		"SECRET_KEY":      "console-browser-test-secret-0123456789",
		"OPENAI_API_KEY":  "sk-upstream-test",
		"OPENAI_BASE_URL": upstreamURL + "/v1",
		"LLM_MODEL":       model, "LLM_MODELS": model + ",other-model",
		"DEMO_USER": "false", "UPSTREAM_RETRIES": "0",
	}
	getenv := func(k string) string { return env[k] }
	ctx, cancel := context.WithCancel(context.Background())
	if err := cli.Run(ctx, []string{"users", "create", "--email", adminEmail, "--admin", "--password-stdin"}, getenv,
		strings.NewReader(adminPass+"\n"), io.Discard, io.Discard); err != nil {
		cancel()
		t.Fatalf("users create: %v", err)
	}
	out := &testkit.SyncBuffer{}
	done := make(chan error, 1)
	go func() { done <- cli.Run(ctx, []string{"serve"}, getenv, strings.NewReader(""), out, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("server exited: %v\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		sc := bufio.NewScanner(strings.NewReader(out.String()))
		for sc.Scan() {
			var line struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "listening" {
				return "http://" + line.Addr
			}
		}
	}
	t.Fatalf("server did not start:\n%s", out.String())
	return ""
}

// problems collects what a tab's pages reported as broken: uncaught
// exceptions, console.error calls, and browser log errors (CSP violations
// among them). Failed loads (the network source) are left out: some pages
// are meant to meet a 401 or 403.
type problems struct {
	mu   sync.Mutex
	list []string
}

func (p *problems) listen(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		msg = "exception: " + ev.ExceptionDetails.Text
		if ev.ExceptionDetails.Exception != nil {
			msg += " " + ev.ExceptionDetails.Exception.Description
		}
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError {
			var parts []string
			for _, a := range ev.Args {
				parts = append(parts, string(a.Value)+a.Description)
			}
			msg = "console.error: " + strings.Join(parts, " ")
		}
	case *cdplog.EventEntryAdded:
		if ev.Entry.Level == cdplog.EntryLevelError && ev.Entry.Source != cdplog.EntrySourceNetwork {
			msg = fmt.Sprintf("log (%s): %s %s", ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
		}
	}
	if msg != "" {
		p.mu.Lock()
		p.list = append(p.list, msg)
		p.mu.Unlock()
	}
}

func (p *problems) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.list
	p.list = nil
	return out
}

// tab is one browser tab, in its own browser context unless shared.
type tab struct {
	t    *testing.T
	ctx  context.Context
	base string
	errs *problems
}

func newTab(t *testing.T, parent context.Context, base string, isolated bool) *tab {
	t.Helper()
	errs := &problems{}
	opts := []chromedp.ContextOption{chromedp.WithListener(errs.listen)}
	if isolated {
		opts = append(opts, chromedp.WithNewBrowserContext())
	}
	ctx, cancel := chromedp.NewContext(parent, opts...)
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, cdplog.Enable, cdp.Empty{})
		return err
	})); err != nil {
		t.Fatalf("open tab: %v", err)
	}
	return &tab{t: t, ctx: ctx, base: base, errs: errs}
}

// with is the tab as used by the (sub)test t: failures go to t.
func (b *tab) with(t *testing.T) *tab {
	c := *b
	c.t = t
	return &c
}

// do runs actions with a bound, failing the test on error.
func (b *tab) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression and decodes its value.
func eval[T any](b *tab, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// wait evaluates a JavaScript predicate until it holds (bounded
// generously: this is a wait, not a speed check). It keeps asking across
// navigations, which a page's own script may start.
func (b *tab) wait(what, predicate string) {
	b.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("!!("+predicate+")"))
		cancel()
		if err == nil && ok {
			return
		}
		last = err
		time.Sleep(25 * time.Millisecond)
	}
	b.t.Fatalf("waiting for %s (%s): last error %v; status: %q", what, predicate, last, b.statusText())
}

func (b *tab) statusText() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.getElementById('status')||{}).textContent||''`))
	return s
}

// open navigates to a console page and waits until its script is done.
func (b *tab) open(path string) {
	b.t.Helper()
	b.do("open "+path, chromedp.Navigate(b.base+path))
	b.wait(path+" ready", `document.body && document.body.dataset.ready === 'true'`)
}

// fill sets an input's value as typing would.
func (b *tab) fill(sel, value string) {
	b.t.Helper()
	b.do("fill "+sel, chromedp.SetValue(chromedp.CSS(sel), value))
}

func (b *tab) click(sel string) {
	b.t.Helper()
	b.do("click "+sel, chromedp.Click(chromedp.CSS(sel)))
}

// noProblems fails the test with whatever the tab's pages reported.
func (b *tab) noProblems(where string) {
	b.t.Helper()
	for _, p := range b.errs.take() {
		b.t.Errorf("%s: %s", where, p)
	}
}

func (b *tab) signIn(email, pass string) {
	b.t.Helper()
	b.open("/console/signin")
	b.fill("#email", email)
	b.fill("#password", pass)
	b.click("#signin-submit")
	b.wait("the overview after sign-in", `location.pathname === '/console/' && document.body.dataset.ready === 'true'`)
}

// apiCall is curl-equivalent Go: a request with a bearer credential.
func apiCall(t *testing.T, method, url, cred string, body any) (int, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, _ := http.NewRequest(method, url, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cred != "" {
		req.Header.Set("Authorization", "Bearer "+cred)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

func login(t *testing.T, base, email, pass string) string {
	t.Helper()
	code, m := apiCall(t, "POST", base+"/auth/login", "", map[string]string{"email": email, "password": pass})
	if code != 200 {
		t.Fatalf("login %s: %d %v", email, code, m)
	}
	return m["access_token"].(string)
}

func TestConsoleInBrowser(t *testing.T) {
	bin := findChromium()
	if bin == "" {
		t.Skip("no chromium binary on PATH: install Debian's chromium package (.ci/run does) to run the console's browser test")
	}
	up := newUpstream(t)
	base := startService(t, up.URL)

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(bin),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	t.Cleanup(cancelAlloc)
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(browser); err != nil { // starts the browser
		t.Fatalf("start chromium: %v", err)
	}

	personTab := newTab(t, browser, base, true)
	var adminTab *tab

	if !t.Run("pages carry a strict CSP and run under it", func(t *testing.T) {
		for _, path := range []string{"/console/", "/console/signin", "/console/register", "/console/keys", "/console/playground", "/console/usage", "/console/admin"} {
			resp, err := http.Get(base + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			csp := resp.Header.Get("Content-Security-Policy")
			if resp.StatusCode != 200 || csp != console.ContentSecurityPolicy {
				t.Errorf("%s: %d, CSP %q", path, resp.StatusCode, csp)
			}
			for _, bad := range []string{"unsafe-inline", "unsafe-eval", "*"} {
				if strings.Contains(csp, bad) {
					t.Errorf("%s: CSP allows %s", path, bad)
				}
			}
			if !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("%s: CSP does not forbid framing", path)
			}
		}
		// The root keeps its JSON answer.
		code, m := apiCall(t, "GET", base+"/", "", nil)
		if code != 200 || m["message"] == nil {
			t.Errorf("GET / = %d %v, want the JSON answer", code, m)
		}
		// An inline script is refused in a console page, and the refusal
		// is reported (which is how the other checks would see one).
		probe := newTab(t, browser, base, false)
		probe.open("/console/signin")
		ran := eval[bool](probe, `(() => { const s = document.createElement('script'); s.textContent = 'window.inlineRan = true'; document.head.append(s); return new Promise(r => setTimeout(() => r(window.inlineRan === true), 200)); })()`)
		if ran {
			t.Error("an inline script ran despite the CSP")
		}
		var got []string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if got = append(got, probe.errs.take()...); len(got) > 0 {
				break
			}
		}
		if len(got) == 0 || !strings.Contains(strings.Join(got, " "), "Content Security Policy") {
			t.Errorf("no CSP violation was reported for the inline script; reports: %q", got)
		}
	}) {
		return
	}

	if !t.Run("register, sign in, and an API key's life", func(t *testing.T) {
		person := personTab.with(t)
		person.open("/console/register")
		person.fill("#email", userEmail)
		person.fill("#password", userPass)
		person.fill("#password2", userPass)
		person.click("#register-submit")
		person.wait("the sign-in page", `location.pathname === '/console/signin' && document.body.dataset.ready === 'true'`)
		person.signIn(userEmail, userPass)

		// The refresh cookie is HttpOnly: script cannot see it.
		if c := eval[string](person, `document.cookie`); c != "" {
			t.Errorf("document.cookie = %q, want nothing readable by script", c)
		}
		person.open("/console/keys")
		person.fill("#key-name", "browser test")
		person.click("#key-create")
		person.wait("the new key, and the list with it", `!document.getElementById('key-secret').hidden && document.getElementById('key-value').value.startsWith('sk-') && document.querySelector('#keys-table tbody tr code.prefix') !== null`)
		secret := eval[string](person, `document.getElementById('key-value').value`)
		keyPrefix := eval[string](person, `document.querySelector('#keys-table tbody tr code.prefix').textContent.replace('…', '')`)
		if !strings.HasPrefix(secret, keyPrefix) || len(keyPrefix) >= len(secret) {
			t.Fatalf("prefix %q is not a proper prefix of the secret", keyPrefix)
		}
		if code, m := apiCall(t, "GET", base+"/v1/models", secret, nil); code != 200 {
			t.Fatalf("the new key: GET /v1/models = %d %v", code, m)
		}
		// Shown once: after a reload only the prefix is on the page.
		person.open("/console/keys")
		person.wait("the key list", `document.querySelector('#keys-table tbody tr[data-key]') !== null`)
		html := eval[string](person, `document.documentElement.outerHTML`)
		if strings.Contains(html, secret) {
			t.Error("the secret is still on the page after a reload")
		}
		if !strings.Contains(html, keyPrefix) {
			t.Error("the key's prefix is not listed")
		}
		person.click("#keys-table button[data-key]")
		person.wait("the confirmation", `document.getElementById('confirm').open`)
		person.click("#confirm-ok")
		person.wait("the key revoked", `document.querySelector('#keys-table .pill.off') !== null`)
		if code, _ := apiCall(t, "GET", base+"/v1/models", secret, nil); code != 401 {
			t.Errorf("the revoked key: GET /v1/models = %d, want 401", code)
		}
		person.noProblems("keys")
	}) {
		return
	}

	if !t.Run("the playground streams, keeps the conversation, and stops", func(t *testing.T) {
		person := personTab.with(t)
		person.open("/console/playground")
		person.wait("the model list", `document.querySelectorAll('#model option').length === 2`)
		person.fill("#prompt", "hello there")
		person.click("#chat-send")
		// Sample the answer while it streams: it must be seen growing
		// through several partial states before it is complete.
		seen := map[string]bool{}
		var order []string
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			s := eval[string](person, `(() => { const a = document.querySelectorAll('#transcript li.assistant'); const li = a[a.length-1]; return li ? (li.dataset.tokens ? 'DONE:' : '') + li.querySelector('.text').textContent : ''; })()`)
			if strings.HasPrefix(s, "DONE:") {
				order = append(order, s)
				break
			}
			if s != "" && !seen[s] {
				seen[s] = true
				order = append(order, s)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(order) == 0 || !strings.HasPrefix(order[len(order)-1], "DONE:") {
			t.Fatalf("the answer did not complete; seen %q", order)
		}
		final := strings.TrimPrefix(order[len(order)-1], "DONE:")
		var partial []string // the states seen before the whole text was there
		for _, p := range order[:len(order)-1] {
			if p != final {
				partial = append(partial, p)
			}
		}
		if len(partial) < 3 {
			t.Errorf("saw %d partial states of the answer before it completed, want at least 3 (a stream, not one block): %q", len(partial), partial)
		}
		for _, p := range partial {
			if !strings.HasPrefix(final, p) {
				t.Errorf("partial state %q is not a strict prefix of the answer %q", p, final)
			}
		}
		meta := eval[string](person, `document.querySelector('#transcript li.assistant .meta').textContent`)
		if !strings.Contains(meta, "tokens") {
			t.Errorf("the answer's footer %q does not give the tokens used", meta)
		}

		// Continuity: the second turn names the first response
		// (previous_response_id), so the upstream gets the whole chain.
		person.fill("#prompt", "second question")
		person.click("#chat-send")
		person.wait("the second answer", `document.querySelectorAll('#transcript li.assistant[data-tokens]').length === 2`)
		if n := eval[int](person, `document.querySelectorAll('#transcript li').length`); n != 4 {
			t.Errorf("transcript has %d entries, want 4", n)
		}
		// The model saw the first turn too (question, answer, question).
		if a := eval[string](person, `document.querySelectorAll('#transcript li.assistant .text')[1].textContent`); !strings.Contains(a, "after 3 messages") {
			t.Errorf("the second answer %q was not given the first turn", a)
		}

		// Stop cancels the call upstream.
		person.fill("#prompt", "talk forever")
		person.click("#chat-send")
		person.wait("the endless answer to start", `(() => { const a = document.querySelectorAll('#transcript li.assistant'); return a.length === 3 && a[2].querySelector('.text').textContent.length > 0; })()`)
		person.click("#chat-stop")
		testkit.Eventually(t, 30*time.Second, "the upstream call cancelled after Stop", func() bool { return up.Cancelled() > 0 })
		person.wait("the stopped answer", `document.querySelectorAll('#transcript li.assistant')[2].dataset.stopped === 'true' && !document.getElementById('chat-send').disabled`)
		person.noProblems("playground")
	}) {
		return
	}

	if !t.Run("the overview chart shows the calls just made", func(t *testing.T) {
		person := personTab.with(t)
		tok := login(t, base, userEmail, userPass)
		today := time.Now().UTC().Format("2006-01-02")
		usageToday := func() float64 {
			code, m := apiCall(t, "GET", base+"/usage?from="+today+"&to="+today, tok, nil)
			if code != 200 {
				t.Fatalf("GET /usage = %d %v", code, m)
			}
			return m["totals"].(map[string]any)["requests"].(float64)
		}
		// Usage is written moments after each call (the stopped one too),
		// so the page is read until it agrees with the API, which must
		// count at least the two finished answers.
		var shown, want float64
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			person.open("/console/")
			person.wait("the chart", `document.querySelector('#chart-requests svg') !== null`)
			shown = eval[float64](person, fmt.Sprintf(`Array.from(document.querySelectorAll('#chart-requests rect[data-day="%s"][data-model="%s"]')).reduce((s, r) => s + Number(r.dataset.value), 0)`, today, model))
			if want = usageToday(); want >= 2 && shown == want {
				break
			}
		}
		if want < 2 || shown != want {
			t.Fatalf("the chart shows %v requests of %s today, /usage says %v (want at least 2)", shown, model, want)
		}
		tokens := eval[float64](person, `Number(document.querySelector('#chart-tokens svg').dataset.total)`)
		if tokens <= 0 {
			t.Errorf("the tokens chart totals %v", tokens)
		}
		if tier := eval[string](person, `document.getElementById('tier').textContent`); tier != "free" {
			t.Errorf("overview tier = %q, want free", tier)
		}
		person.noProblems("overview")
	}) {
		return
	}

	if !t.Run("the usage page totals the range and makes its CSV", func(t *testing.T) {
		person := personTab.with(t)
		now := time.Now().UTC()
		from, to := now.AddDate(0, 0, -29).Format("2006-01-02"), now.Format("2006-01-02")
		token := login(t, base, userEmail, userPass)
		apiTotal := func() string {
			code, m := apiCall(t, "GET", base+"/usage?from="+from+"&to="+to, token, nil)
			if code != 200 {
				t.Fatalf("GET /usage = %d", code)
			}
			return fmt.Sprint(m["totals"].(map[string]any)["total_tokens"])
		}
		// Usage is recorded in batches, after the answers the earlier
		// steps waited for, so a total read while the last records were on
		// their way moves on. The page must show exactly what /usage says
		// when /usage says the same before and after the page loaded.
		var before, got, after string
		testkit.Eventually(t, 30*time.Second, "the usage page loaded while /usage held still", func() bool {
			before = apiTotal()
			person.open("/console/usage")
			person.wait("the usage table", `document.querySelector('#usage-table tfoot tr') !== null && !document.getElementById('csv').disabled`)
			got = strings.ReplaceAll(eval[string](person, `document.getElementById('usage-total').textContent`), ",", "")
			after = apiTotal()
			return before == after
		})
		if got != after {
			t.Errorf("the table's total is %s tokens, /usage says %s", got, after)
		}
		// The CSV the download button saves: quoted where needed, and a
		// cell that a spreadsheet would run as a formula is defused.
		csv := eval[string](person, `import('/console/assets/usage.js').then(m => m.toCSV({from: 'a', to: 'b',
			days: [{day: '2026-01-01', model: '=HYPERLINK("x")', requests: 1, prompt_tokens: 2, completion_tokens: 3, total_tokens: 5}],
			totals: {requests: 1, prompt_tokens: 2, completion_tokens: 3, total_tokens: 5}}))`)
		wantCSV := "day,model,requests,prompt_tokens,completion_tokens,total_tokens\r\n" +
			"2026-01-01,\"'=HYPERLINK(\"\"x\"\")\",1,2,3,5\r\n" +
			"total,,1,2,3,5\r\n"
		if csv != wantCSV {
			t.Errorf("CSV:\n%q\nwant\n%q", csv, wantCSV)
		}
		person.noProblems("usage")
	}) {
		return
	}

	if !t.Run("a non-admin sees no admin pages and the admin API refuses them", func(t *testing.T) {
		person := personTab.with(t)
		if hidden := eval[bool](person, `document.getElementById('nav-admin').hidden`); !hidden {
			t.Error("the admin link shows for a non-admin")
		}
		person.open("/console/admin")
		if hidden := eval[bool](person, `document.getElementById('admin-only').hidden`); !hidden {
			t.Error("the admin page's content shows for a non-admin")
		}
		if s := person.statusText(); !strings.Contains(s, "administrators") {
			t.Errorf("the admin page says %q to a non-admin", s)
		}
		tok := login(t, base, userEmail, userPass)
		for _, c := range []struct{ method, path string }{{"GET", "/admin/users"}, {"PATCH", "/admin/users/x"}, {"GET", "/admin/users/x/usage"}} {
			var body any
			if c.method == "PATCH" {
				body = map[string]bool{"disabled": true}
			}
			if code, _ := apiCall(t, c.method, base+c.path, tok, body); code != 403 {
				t.Errorf("%s %s as a non-admin = %d, want 403", c.method, c.path, code)
			}
		}
		person.noProblems("admin (non-admin)")
	}) {
		return
	}

	adminTab = newTab(t, browser, base, true)
	if !t.Run("accessibility and screenshots of every page", func(t *testing.T) {
		person, admin := personTab.with(t), adminTab.with(t)
		dir := screenshotDir()
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		keyboardSignIn(t, admin, adminEmail, adminPass)
		anon := newTab(t, browser, base, true)
		pages := []struct {
			b          *tab
			name, path string
		}{
			{anon, "signin", "/console/signin"}, {anon, "register", "/console/register"},
			{person, "overview", "/console/"}, {person, "keys", "/console/keys"}, {person, "playground", "/console/playground"},
			{person, "usage", "/console/usage"}, {admin, "admin", "/console/admin"},
		}
		for _, scheme := range []string{"light", "dark"} {
			for _, size := range []struct {
				name string
				w, h int64
			}{{"desktop", 1280, 900}, {"phone", 360, 780}} {
				for _, p := range pages {
					p.b.do("emulate", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
						if _, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
							Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: scheme}}}); err != nil {
							return err
						}
						_, err := cdp.Call(ctx, tg, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
							Width: size.w, Height: size.h, DeviceScaleFactor: 1, Mobile: size.name == "phone"})
						return err
					}))
					p.b.open(p.path)
					if p.name == "admin" {
						p.b.wait("the user list", `document.querySelector('#users-table tbody tr[data-user]') !== null`)
					}
					if p.name == "playground" {
						// A short exchange, so the check and the picture cover
						// a transcript too.
						p.b.wait("the model list", `document.querySelectorAll('#model option').length > 0`)
						p.b.fill("#prompt", "What can you do?")
						p.b.click("#chat-send")
						p.b.wait("the answer", `document.querySelector('#transcript li.assistant[data-tokens]') !== null`)
					}
					if p.name == "usage" {
						p.b.wait("the usage table", `document.querySelector('#usage-table tfoot tr') !== null`)
					}
					label := fmt.Sprintf("%s-%s-%s", p.name, scheme, size.name)
					checkAxe(t, p.b, label)
					shot := func(ctx context.Context, tg *chromedp.Target) ([]byte, error) {
						return chromedp.FullScreenshot(100)(ctx, tg)
					}
					ctx, cancel := context.WithTimeout(p.b.ctx, 60*time.Second)
					png, err := chromedp.Run(ctx, shot)
					cancel()
					if err != nil {
						t.Fatalf("screenshot %s: %v", label, err)
					}
					if err := os.WriteFile(filepath.Join(dir, "console-"+label+".png"), png, 0o644); err != nil {
						t.Fatal(err)
					}
					// Nothing may stick out sideways at phone width.
					if size.name == "phone" {
						if over := eval[bool](p.b, `document.documentElement.scrollWidth > window.innerWidth + 1`); over {
							t.Errorf("%s: the page is wider than the 360px screen", label)
						}
					}
					p.b.noProblems(label)
				}
			}
		}
		// Back to a plain desktop for what follows.
		for _, b := range []*tab{person, admin} {
			b.do("reset emulation", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				if _, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{}); err != nil {
					return err
				}
				_, err := cdp.Call(ctx, tg, emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{Width: 1280, Height: 900, DeviceScaleFactor: 1})
				return err
			}))
		}
	}) {
		return
	}

	if !t.Run("an admin disables a user and their console signs out within 2s", func(t *testing.T) {
		person, admin := personTab.with(t), adminTab.with(t)
		person.open("/console/")
		admin.open("/console/admin")
		admin.fill("#search-email", "person@")
		admin.click("#user-search button[type=submit]")
		admin.wait("the user found", fmt.Sprintf(`document.querySelectorAll('#users-table tbody tr[data-user]').length === 1 && document.querySelector('#users-table tbody tr').dataset.email === %q`, userEmail))
		// The person's usage, as the admin sees it.
		admin.click(`#users-table tbody tr[data-email="` + userEmail + `"] button[aria-label^="Usage"]`)
		admin.wait("the person's usage", `!document.getElementById('user-usage').hidden && document.querySelector('#user-usage-table tfoot tr') !== null`)
		if n := eval[string](admin, `document.querySelector('#user-usage-table tfoot td.num').textContent`); n == "0" || n == "" {
			t.Errorf("the admin sees %q requests for the person, who made several", n)
		}
		admin.click(`#users-table tbody tr[data-email="` + userEmail + `"] button[data-action=toggle]`)
		admin.wait("the confirmation", `document.getElementById('confirm').open`)
		admin.click("#confirm-ok")
		admin.wait("the user disabled", `document.querySelector('#users-table tbody tr .pill.off') !== null`)
		disabledAt := time.Now()
		person.wait("the sign-in page", `location.pathname === '/console/signin'`)
		took := time.Since(disabledAt)
		t.Logf("the disabled user's console left for the sign-in page %v after the admin's change showed", took.Round(time.Millisecond))
		if took > 2*time.Second {
			t.Errorf("the disabled user's console took %v to sign out, want at most 2s", took)
		}
		person.wait("the explanation", `document.getElementById('status').textContent.includes('disabled')`)
		// The refresh cookie went with the session: a reload stays out.
		person.open("/console/keys")
		person.wait("the sign-in page again", `location.pathname === '/console/signin'`)
		admin.noProblems("admin")
		person.noProblems("disabled user")
	}) {
		return
	}

	if !t.Run("sign out ends the session", func(t *testing.T) {
		admin := adminTab.with(t)
		admin.open("/console/")
		admin.click("#signout")
		admin.wait("the sign-in page", `location.pathname === '/console/signin' && document.body.dataset.ready === 'true'`)
		admin.open("/console/usage")
		admin.wait("the sign-in page after sign-out", `location.pathname === '/console/signin'`)
		admin.noProblems("sign out")
	}) {
		return
	}
}

// keyboardSignIn signs in with the keyboard alone: Tab to the skip link
// (which must show its focus), Enter to jump to the content, Tab to the
// email field, type, Tab, type the password, Enter.
func keyboardSignIn(t *testing.T, b *tab, email, pass string) {
	t.Helper()
	b.open("/console/signin")
	b.do("Tab", chromedp.KeyEvent("\t"))
	if got := eval[string](b, `document.activeElement.className`); got != "skip" {
		t.Fatalf("the first Tab focuses %q, want the skip link", got)
	}
	if !eval[bool](b, `(() => { const e = document.activeElement, s = getComputedStyle(e), r = e.getBoundingClientRect();
		return s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) >= 2 && r.left >= 0 && r.top >= 0 && r.width > 0; })()`) {
		t.Error("the focused skip link is not visible with a focus outline")
	}
	b.do("Enter", chromedp.KeyEvent("\r"))
	b.do("Tab", chromedp.KeyEvent("\t"))
	if got := eval[string](b, `document.activeElement.id`); got != "email" {
		t.Fatalf("after the skip link, Tab focuses %q, want the email field", got)
	}
	b.do("type", chromedp.KeyEvent(email+"\t"+pass+"\r"))
	b.wait("the overview after a keyboard sign-in", `location.pathname === '/console/' && document.body.dataset.ready === 'true'`)
}

// axeResult is the part of axe-core's results the test reads.
type axeResult struct {
	Passes     int `json:"passes"`
	Violations []struct {
		ID     string `json:"id"`
		Impact string `json:"impact"`
		Help   string `json:"help"`
		Nodes  []struct {
			Target []any `json:"target"`
		} `json:"nodes"`
	} `json:"violations"`
}

// checkAxe runs axe-core in the page and fails on serious or critical
// violations.
func checkAxe(t *testing.T, b *tab, label string) {
	t.Helper()
	if !eval[bool](b, `typeof window.axe === 'object'`) {
		eval[bool](b, axeSource+"\n;true")
	}
	res := eval[axeResult](b, `axe.run(document, {resultTypes: ['violations']}).then(r => ({passes: r.passes.length, violations: r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => ({target: n.target}))}))}))`)
	if res.Passes == 0 {
		t.Errorf("%s: axe checked nothing", label)
	}
	for _, v := range res.Violations {
		if v.Impact == "serious" || v.Impact == "critical" {
			var where []string
			for _, n := range v.Nodes {
				where = append(where, fmt.Sprint(n.Target...))
			}
			t.Errorf("%s: axe %s (%s): %s at %s", label, v.ID, v.Impact, v.Help, strings.Join(where, ", "))
		}
	}
}

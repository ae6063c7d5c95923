// core.js: the console's session and API calls, shared by every page.
//
// The access token lives in this module's memory only (never in
// localStorage or a cookie): every page load gets a fresh one from
// /console/api/session/refresh, which reads the HttpOnly refresh cookie.
// API calls carry the token in Authorization and send no cookies.

const REFRESH_MARGIN_MS = 30000;
// WATCH_MS is how often a signed-in page checks that its session still
// holds, so that a disabled account or a sign-out elsewhere ends it here
// within about a second.
const WATCH_MS = 1000;

let access = null; // {token, expiresAt}
let refreshing = null;

// SignedOut is thrown when there is no session (any more).
export class SignedOut extends Error {
  constructor(reason) { super(reason || 'Signed out'); this.reason = reason || ''; }
}

// ApiError is a refused or failed call, with a message meant for people.
export class ApiError extends Error {
  constructor(status, message, retryAfter, requestId) {
    super(message);
    this.status = status;
    this.retryAfter = retryAfter;
    this.requestId = requestId;
  }
}

// el builds an element; children are nodes or strings (always text, never HTML).
export function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k in e && typeof v !== 'string') e[k] = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

function seconds(n) { return n === 1 ? '1 second' : n + ' seconds'; }

function retryText(retryAfter) {
  return retryAfter ? 'Try again in ' + seconds(retryAfter) + '.' : 'Try again in a moment.';
}

// describe turns a refusal into a sentence that says what happened and,
// for 429 and 503, when to try again.
function describe(status, body, retryAfter) {
  let msg = '';
  if (body && typeof body.error === 'string') msg = body.error;
  else if (body && body.error && typeof body.error.message === 'string') msg = body.error.message;
  else if (body && body.error && typeof body.error.error === 'string') msg = body.error.error;
  if (body && Array.isArray(body.details) && body.details.length) {
    msg += ': ' + body.details.map(d => d.field + ' ' + d.problem).join('; ');
  }
  switch (status) {
    case 429: return 'Too many requests' + (msg ? ' (' + msg + ')' : '') + '. ' + retryText(retryAfter);
    case 503: return 'The service is temporarily unavailable' + (msg ? ' (' + msg + ')' : '') + '. ' + retryText(retryAfter);
    case 502: case 504: return 'The model provider failed' + (msg ? ' (' + msg + ')' : '') + '. Try again.';
    case 401: return msg || 'Not signed in.';
    case 403: return msg || 'Not allowed.';
    default: return msg || ('The request failed (HTTP ' + status + ').');
  }
}

// refusal reads a non-2xx answer into an ApiError.
export async function refusal(r) {
  let body = null;
  try { body = await r.json(); } catch (_) { /* not JSON */ }
  const ra = parseInt(r.headers.get('Retry-After') || '', 10);
  const retryAfter = Number.isFinite(ra) && ra >= 0 ? ra : 0;
  let msg = describe(r.status, body, retryAfter);
  const id = (body && body.request_id) || r.headers.get('X-Request-Id') || '';
  if (r.status >= 500 && id) msg += ' (request id ' + id + ')';
  return new ApiError(r.status, msg, retryAfter, id);
}

function keep(s) {
  access = { token: s.access_token, expiresAt: Date.now() + (s.expires_in || 60) * 1000 };
}

async function refreshNow() {
  const r = await fetch('/console/api/session/refresh', { method: 'POST', credentials: 'same-origin', cache: 'no-store' });
  if (r.status === 401 || r.status === 404) {
    access = null;
    const e = await refusal(r);
    throw new SignedOut(e.message);
  }
  if (!r.ok) throw await refusal(r);
  keep(await r.json());
}

// refresh gets a new access token. Tabs take turns (Web Locks): each
// refresh replaces the cookie's single-use token, and two tabs presenting
// the same one at once would end the session.
function refresh() {
  if (!refreshing) {
    const run = () => refreshNow();
    const p = navigator.locks ? navigator.locks.request('agentapi-console-refresh', run) : run();
    refreshing = p.finally(() => { refreshing = null; });
  }
  return refreshing;
}

// token returns a usable access token, refreshing it when close to expiry.
export async function token() {
  if (!access || Date.now() > access.expiresAt - REFRESH_MARGIN_MS) await refresh();
  return access.token;
}

// signIn starts a session; the refresh token stays in the cookie.
export async function signIn(email, password) {
  const r = await fetch('/console/api/session', {
    method: 'POST', credentials: 'same-origin', cache: 'no-store',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ email, password }),
  });
  if (!r.ok) throw await refusal(r);
  keep(await r.json());
}

// signOut ends the session on the server and leaves for the sign-in page.
export async function signOut() {
  try {
    const t = await token();
    await fetch('/console/api/session', { method: 'DELETE', credentials: 'same-origin', headers: { Authorization: 'Bearer ' + t } });
  } catch (_) { /* the session is gone either way */ }
  access = null;
  location.assign('/console/signin?ended=signout');
}

// leave goes to the sign-in page, saying why when there was a session.
function leave(reason) {
  access = null;
  let q = '?ended=expired';
  if (/disabled/i.test(reason || '')) q = '?ended=disabled';
  else if (/not signed in/i.test(reason || '')) q = '';
  location.replace('/console/signin' + q);
}

// raw is fetch with the access token; a 401 gets one refresh and retry.
export async function raw(path, opts) {
  opts = opts || {};
  const send = async () => {
    const headers = Object.assign({}, opts.headers, { Authorization: 'Bearer ' + await token() });
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    return fetch(path, {
      method: opts.method || 'GET', headers, signal: opts.signal, credentials: 'omit', cache: 'no-store',
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    });
  };
  let r;
  try {
    r = await send();
  } catch (e) {
    if (e instanceof SignedOut) leave(e.reason);
    throw e;
  }
  if (r.status === 401) {
    access = null;
    try {
      r = await send();
    } catch (e) {
      if (e instanceof SignedOut) leave(e.reason);
      throw e;
    }
    if (r.status === 401) {
      const e = await refusal(r);
      leave(e.message);
      throw new SignedOut(e.message);
    }
  }
  return r;
}

// api calls the JSON API and returns the decoded answer (null for 204).
export async function api(path, opts) {
  const r = await raw(path, opts);
  if (!r.ok) throw await refusal(r);
  if (r.status === 204) return null;
  return r.json();
}

// status shows a message in the region next to the page's heading (or
// another one); kind is '', 'error' or 'ok'.
export function status(msg, kind, region) {
  const box = region || document.getElementById('status');
  if (!box) return;
  box.textContent = msg || '';
  box.className = 'status' + (kind ? ' ' + kind : '');
}

// guard runs an action with a loading message, and shows its error.
export async function guard(label, fn, region) {
  status(label + '…', '', region);
  try {
    const out = await fn();
    status('', '', region);
    return out;
  } catch (e) {
    if (e instanceof SignedOut) return undefined;
    if (e && e.name === 'AbortError') { status('', '', region); return undefined; }
    status(e instanceof ApiError ? e.message : 'Could not reach the service. Check your connection and try again.', 'error', region);
    return undefined;
  }
}

// watch asks every WATCH_MS whether the session still holds. It runs in
// background tabs too (browsers slow their timers to about once a second
// there), so a disabled account's every open tab closes.
function watch() {
  const tick = async () => {
    try {
      await raw('/console/api/me');
    } catch (_) { /* a network blip: try again next tick; a 401 has left already */ }
    setTimeout(tick, WATCH_MS);
  };
  setTimeout(tick, WATCH_MS);
}

// boot starts a signed-in page: it gets a token, learns who is signed in,
// fills in the header and starts the session watch. It returns the
// account ({user_id, tier, role}), or undefined after leaving for sign-in.
export async function boot() {
  const out = document.getElementById('signout');
  if (out) out.addEventListener('click', () => { out.disabled = true; signOut(); });
  let me;
  try {
    await token();
    me = await api('/console/api/me');
  } catch (e) {
    if (e instanceof SignedOut) { leave(e.reason); return undefined; }
    status(e instanceof ApiError ? e.message : 'Could not reach the service. Reload the page to try again.', 'error');
    return undefined;
  }
  const who = document.getElementById('who');
  if (who) who.textContent = 'Tier ' + me.tier + (me.role === 'admin' ? ' · admin' : '');
  const nav = document.getElementById('nav-admin');
  if (nav && me.role === 'admin') nav.hidden = false;
  watch();
  return me;
}

// day formats a Date as YYYY-MM-DD in UTC.
export function day(d) { return d.toISOString().slice(0, 10); }

// when formats an ISO time for people, or a dash.
export function when(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  return isNaN(d) ? '—' : d.toLocaleString();
}

// num formats a count with digit grouping.
export function num(n) { return Number(n || 0).toLocaleString('en-US'); }

// auth.js: the sign-in and register pages.
import { signIn, status, refusal, ApiError } from './core.js';

function failed(e) {
  return e instanceof ApiError ? e.message : 'Could not reach the service. Check your connection and try again.';
}

export function signinPage() {
  const form = document.getElementById('signin-form');
  const button = document.getElementById('signin-submit');
  const ended = new URLSearchParams(location.search).get('ended');
  const registered = new URLSearchParams(location.search).get('registered');
  if (ended === 'disabled') status('Your account has been disabled. Contact an administrator.', 'error');
  else if (ended === 'expired') status('Your session has ended. Sign in again.', '');
  else if (ended === 'signout') status('You are signed out.', 'ok');
  else if (registered) status('Account created. Sign in with it now.', 'ok');
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const email = form.email.value.trim();
    const password = form.password.value;
    if (!email || !password) { status('Enter your email and password.', 'error'); return; }
    button.disabled = true;
    status('Signing in…');
    try {
      await signIn(email, password);
      location.assign('/console/');
    } catch (e) {
      status(failed(e), 'error');
      button.disabled = false;
      form.password.focus();
    }
  });
  document.body.dataset.ready = 'true';
}

export function registerPage() {
  const form = document.getElementById('register-form');
  const button = document.getElementById('register-submit');
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const email = form.email.value.trim();
    const password = form.password.value;
    if (!email) { status('Enter an email address.', 'error'); form.email.focus(); return; }
    if (password.length < 8) { status('The password needs at least 8 characters.', 'error'); form.password.focus(); return; }
    if (password !== form.password2.value) { status('The two passwords differ.', 'error'); form.password2.focus(); return; }
    button.disabled = true;
    status('Creating the account…');
    try {
      const r = await fetch('/auth/register', {
        method: 'POST', credentials: 'omit', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ email, password }),
      });
      if (!r.ok) {
        throw await refusal(r);
      }
      location.assign('/console/signin?registered=1');
    } catch (e) {
      status(failed(e), 'error');
      button.disabled = false;
    }
  });
  document.body.dataset.ready = 'true';
}

// keys.js: create, list and revoke API keys. A new key's secret is shown
// once, in this page's memory; the list shows prefixes only.
import { api, guard, el, when, status } from './core.js';

// confirmDialog asks a yes/no question in the page's <dialog>; it resolves
// true when the confirming button was chosen.
export function confirmDialog(text) {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  return new Promise(resolve => {
    dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    dlg.returnValue = '';
    dlg.showModal();
    document.getElementById('confirm-cancel').focus();
  });
}

async function load() {
  const body = document.querySelector('#keys-table tbody');
  const list = await guard('Loading your keys', () => api('/keys'));
  if (!list) return;
  if (!list.keys.length) {
    body.replaceChildren(el('tr', {}, el('td', { colspan: 6, class: 'empty', text: 'No keys yet.' })));
    return;
  }
  body.replaceChildren(...list.keys.map(k => {
    const revoked = !!k.revoked_at;
    const btn = revoked ? '' : el('button', {
      type: 'button', class: 'danger', 'data-key': k.id, 'aria-label': 'Revoke ' + k.name, text: 'Revoke',
      onclick: () => revoke(k),
    });
    return el('tr', { 'data-key': k.id },
      el('td', { text: k.name }),
      el('td', {}, el('code', { class: 'prefix', text: k.prefix + '…' })),
      el('td', { text: when(k.created_at) }),
      el('td', { text: k.last_used_at ? when(k.last_used_at) : 'never' }),
      el('td', {}, revoked ? el('span', { class: 'pill off', text: 'revoked ' + when(k.revoked_at) }) : el('span', { class: 'pill', text: 'active' })),
      el('td', {}, btn));
  }));
}

async function revoke(k) {
  const ok = await confirmDialog(`Revoke “${k.name}” (${k.prefix}…)? Programs using it stop working at once. This cannot be undone.`);
  if (!ok) return;
  const done = await guard('Revoking the key', async () => { await api('/keys/' + encodeURIComponent(k.id), { method: 'DELETE' }); return true; });
  if (done) {
    await load();
    status(`Key “${k.name}” revoked.`, 'ok');
  }
}

export async function keysPage() {
  const form = document.getElementById('key-form');
  const secret = document.getElementById('key-secret');
  const value = document.getElementById('key-value');
  const copy = document.getElementById('key-copy');
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const name = form.name.value.trim();
    if (!name) { status('Give the key a name.', 'error'); form.name.focus(); return; }
    const created = await guard('Creating the key', () => api('/keys', { method: 'POST', body: { name } }));
    if (!created) return;
    form.reset();
    value.value = created.key;
    secret.hidden = false;
    value.focus();
    value.select();
    await load();
  });
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(value.value);
      status('Copied to the clipboard.', 'ok');
    } catch (_) {
      value.focus();
      value.select();
      status('Copying was not allowed here; the key is selected: press Ctrl+C (⌘C).', '');
    }
  });
  document.getElementById('key-done').addEventListener('click', () => {
    value.value = '';
    secret.hidden = true;
    status('', '');
    form.name.focus();
  });
  await load();
}

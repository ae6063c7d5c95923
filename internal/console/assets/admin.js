// admin.js: find users, change their tier, role and state, see their usage.
// The page shows nothing to non-administrators; the API refuses them too.
import { api, guard, el, num, day, status } from './core.js';
import { confirmDialog } from './keys.js';

async function patch(u, change, what) {
  const updated = await guard('Saving', () => api('/admin/users/' + encodeURIComponent(u.id), { method: 'PATCH', body: change }));
  if (updated) status(`${u.email}: ${what}.`, 'ok');
  return updated;
}

function choice(label, id, value, options, onchange) {
  const sel = el('select', { id, 'aria-label': label, onchange: () => onchange(sel) },
    ...options.map(o => el('option', { value: o, text: o, selected: o === value })));
  return sel;
}

function row(u, me) {
  const self = u.id === me.user_id;
  const state = el('td', {}, el('span', { class: u.disabled ? 'pill off' : 'pill', text: u.disabled ? 'disabled' : 'active' }));
  const toggle = el('button', {
    type: 'button', class: u.disabled ? 'secondary' : 'danger', disabled: self,
    'aria-label': (u.disabled ? 'Enable ' : 'Disable ') + u.email, text: u.disabled ? 'Enable' : 'Disable',
    'data-action': 'toggle',
    onclick: async () => {
      if (!u.disabled && !await confirmDialog(`Disable ${u.email}? Their sessions and API keys stop working at once.`)) return;
      const updated = await patch(u, { disabled: !u.disabled }, u.disabled ? 'enabled' : 'disabled');
      if (updated) tr.replaceWith(row(updated, me));
    },
  });
  const usage = el('button', { type: 'button', class: 'secondary', 'aria-label': 'Usage of ' + u.email, text: 'Usage', onclick: () => showUsage(u) });
  const tr = el('tr', { 'data-user': u.id, 'data-email': u.email },
    el('td', { text: u.email }),
    el('td', {}, choice('Tier of ' + u.email, 'tier-' + u.id, u.tier, ['free', 'pro'], async sel => {
      const updated = await patch(u, { tier: sel.value }, 'tier ' + sel.value);
      if (updated) u.tier = updated.tier; else sel.value = u.tier;
    })),
    el('td', {}, choice('Role of ' + u.email, 'role-' + u.id, u.role, ['user', 'admin'], async sel => {
      const updated = self ? null : await patch(u, { role: sel.value }, 'role ' + sel.value);
      if (updated) u.role = updated.role; else sel.value = u.role;
    })),
    state,
    el('td', {}, el('div', { class: 'buttons' }, toggle, usage)));
  if (self) tr.querySelector('select[id^="role-"]').disabled = true;
  return tr;
}

async function showUsage(u) {
  const sec = document.getElementById('user-usage');
  const to = new Date();
  const from = new Date(to.getTime() - 29 * 86400000);
  document.getElementById('user-usage-h').textContent = `Usage of ${u.email}, last 30 days`;
  sec.hidden = false;
  const rep = await guard('Loading usage', () => api(`/admin/users/${encodeURIComponent(u.id)}/usage?from=${day(from)}&to=${day(to)}`));
  if (!rep) return;
  const body = sec.querySelector('tbody');
  body.replaceChildren(...(rep.days.length ? rep.days.map(r => el('tr', {},
    el('td', { text: r.day }), el('td', { text: r.model }),
    el('td', { class: 'num', text: num(r.requests) }), el('td', { class: 'num', text: num(r.total_tokens) })))
    : [el('tr', {}, el('td', { colspan: 4, class: 'empty', text: 'No usage in these 30 days.' }))]));
  sec.querySelector('tfoot').replaceChildren(el('tr', {}, el('td', { text: 'Total' }), el('td'),
    el('td', { class: 'num', text: num(rep.totals.requests) }), el('td', { class: 'num', text: num(rep.totals.total_tokens) })));
  sec.scrollIntoView({ block: 'nearest' });
}

export async function adminPage(me) {
  if (me.role !== 'admin') {
    status('This page is for administrators. Your account is not one.', 'error');
    return;
  }
  document.getElementById('admin-only').hidden = false;
  const form = document.getElementById('user-search');
  const body = document.querySelector('#users-table tbody');
  const search = async () => {
    const q = form.email.value.trim();
    const list = await guard('Loading users', () => api('/admin/users?limit=100' + (q ? '&email=' + encodeURIComponent(q) : '')));
    if (!list) return;
    body.replaceChildren(...(list.users.length ? list.users.map(u => row(u, me))
      : [el('tr', {}, el('td', { colspan: 5, class: 'empty', text: 'No user matches.' }))]));
  };
  form.addEventListener('submit', ev => { ev.preventDefault(); search(); });
  await search();
}

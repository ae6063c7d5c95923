// usage.js: usage by day and model over a date range, with totals and a
// CSV download made in the page.
import { api, guard, el, num, day, status } from './core.js';

let current = null;

function csvField(v) {
  const s = String(v);
  // Quote what CSV needs quoted; a leading =, +, - or @ is prefixed so a
  // spreadsheet does not run a model name as a formula.
  const safe = /^[=+\-@]/.test(s) ? "'" + s : s;
  return /[",\n\r]/.test(safe) ? '"' + safe.replace(/"/g, '""') + '"' : safe;
}

export function toCSV(rep) {
  const lines = [['day', 'model', 'requests', 'prompt_tokens', 'completion_tokens', 'total_tokens']];
  for (const r of rep.days) lines.push([r.day, r.model, r.requests, r.prompt_tokens, r.completion_tokens, r.total_tokens]);
  const t = rep.totals;
  lines.push(['total', '', t.requests, t.prompt_tokens, t.completion_tokens, t.total_tokens]);
  return lines.map(l => l.map(csvField).join(',')).join('\r\n') + '\r\n';
}

function render(rep) {
  const body = document.querySelector('#usage-table tbody');
  const foot = document.querySelector('#usage-table tfoot');
  if (!rep.days.length) {
    body.replaceChildren(el('tr', {}, el('td', { colspan: 6, class: 'empty', text: 'No usage in this range.' })));
  } else {
    body.replaceChildren(...rep.days.map(r => el('tr', {},
      el('td', { text: r.day }), el('td', { text: r.model }),
      el('td', { class: 'num', text: num(r.requests) }), el('td', { class: 'num', text: num(r.prompt_tokens) }),
      el('td', { class: 'num', text: num(r.completion_tokens) }), el('td', { class: 'num', text: num(r.total_tokens) }))));
  }
  const t = rep.totals;
  foot.replaceChildren(el('tr', {},
    el('td', { text: 'Total' }), el('td', { text: `${rep.from} to ${rep.to}` }),
    el('td', { class: 'num', text: num(t.requests) }), el('td', { class: 'num', text: num(t.prompt_tokens) }),
    el('td', { class: 'num', text: num(t.completion_tokens) }), el('td', { class: 'num', id: 'usage-total', text: num(t.total_tokens) })));
}

export async function usagePage() {
  const form = document.getElementById('range-form');
  const csv = document.getElementById('csv');
  const to = new Date();
  form.from.value = day(new Date(to.getTime() - 29 * 86400000));
  form.to.value = day(to);
  const load = async () => {
    if (form.from.value > form.to.value) { status('“From” must not be after “To”.', 'error'); return; }
    const rep = await guard('Loading usage', () => api(`/usage?from=${encodeURIComponent(form.from.value)}&to=${encodeURIComponent(form.to.value)}`));
    if (!rep) return;
    current = rep;
    render(rep);
    csv.disabled = false;
  };
  form.addEventListener('submit', ev => { ev.preventDefault(); load(); });
  csv.addEventListener('click', () => {
    if (!current) return;
    const url = URL.createObjectURL(new Blob([toCSV(current)], { type: 'text/csv' }));
    const a = el('a', { href: url, download: `usage-${current.from}-to-${current.to}.csv` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  });
  await load();
}

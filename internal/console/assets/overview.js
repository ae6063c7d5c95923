// overview.js: tier, rate-limit bucket, today's tokens, and 30 days of use.
import { api, guard, el, num, day } from './core.js';
import { drawChart, models, seriesClass } from './chart.js';

function set(id, text) { document.getElementById(id).textContent = text; }

function inSeconds(s) {
  if (s <= 0) return 'now';
  if (s < 120) return 'in ' + s + ' s';
  if (s < 7200) return 'in ' + Math.round(s / 60) + ' min';
  return 'in ' + Math.round(s / 3600) + ' h';
}

export async function overviewPage() {
  const quota = guard('Loading your limits', () => api('/chat/quota'));
  const to = new Date();
  const from = new Date(to.getTime() - 29 * 86400000);
  const chartStatus = document.getElementById('chart-status');
  const usage = guard('Loading usage', () => api(`/usage?from=${day(from)}&to=${day(to)}`), chartStatus);

  const q = await quota;
  if (q) {
    set('tier', q.tier);
    set('bucket', `${num(q.remaining)} of ${num(q.limit)} left`);
    set('bucket-note', q.remaining < q.limit ? `Full again ${inSeconds(q.reset_seconds)}.` : 'The bucket is full.');
    const b = q.token_budget || {};
    if (b.limit === null || b.limit === undefined) {
      set('budget', `${num(b.used)} used`);
      set('budget-note', 'Your tier has no daily token budget.');
    } else {
      set('budget', `${num(b.remaining)} of ${num(b.limit)} left`);
      set('budget-note', `${num(b.used)} used today; resets ${inSeconds(b.reset_seconds)} (midnight UTC).`);
    }
  }
  const rep = await usage;
  if (!rep) return;
  const days = [];
  for (let t = from.getTime(); days.length < 30; t += 86400000) days.push(day(new Date(t)));
  const ms = models(rep.days);
  drawChart(document.getElementById('chart-tokens'), { days, rows: rep.days, metric: 'total_tokens', unit: 'tokens', label: 'Tokens per day', models: ms });
  drawChart(document.getElementById('chart-requests'), { days, rows: rep.days, metric: 'requests', unit: 'requests', label: 'Requests per day', models: ms });
  document.getElementById('legend').replaceChildren(...ms.map(m =>
    el('li', {}, el('span', { class: 'swatch ' + seriesClass(ms, m), 'aria-hidden': 'true' }), m)));
}

// chart.js: a stacked bar chart of usage per day by model, drawn as SVG.
// Colours come from the style sheet (classes s0..s7), so the chart follows
// the light or dark scheme; nothing is styled inline.
import { num } from './core.js';

const NS = 'http://www.w3.org/2000/svg';
const W = 640, H = 240, LEFT = 56, RIGHT = 8, TOP = 10, BOTTOM = 28;

function svg(tag, attrs, ...kids) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  for (const k of kids) e.append(k);
  return e;
}

// models lists a report's models, the busiest first (their colour order).
export function models(rows) {
  const total = new Map();
  for (const r of rows) total.set(r.model, (total.get(r.model) || 0) + r.total_tokens);
  return [...total.keys()].sort((a, b) => total.get(b) - total.get(a) || a.localeCompare(b));
}

// seriesClass is a model's colour class; more than eight models share.
export function seriesClass(models, model) { return 's' + (models.indexOf(model) % 8); }

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// drawChart replaces container's content with the chart of metric
// ('total_tokens' or 'requests') over days (YYYY-MM-DD strings, in order).
export function drawChart(container, { days, rows, metric, unit, label, models: ms }) {
  const byDay = new Map(days.map(d => [d, []]));
  let total = 0;
  for (const r of rows) {
    if (!byDay.has(r.day) || !r[metric]) continue;
    byDay.get(r.day).push(r);
    total += r[metric];
  }
  let peak = 0;
  for (const list of byDay.values()) peak = Math.max(peak, list.reduce((s, r) => s + r[metric], 0));
  const max = niceMax(peak);
  const plotW = W - LEFT - RIGHT, plotH = H - TOP - BOTTOM;
  const band = plotW / days.length;
  const summary = label + ': ' + num(total) + ' ' + unit + ' over ' + days.length + ' days' +
    (peak ? ', at most ' + num(peak) + ' in a day.' : '.');
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': summary, 'data-total': total, 'data-metric': metric });
  for (const f of [0, 0.5, 1]) {
    const y = TOP + plotH - f * plotH;
    root.append(svg('line', { class: 'axis', x1: LEFT, x2: W - RIGHT, y1: y, y2: y }));
    const v = f * max;
    root.append(svg('text', { x: LEFT - 6, y: y + 4, 'text-anchor': 'end' }, Number.isInteger(v) ? num(v) : v.toFixed(1)));
  }
  days.forEach((d, i) => {
    const x = LEFT + i * band;
    let y = TOP + plotH;
    for (const r of byDay.get(d)) {
      const h = (r[metric] / max) * plotH;
      y -= h;
      const rect = svg('rect', {
        x: (x + band * 0.15).toFixed(2), y: y.toFixed(2), width: (band * 0.7).toFixed(2), height: Math.max(h, 1).toFixed(2),
        class: seriesClass(ms, r.model), 'data-day': d, 'data-model': r.model, 'data-value': r[metric],
      });
      rect.append(svg('title', {}, `${d} · ${r.model}: ${num(r[metric])} ${unit}`));
      root.append(rect);
    }
    // A date under every seventh bar and the last, never two crowded together.
    if ((i % 7 === 0 && days.length - 1 - i >= 4) || i === days.length - 1) {
      root.append(svg('text', { x: x + band / 2, y: H - 8, 'text-anchor': 'middle' }, d.slice(5)));
    }
  });
  if (!total) {
    root.append(svg('text', { class: 'empty-text', x: LEFT + plotW / 2, y: TOP + plotH / 2, 'text-anchor': 'middle' }, 'No usage in these days yet'));
  }
  container.replaceChildren(root);
}

// playground.js: chat with a model, the answer streamed as it arrives
// (POST /v1/responses with stream: true). The service stores each answer;
// the next turn names it (previous_response_id), so the conversation
// continues without resending it. Stop aborts the request, which cancels
// the model call upstream.
import { api, raw, refusal, guard, el, num, status, SignedOut } from './core.js';

let previous = null; // id of the last completed response: the conversation so far
let running = null; // AbortController of the answer being streamed

function item(role, text) {
  const t = el('p', { class: 'text', text });
  const meta = el('p', { class: 'meta' });
  const li = el('li', { class: role }, el('p', { class: 'who-said', text: role === 'user' ? 'You' : 'Model' }), t, meta);
  document.getElementById('transcript').append(li);
  li.scrollIntoView({ block: 'nearest' });
  return { li, text: t, meta };
}

// events yields the data of each server-sent event of a response body.
async function* events(body) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true }).replace(/\r\n/g, '\n');
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = block.split('\n').filter(l => l.startsWith('data:')).map(l => l.slice(5).trimStart()).join('\n');
      if (data) yield data;
    }
  }
}

async function send(model, input, out) {
  running = new AbortController();
  const body = { model, input, stream: true };
  if (previous) body.previous_response_id = previous;
  const r = await raw('/v1/responses', { method: 'POST', signal: running.signal, body });
  if (!r.ok) throw await refusal(r);
  let text = '';
  let final = null;
  for await (const data of events(r.body)) {
    let ev;
    try { ev = JSON.parse(data); } catch (_) { continue; }
    switch (ev.type) {
      case 'response.output_text.delta':
        text += ev.delta || '';
        out.text.textContent = text;
        break;
      case 'response.completed':
      case 'response.incomplete':
        final = ev.response;
        break;
      case 'response.failed':
        throw new Error((ev.response && ev.response.error && ev.response.error.message) || 'The model failed mid-answer.');
      case 'error':
        throw new Error((ev.error && ev.error.message) || ev.message || 'The model failed mid-answer.');
    }
  }
  if (!final) throw new Error('The answer ended early.');
  return { text, id: final.id, usage: final.usage };
}

export async function playgroundPage() {
  const form = document.getElementById('chat-form');
  const select = document.getElementById('model');
  const prompt = document.getElementById('prompt');
  const sendBtn = document.getElementById('chat-send');
  const stopBtn = document.getElementById('chat-stop');

  const list = await guard('Loading models', () => api('/v1/models'));
  if (list) {
    select.replaceChildren(...list.data.map(m => el('option', { value: m.id, text: m.id })));
  }

  const busy = on => {
    sendBtn.disabled = on;
    stopBtn.disabled = !on;
    form.dataset.streaming = on ? 'true' : 'false';
  };
  stopBtn.addEventListener('click', () => { if (running) running.abort(); });
  document.getElementById('chat-new').addEventListener('click', () => {
    if (running) running.abort();
    previous = null;
    document.getElementById('transcript').replaceChildren();
    status('New conversation.', 'ok');
    prompt.focus();
  });
  prompt.addEventListener('keydown', ev => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const text = prompt.value.trim();
    if (!text || running) return;
    if (!select.value) { status('No model to talk to: the model list did not load.', 'error'); return; }
    status('', '');
    prompt.value = '';
    item('user', text);
    const out = item('assistant', '');
    out.li.setAttribute('aria-busy', 'true');
    out.meta.textContent = 'Answering…';
    busy(true);
    try {
      const res = await send(select.value, text, out);
      previous = res.id;
      out.meta.textContent = res.usage
        ? `${num(res.usage.total_tokens)} tokens (${num(res.usage.input_tokens)} in, ${num(res.usage.output_tokens)} out)`
        : 'Done.';
      out.li.dataset.tokens = res.usage ? String(res.usage.total_tokens) : '';
    } catch (e) {
      if (e && e.name === 'AbortError') {
        // A stopped answer is not part of the conversation: the next
        // turn follows the last complete one.
        out.meta.textContent = 'Stopped; not part of the conversation.';
        out.li.dataset.stopped = 'true';
      } else if (!(e instanceof SignedOut)) {
        out.meta.textContent = e.message || 'The answer failed.';
        out.meta.classList.add('error');
      }
    } finally {
      out.li.removeAttribute('aria-busy');
      running = null;
      busy(false);
    }
    prompt.focus();
  });
  busy(false);
}

// playground.js: chat with a model, the answer streamed as it arrives
// (POST /v1/chat/completions with stream: true). The conversation is kept
// in this page's memory and sent whole with each turn; Stop aborts the
// request, which cancels the model call upstream.
import { api, raw, refusal, guard, el, num, status, SignedOut } from './core.js';

const history = [];
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

async function send(model, out) {
  running = new AbortController();
  const r = await raw('/v1/chat/completions', {
    method: 'POST', signal: running.signal,
    body: { model, messages: history, stream: true, stream_options: { include_usage: true } },
  });
  if (!r.ok) throw await refusal(r);
  let text = '';
  let usage = null;
  for await (const data of events(r.body)) {
    if (data === '[DONE]') break;
    let chunk;
    try { chunk = JSON.parse(data); } catch (_) { continue; }
    if (chunk.error) throw new Error(chunk.error.message || 'The model failed mid-answer.');
    const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
    if (delta && delta.content) {
      text += delta.content;
      out.text.textContent = text;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  return { text, usage };
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
    history.length = 0;
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
    history.push({ role: 'user', content: text });
    const out = item('assistant', '');
    out.li.setAttribute('aria-busy', 'true');
    out.meta.textContent = 'Answering…';
    busy(true);
    let answer = '';
    try {
      const res = await send(select.value, out);
      answer = res.text;
      out.meta.textContent = res.usage
        ? `${num(res.usage.total_tokens)} tokens (${num(res.usage.prompt_tokens)} in, ${num(res.usage.completion_tokens)} out)`
        : 'Done.';
      out.li.dataset.tokens = res.usage ? String(res.usage.total_tokens) : '';
    } catch (e) {
      answer = out.text.textContent;
      if (e && e.name === 'AbortError') {
        out.meta.textContent = 'Stopped.';
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
    if (answer) history.push({ role: 'assistant', content: answer });
    else history.pop(); // nothing came back: the question can be asked again
    prompt.focus();
  });
  busy(false);
}

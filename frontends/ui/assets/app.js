// Kiln playground. Talks to the server through its public routes only:
// /v1/models, /v1/chat/completions, /v1/completions, /v1/server_info,
// /metrics and /health. No dependencies, nothing loaded from elsewhere.
'use strict';

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = 'kiln-api-key';
const METRICS_EVERY_MS = 2000;
const METRICS_WINDOW = 150; // samples: 5 minutes at METRICS_EVERY_MS

const state = {
  model: null,
  chat: [],            // {role, content} of the conversation so far
  chatAbort: null,     // AbortController of the chat stream in flight
  completionAbort: null,
  samples: [],         // derived metrics, oldest first
  lastScrape: null,    // raw counters of the previous scrape
};

// --- errors and the API key ------------------------------------------------

function showError(message) {
  const box = $('error');
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $('error').hidden = true;
}

function askForKey() {
  $('key-form').hidden = false;
  $('key-input').focus();
}

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { authorization: `Bearer ${key}` } : {};
}

// The message of an error body in any of the server's dialects.
function errorText(body, status) {
  if (!body) return `HTTP ${status}`;
  if (typeof body.error === 'string') return body.error;
  if (body.error && body.error.message) return body.error.message;
  if (body.message) return body.message;
  return `HTTP ${status}`;
}

async function api(path, options = {}) {
  const init = {
    ...options,
    headers: { 'content-type': 'application/json', ...authHeaders(), ...(options.headers || {}) },
  };
  const res = await fetch(path, init);
  if (res.status === 401) {
    askForKey();
    throw new Error('This server needs an API key: enter it above, then try again.');
  }
  if (!res.ok) {
    let body = null;
    try { body = await res.json(); } catch (_) { /* not JSON */ }
    throw new Error(errorText(body, res.status));
  }
  return res;
}

// Server-sent events of an OpenAI streaming response: calls onChunk with
// each JSON payload until `[DONE]`; an `error` payload is thrown.
async function readEvents(res, onChunk) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data:')) continue;
        const data = line.slice(5).trim();
        if (data === '[DONE]') return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(errorText(chunk, 500));
        onChunk(chunk);
      }
    }
  }
}

// --- chat -------------------------------------------------------------------

function addMessage(role, text) {
  const div = document.createElement('div');
  div.className = `message ${role}`;
  const label = document.createElement('span');
  label.className = 'role';
  label.textContent = role;
  const body = document.createElement('span');
  body.className = 'content';
  body.textContent = text;
  div.append(label, body);
  $('messages').append(div);
  div.scrollIntoView({ block: 'end' });
  return body;
}

function parseJsonBox(id, what) {
  const text = $(id).value.trim();
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${what} is not valid JSON: ${e.message}`);
  }
}

function samplingFields() {
  const fields = {
    temperature: Number($('temperature').value),
    top_p: Number($('top-p').value),
    max_tokens: Number($('max-tokens').value) || undefined,
  };
  const seed = $('seed').value.trim();
  if (seed !== '') fields.seed = Number(seed);
  return fields;
}

function speedLine(started, firstTokenAt, usage) {
  const parts = [];
  if (firstTokenAt) parts.push(`first token ${((firstTokenAt - started) / 1000).toFixed(2)} s`);
  if (usage) {
    const seconds = (performance.now() - (firstTokenAt || started)) / 1000;
    parts.push(`${usage.prompt_tokens} prompt + ${usage.completion_tokens} generated tokens`);
    if (seconds > 0 && usage.completion_tokens > 1) {
      parts.push(`${((usage.completion_tokens - 1) / seconds).toFixed(1)} tokens/s`);
    }
  }
  return parts.join(' · ');
}

function setChatBusy(busy) {
  $('chat-send').disabled = busy;
  $('chat-stop').disabled = !busy;
}

async function sendChat(event) {
  event.preventDefault();
  if (state.chatAbort) return;
  const text = $('chat-input').value.trim();
  if (!text) return;
  clearError();
  let schema, tools;
  try {
    schema = parseJsonBox('json-schema', 'The JSON schema');
    tools = parseJsonBox('tools', 'The tools');
  } catch (e) {
    showError(e.message);
    return;
  }
  $('chat-input').value = '';
  state.chat.push({ role: 'user', content: text });
  addMessage('user', text);
  const system = $('system-prompt').value.trim();
  const messages = system ? [{ role: 'system', content: system }, ...state.chat] : [...state.chat];
  const body = {
    model: state.model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    ...samplingFields(),
  };
  if (schema) body.response_format = { type: 'json_schema', json_schema: { name: 'playground', schema } };
  if (tools) body.tools = tools;

  const out = addMessage('assistant', '');
  const controller = new AbortController();
  state.chatAbort = controller;
  setChatBusy(true);
  const started = performance.now();
  let firstTokenAt = null;
  let usage = null;
  let answer = '';
  const toolCalls = [];
  try {
    const res = await api('/v1/chat/completions', {
      method: 'POST', body: JSON.stringify(body), signal: controller.signal,
    });
    await readEvents(res, (chunk) => {
      if (chunk.usage) usage = chunk.usage;
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (!delta) return;
      if (delta.content) {
        if (!firstTokenAt) firstTokenAt = performance.now();
        answer += delta.content;
      }
      for (const call of delta.tool_calls || []) {
        const slot = toolCalls[call.index] || (toolCalls[call.index] = { name: '', arguments: '' });
        if (call.function && call.function.name) slot.name += call.function.name;
        if (call.function && call.function.arguments) slot.arguments += call.function.arguments;
      }
      out.textContent = answer + toolCalls.map((c) => `\n[tool call] ${c.name}(${c.arguments})`).join('');
      out.parentElement.scrollIntoView({ block: 'end' });
    });
    $('chat-stats').textContent = speedLine(started, firstTokenAt, usage);
  } catch (e) {
    if (e.name === 'AbortError') {
      out.textContent = `${answer} [stopped]`;
    } else {
      out.parentElement.classList.add('error');
      out.textContent = e.message;
      showError(e.message);
    }
  } finally {
    if (answer) state.chat.push({ role: 'assistant', content: answer });
    state.chatAbort = null;
    setChatBusy(false);
  }
}

// --- raw completion ---------------------------------------------------------

async function sendCompletion(event) {
  event.preventDefault();
  if (state.completionAbort) return;
  const prompt = $('completion-prompt').value;
  if (!prompt) return;
  clearError();
  const out = $('completion-output');
  out.textContent = '';
  const controller = new AbortController();
  state.completionAbort = controller;
  $('completion-send').disabled = true;
  $('completion-stop').disabled = false;
  const started = performance.now();
  let firstTokenAt = null;
  let usage = null;
  try {
    const res = await api('/v1/completions', {
      method: 'POST',
      body: JSON.stringify({
        model: state.model, prompt, stream: true, stream_options: { include_usage: true }, ...samplingFields(),
      }),
      signal: controller.signal,
    });
    await readEvents(res, (chunk) => {
      if (chunk.usage) usage = chunk.usage;
      const text = chunk.choices && chunk.choices[0] && chunk.choices[0].text;
      if (text) {
        if (!firstTokenAt) firstTokenAt = performance.now();
        out.textContent += text;
      }
    });
    $('completion-stats').textContent = speedLine(started, firstTokenAt, usage);
  } catch (e) {
    if (e.name === 'AbortError') out.textContent += ' [stopped]';
    else showError(e.message);
  } finally {
    state.completionAbort = null;
    $('completion-send').disabled = false;
    $('completion-stop').disabled = true;
  }
}

// --- live metrics -----------------------------------------------------------

// Prometheus text format → {name: value summed over label sets}; histogram
// buckets are skipped (their _sum and _count are kept).
function parseMetrics(text) {
  const values = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = line.match(/^([A-Za-z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/);
    if (!m || m[1].endsWith('_bucket')) continue;
    values[m[1]] = (values[m[1]] || 0) + Number(m[3]);
  }
  return values;
}

function perInterval(now, before, sumName, countName) {
  const count = (now[countName] || 0) - (before[countName] || 0);
  if (count <= 0) return null;
  return (((now[sumName] || 0) - (before[sumName] || 0)) / count) * 1000;
}

async function scrapeMetrics() {
  let text;
  try {
    const res = await fetch('/metrics', { headers: authHeaders() });
    if (!res.ok) return;
    text = await res.text();
  } catch (_) {
    return;
  }
  const now = { t: performance.now(), ...parseMetrics(text) };
  const before = state.lastScrape;
  state.lastScrape = now;
  if (!before) return;
  const seconds = (now.t - before.t) / 1000;
  const generated = (now['vllm:generation_tokens_total'] || 0) - (before['vllm:generation_tokens_total'] || 0);
  state.samples.push({
    tps: seconds > 0 ? Math.max(0, generated / seconds) : 0,
    running: now['vllm:num_requests_running'] || 0,
    waiting: now['vllm:num_requests_waiting'] || 0,
    kv: (now['vllm:kv_cache_usage_perc'] || 0) * 100,
    ttft: perInterval(now, before, 'vllm:time_to_first_token_seconds_sum', 'vllm:time_to_first_token_seconds_count'),
    itl: perInterval(now, before, 'vllm:inter_token_latency_seconds_sum', 'vllm:inter_token_latency_seconds_count'),
  });
  if (state.samples.length > METRICS_WINDOW) state.samples.shift();
  drawPlots();
}

function drawPlot(canvas) {
  const names = canvas.dataset.series.split(',');
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  if (!width || !height) return; // hidden tab: drawn when shown
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext('2d');
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const style = getComputedStyle(document.documentElement);
  const all = state.samples.flatMap((s) => names.map((n) => s[n])).filter((v) => v !== null);
  const top = Math.max(1, ...all) * 1.1;
  g.strokeStyle = style.getPropertyValue('--line');
  g.fillStyle = style.getPropertyValue('--muted');
  g.font = '11px system-ui, sans-serif';
  g.lineWidth = 1;
  for (const frac of [0, 0.5, 1]) {
    const y = height - 14 - frac * (height - 24);
    g.beginPath(); g.moveTo(0, y); g.lineTo(width, y); g.stroke();
    g.fillText((top * frac).toFixed(top < 10 ? 1 : 0), 2, y - 2);
  }
  const step = width / Math.max(1, METRICS_WINDOW - 1);
  const offset = METRICS_WINDOW - state.samples.length;
  let nonzero = 0;
  names.forEach((name, i) => {
    g.strokeStyle = style.getPropertyValue(`--series-${i}`);
    g.lineWidth = 2;
    g.beginPath();
    let drawing = false;
    const marks = [];
    state.samples.forEach((s, j) => {
      const v = s[name];
      if (v === null) { drawing = false; return; }
      if (v > 0) nonzero += 1;
      const x = (offset + j) * step;
      const y = height - 14 - (v / top) * (height - 24);
      if (drawing) g.lineTo(x, y); else g.moveTo(x, y);
      drawing = true;
      marks.push([x, y]);
    });
    g.stroke();
    // Dots too, so that a lone sample between gaps is visible.
    g.fillStyle = g.strokeStyle;
    for (const [x, y] of marks) g.fillRect(x - 1.5, y - 1.5, 3, 3);
  });
  // Read by the browser tests: how many plotted points are above zero.
  canvas.dataset.nonzero = String(nonzero);
}

function drawPlots() {
  const last = state.samples[state.samples.length - 1];
  if (last) {
    $('now-tps').textContent = last.tps.toFixed(1);
    $('now-reqs').textContent = `${last.running} / ${last.waiting}`;
    $('now-kv').textContent = `${last.kv.toFixed(1)}%`;
    const ms = (v) => (v === null ? '–' : v.toFixed(0));
    $('now-lat').textContent = `${ms(last.ttft)} / ${ms(last.itl)}`;
  }
  document.querySelectorAll('canvas[data-series]').forEach(drawPlot);
}

// --- model card and health ----------------------------------------------------

function humanBytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function humanCount(n) {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} M`;
  return String(n);
}

async function loadModelCard() {
  const res = await api('/v1/server_info');
  const info = (await res.json()).engine;
  const rows = [
    ['Model', info.model_id],
    ['Architecture', `${info.architecture} (${info.family})`],
    ['Parameters', humanCount(info.num_parameters)],
    ['Format', info.format],
    ['Quantization', info.quantization || 'none'],
    ['Dtype', info.dtype],
    ['Context', `${info.max_model_len} tokens (native ${info.native_context_length})`],
    ['KV cache', `${humanBytes(info.kv_cache_bytes)}: ${info.num_kv_blocks} blocks × ${info.block_size} tokens`],
    ['Weights', humanBytes(info.weights_bytes)],
    ['Backend', `${info.backend} on ${info.device}`],
    ['Batch', `${info.max_num_seqs} sequences, ${info.max_num_batched_tokens} tokens per step`],
    ['Prefix caching', info.enable_prefix_caching ? 'on' : 'off'],
    ['Kiln', info.version],
  ];
  const table = $('model-card');
  table.replaceChildren(...rows.map(([k, v]) => {
    const tr = document.createElement('tr');
    const th = document.createElement('th');
    const td = document.createElement('td');
    th.textContent = k;
    td.textContent = v;
    tr.append(th, td);
    return tr;
  }));
}

async function checkHealth() {
  const dot = $('health');
  try {
    const res = await fetch('/health');
    dot.className = `dot ${res.ok ? 'ok' : 'bad'}`;
    dot.title = res.ok ? 'healthy' : 'unhealthy';
  } catch (_) {
    dot.className = 'dot bad';
    dot.title = 'unreachable';
  }
}

async function connect() {
  try {
    const res = await api('/v1/models');
    const models = (await res.json()).data;
    state.model = models[0].id;
    $('model-name').textContent = state.model;
    clearError();
    await loadModelCard();
  } catch (e) {
    showError(e.message);
  }
}

// --- wiring -----------------------------------------------------------------

function showView(name) {
  document.querySelectorAll('.tab').forEach((b) => b.classList.toggle('active', b.dataset.view === name));
  document.querySelectorAll('.view').forEach((v) => v.classList.toggle('active', v.id === `view-${name}`));
  if (name === 'metrics') drawPlots();
}

function wire() {
  document.querySelectorAll('.tab').forEach((b) => b.addEventListener('click', () => showView(b.dataset.view)));
  $('chat-form').addEventListener('submit', sendChat);
  $('chat-input').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) sendChat(e);
  });
  $('chat-stop').addEventListener('click', () => state.chatAbort && state.chatAbort.abort());
  $('chat-clear').addEventListener('click', () => {
    state.chat = [];
    $('messages').replaceChildren();
    $('chat-stats').textContent = '';
  });
  $('completion-form').addEventListener('submit', sendCompletion);
  $('completion-stop').addEventListener('click', () => state.completionAbort && state.completionAbort.abort());
  for (const id of ['temperature', 'top-p']) {
    $(id).addEventListener('input', () => { $(`${id}-value`).textContent = $(id).value; });
  }
  $('key-button').addEventListener('click', askForKey);
  $('key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const key = $('key-input').value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    $('key-input').value = '';
    $('key-form').hidden = true;
    connect();
  });
  window.addEventListener('resize', drawPlots);
}

wire();
connect();
checkHealth();
scrapeMetrics();
setInterval(checkHealth, 5000);
setInterval(scrapeMetrics, METRICS_EVERY_MS);

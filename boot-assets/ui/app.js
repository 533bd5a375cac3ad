// ramboot admin page. Plain JavaScript, no framework. The admin token is held in sessionStorage
// (this tab only, never in a URL) and sent as a Bearer header, to the API and to the live event
// stream (read with fetch streaming: EventSource cannot send headers).
const TOKEN_KEY = 'ramboot.token';
const MODES = ['ramboot', 'once', 'local'];
/** Boot steps in order; the progress bar shows how far the newest boot got. */
const STEPS = 4;

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  machines: new Map(), // mac -> record
  boots: new Map(), // mac -> { step, label, detail, bytes, percent, lastSeen }
  rows: new Map(), // mac -> row elements
  seen: new Set(), // "mac|time|event|message" of events applied (dedup of replays)
  selected: null,
  lastEventId: null,
  abort: null,
  loading: null, // events queued while a full load runs
};

function say(text, isError = false) {
  const s = $('status');
  s.textContent = text;
  s.classList.toggle('error', isError);
}

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

class ApiError extends Error {}

async function api(method, path, body, accept = 'application/json') {
  const headers = { Authorization: `Bearer ${state.token}`, Accept: accept };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  if (res.status === 401) {
    signOut('The server refused the token. Sign in again.');
    throw new ApiError('unauthorized');
  }
  const text = await res.text();
  if (!res.ok) {
    let msg = text;
    try {
      msg = JSON.parse(text).error || text;
    } catch {
      // not JSON
    }
    throw new ApiError(`${res.status}: ${msg}`);
  }
  if (accept !== 'application/json') return text;
  return text ? JSON.parse(text) : undefined;
}

const macPath = (mac) => `/api/v1/machines/${encodeURIComponent(mac)}`;

// ---- sign in / out -------------------------------------------------------------------------

async function signIn(token) {
  state.token = token;
  try {
    await loadAll();
  } catch (e) {
    if (!(e instanceof ApiError) || e.message !== 'unauthorized') say(`Cannot load machines: ${e.message}`, true);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $('login-section').hidden = true;
  $('app').hidden = false;
  $('logout').hidden = false;
  say(`Signed in. ${state.machines.size} machine(s).`);
  void follow();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = '';
  state.abort?.abort();
  state.abort = null;
  $('app').hidden = true;
  $('logout').hidden = true;
  $('live').hidden = true;
  $('login-section').hidden = false;
  $('token').value = '';
  $('token').focus();
  say(message || 'Signed out.', !!message);
}

// ---- loading ----------------------------------------------------------------------------------

async function loadAll() {
  state.loading = [];
  const { machines } = await api('GET', '/api/v1/machines');
  state.machines = new Map(machines.map((m) => [m.mac, m]));
  state.boots.clear();
  state.seen.clear();
  for (const [mac, r] of state.rows) if (!state.machines.has(mac)) (r.tr.remove(), state.rows.delete(mac));
  // each machine's recent timeline gives its last-seen time and current boot stage
  await Promise.all(
    machines.map(async (m) => {
      const { events } = await api('GET', `${macPath(m.mac)}/events?limit=100`);
      for (const ev of events) applyEvent(m.mac, ev);
    }),
  );
  const queued = state.loading;
  state.loading = null;
  for (const ev of queued) onLive(ev);
  renderAll();
  if (state.selected) await showTimeline(state.selected, false);
}

async function refreshMachine(mac) {
  try {
    state.machines.set(mac, await api('GET', macPath(mac)));
  } catch (e) {
    if (e instanceof ApiError && e.message.startsWith('404')) state.machines.delete(mac);
    else throw e;
  }
  renderAll();
}

// ---- boot stages ------------------------------------------------------------------------------

function fmtBytes(n) {
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(0)} KiB`;
  return `${n} B`;
}

/** Fold one timeline event into a machine's boot state. Returns true when it was new. */
function applyEvent(mac, ev) {
  const key = `${mac}|${ev.time}|${ev.event}|${ev.message}`;
  if (state.seen.has(key)) return false;
  state.seen.add(key);
  const b = state.boots.get(mac) || { step: 0, label: 'idle', detail: '', bytes: 0, percent: null, lastSeen: null };
  if (!ev.event.startsWith('api.')) b.lastSeen = ev.time;
  const d = ev.data || {};
  switch (ev.event) {
    case 'tftp.transfer':
      if (b.step >= STEPS || b.step === 0) Object.assign(b, { step: 0.5, label: 'firmware', detail: ev.message, bytes: 0, percent: null });
      break;
    case 'ipxe.script':
      Object.assign(b, { step: 1, label: 'boot script', detail: ev.message, bytes: 0, percent: null });
      break;
    case 'ipxe.local':
      Object.assign(b, { step: 0, label: 'local disk', detail: ev.message, percent: null });
      break;
    case 'ipxe.refused':
      Object.assign(b, { step: 0, label: 'refused', detail: ev.message, percent: null });
      break;
    case 'image.fetch':
      b.bytes += typeof d.bytes === 'number' ? d.bytes : 0;
      Object.assign(b, { step: Math.max(b.step, 2), label: 'image', detail: `${d.file || 'image'}: ${fmtBytes(b.bytes)} fetched` });
      break;
    case 'cloud-init.user-data':
      Object.assign(b, { step: Math.max(b.step, 2.5), label: 'OS starting', detail: ev.message });
      break;
    case 'os.sshd.ready':
      Object.assign(b, { step: Math.max(b.step, 3), label: 'SSH up', detail: ev.message });
      break;
    case 'phone-home.ready':
      Object.assign(b, { step: STEPS, label: 'ready', detail: ev.message });
      break;
    case 'deploy.progress':
      if (typeof d.percent === 'number') Object.assign(b, { label: 'deploying', percent: Math.max(0, Math.min(100, d.percent)), detail: ev.message });
      break;
    default:
      if (ev.event.startsWith('os.') || ev.event.startsWith('deploy.')) b.detail = ev.message;
  }
  state.boots.set(mac, b);
  return true;
}

// ---- rendering ----------------------------------------------------------------------------------

function fmtTime(iso) {
  if (!iso) return '-';
  const t = new Date(iso);
  return t.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' });
}

function makeRow(mac) {
  const host = el('td');
  const stateCell = el('td');
  const seen = el('td');
  const bar = el('progress', { max: 100, value: 0, 'aria-label': `Boot progress of ${mac}` });
  const stageText = el('small');
  const stage = el('td', { class: 'stage' }, bar, stageText);
  const modeButtons = MODES.map((mode) =>
    el('button', { type: 'button', 'data-mode': mode, 'aria-pressed': 'false', onclick: () => setBoot(mac, mode) }, mode),
  );
  const modes = el('div', { class: 'group', role: 'group', 'aria-label': `Boot mode of ${mac}` }, ...modeButtons);
  const timelineBtn = el('button', { type: 'button', 'aria-controls': 'detail', onclick: () => showTimeline(mac, true) }, 'Timeline');
  const adoptBtn = el('button', { type: 'button', onclick: () => toggleAdopt(mac) }, 'Adopt…');
  const actions = el('div', { class: 'actions' }, timelineBtn, adoptBtn);
  const adoptBox = el('div');
  const tr = el('tr', { 'data-mac': mac }, el('td', {}, el('code', { class: 'mac', text: mac })), host, stateCell, seen, stage, el('td', {}, modes), el('td', {}, actions, adoptBox));
  const row = { tr, host, stateCell, seen, bar, stageText, modeButtons, adoptBtn, adoptBox };
  state.rows.set(mac, row);
  return row;
}

function updateRow(row, m) {
  const b = state.boots.get(m.mac) || { step: 0, label: 'idle', detail: '', percent: null, lastSeen: null };
  row.host.textContent = m.hostname || m.status.reportedHostname || '-';
  row.stateCell.replaceChildren(el('span', { class: `state-${m.status.state}`, text: m.status.state }));
  row.seen.replaceChildren(b.lastSeen ? el('time', { datetime: b.lastSeen, text: fmtTime(b.lastSeen) }) : '-');
  const pct = b.percent !== null && b.percent !== undefined ? b.percent : Math.round((b.step / STEPS) * 100);
  row.bar.value = pct;
  row.bar.setAttribute('aria-valuetext', `${b.label}, ${pct}%`);
  row.stageText.textContent = b.detail ? `${b.label}: ${b.detail}` : b.label;
  for (const btn of row.modeButtons) {
    btn.setAttribute('aria-pressed', String(btn.dataset.mode === m.boot && !m.discovered));
    btn.disabled = m.discovered;
  }
  row.adoptBtn.hidden = !m.discovered;
  if (!m.discovered) row.adoptBox.replaceChildren();
  row.tr.classList.toggle('selected', state.selected === m.mac);
}

function renderAll() {
  const tbody = $('machines').tBodies[0];
  const macs = [...state.machines.keys()].sort();
  for (const [mac, r] of state.rows) if (!state.machines.has(mac)) (r.tr.remove(), state.rows.delete(mac));
  let prev = null;
  for (const mac of macs) {
    const row = state.rows.get(mac) || makeRow(mac);
    updateRow(row, state.machines.get(mac));
    // keep DOM order sorted without re-inserting rows that are in place (focus stays put)
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== row.tr) tbody.insertBefore(row.tr, want);
    prev = row.tr;
  }
  $('count').textContent = `(${macs.length})`;
  $('empty').hidden = macs.length > 0;
}

// ---- actions ----------------------------------------------------------------------------------

async function setBoot(mac, mode) {
  try {
    state.machines.set(mac, await api('PATCH', macPath(mac), { boot: mode }));
    renderAll();
    say(`${mac} now boots: ${mode}.`);
  } catch (e) {
    if (e.message !== 'unauthorized') say(`Could not change ${mac}: ${e.message}`, true);
  }
}

function keyLines(text) {
  return text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
}

function toggleAdopt(mac) {
  const row = state.rows.get(mac);
  if (row.adoptBox.firstChild) return row.adoptBox.replaceChildren();
  const id = `adopt-${mac.replaceAll(':', '')}`;
  const keys = el('textarea', { id: `${id}-keys`, rows: 2, required: true, spellcheck: 'false' });
  const boot = el('select', { id: `${id}-boot` }, ...MODES.map((m) => el('option', { value: m, text: m })));
  const form = el(
    'form',
    { class: 'adopt', 'aria-label': `Adopt ${mac}` },
    el('div', { class: 'field' }, el('label', { for: keys.id, text: `SSH keys for ${mac}` }), keys),
    el('div', { class: 'field' }, el('label', { for: boot.id, text: 'Boot' }), boot),
    el('button', { type: 'submit' }, 'Adopt'),
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      state.machines.set(mac, await api('PATCH', macPath(mac), { sshKeys: keyLines(keys.value), boot: boot.value }));
      renderAll();
      say(`${mac} adopted.`);
      state.rows.get(mac)?.modeButtons[0].focus();
    } catch (err) {
      if (err.message !== 'unauthorized') say(`Could not adopt ${mac}: ${err.message}`, true);
    }
  });
  row.adoptBox.replaceChildren(form);
  keys.focus();
}

async function register(e) {
  e.preventDefault();
  const f = e.target;
  const mac = f.mac.value.trim();
  const body = { sshKeys: keyLines(f.sshKeys.value), boot: f.boot.value };
  if (f.hostname.value.trim()) body.hostname = f.hostname.value.trim();
  try {
    const rec = await api('PUT', macPath(mac), body);
    state.machines.set(rec.mac, rec);
    renderAll();
    f.reset();
    say(`Registered ${rec.mac}.`);
  } catch (err) {
    if (err.message !== 'unauthorized') say(`Could not register ${mac}: ${err.message}`, true);
  }
}

function eventItem(ev) {
  return el('li', { class: ev.level }, el('time', { datetime: ev.time, text: fmtTime(ev.time) }), el('code', { text: ev.event }), el('span', { text: ev.message }));
}

async function showTimeline(mac, focus) {
  state.selected = mac;
  renderAll();
  $('detail').hidden = false;
  $('detail-title').textContent = `Timeline of ${mac}`;
  try {
    const { events } = await api('GET', `${macPath(mac)}/events?limit=500`);
    if (state.selected !== mac) return;
    $('timeline').replaceChildren(...events.map(eventItem));
    await loadKnownHosts(mac);
  } catch (e) {
    if (e.message !== 'unauthorized') say(`Could not load the timeline of ${mac}: ${e.message}`, true);
  }
  if (focus) $('detail-title').focus();
}

async function loadKnownHosts(mac) {
  const text = await api('GET', `${macPath(mac)}/known_hosts`, undefined, 'text/plain');
  if (state.selected !== mac) return;
  $('known-hosts').value = text;
  $('copy-known-hosts').disabled = text === '';
  $('known-hosts').placeholder = text === '' ? 'no host keys yet: the machine has not phoned home' : '';
}

async function copyKnownHosts() {
  const text = $('known-hosts').value;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // clipboard API refused (permissions, http): select it so Ctrl+C copies
    $('known-hosts').select();
    document.execCommand('copy');
  }
  say(`Copied known_hosts of ${state.selected} (${keyLines(text).length} line(s)).`);
}

// ---- live events ----------------------------------------------------------------------------------

function setLive(up) {
  const l = $('live');
  l.hidden = false;
  l.textContent = up ? 'live' : 'reconnecting…';
  l.classList.toggle('down', !up);
}

function onLive(ev) {
  if (state.loading) return void state.loading.push(ev);
  if (!applyEvent(ev.mac, ev)) return;
  if (!state.machines.has(ev.mac) || ev.event.startsWith('api.') || ev.event.startsWith('phone-home.') || ev.event.startsWith('ipxe.')) {
    void refreshMachine(ev.mac);
  } else renderAll();
  if (ev.mac === state.selected) {
    $('timeline').append(eventItem(ev));
    if (ev.event === 'phone-home.ready') void loadKnownHosts(ev.mac);
  }
}

/** Server-Sent Events from a fetch body: yields { id, event, data }. */
async function* sse(body) {
  const reader = body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  let msg = { data: [], event: '', id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += dec.decode(value, { stream: true });
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).replace(/\r$/, '');
      buf = buf.slice(nl + 1);
      if (line === '') {
        if (msg.data.length) yield { id: msg.id, event: msg.event || 'message', data: msg.data.join('\n') };
        msg = { data: [], event: '', id: msg.id };
        continue;
      }
      if (line.startsWith(':')) continue;
      const i = line.indexOf(':');
      const field = i < 0 ? line : line.slice(0, i);
      const v = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
      if (field === 'data') msg.data.push(v);
      else if (field === 'event') msg.event = v;
      else if (field === 'id') msg.id = v;
    }
  }
}

async function follow() {
  while (state.token) {
    const ctrl = new AbortController();
    state.abort = ctrl;
    try {
      const headers = { Authorization: `Bearer ${state.token}`, Accept: 'text/event-stream' };
      if (state.lastEventId) headers['Last-Event-ID'] = state.lastEventId;
      const res = await fetch('/api/v1/events/stream', { headers, signal: ctrl.signal, cache: 'no-store' });
      if (res.status === 401) return signOut('The server refused the token. Sign in again.');
      if (!res.ok) throw new Error(`event stream: ${res.status}`);
      setLive(true);
      for await (const m of sse(res.body)) {
        if (m.id) state.lastEventId = m.id;
        if (m.event === 'reset') {
          await loadAll(); // missed events are gone: re-read everything
          continue;
        }
        if (m.event === 'message') onLive(JSON.parse(m.data));
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    if (!state.token) return;
    setLive(false);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

// ---- start ----------------------------------------------------------------------------------

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  void signIn($('token').value.trim());
});
$('logout').addEventListener('click', () => signOut());
$('register-form').addEventListener('submit', register);
$('copy-known-hosts').addEventListener('click', () => void copyKnownHosts());
if (state.token) void signIn(state.token);
else $('token').focus();

// The lane screen. Plain script, no framework, nothing fetched from outside the appliance.
// State comes from /api/stream (server-sent events): a snapshot, then updates. Every string
// on the screen comes from the language catalogues (/assets/i18n/LANG.json).
'use strict';

const LOCALES = { kk: 'kk-KZ', ru: 'ru-RU', en: 'en-GB', zh: 'zh-CN' };
const LANGS = ['kk', 'ru', 'en', 'zh'];
const S = {
  me: null, lang: 'ru', cat: {}, en: {}, board: null, status: null, es: null,
  silenced: false, audio: null, toneTimer: null, latencies: [], tech: null,
  barrierSaid: {},
};
window.acsgd = S;

// ---- helpers ----------------------------------------------------------------------------

// A catalogue entry: only the catalogue's own string entries count. Keys come from events
// (an alert's message key), and a key such as "constructor" exists on every object.
function lookup(cat, key) {
  if (!cat || typeof key !== 'string' || !Object.prototype.hasOwnProperty.call(cat, key)) return undefined;
  const v = cat[key];
  return typeof v === 'string' ? v : undefined;
}

function known(key) {
  return lookup(S.cat, key) !== undefined || lookup(S.en, key) !== undefined;
}

// A parameter as text, whatever an event put there (an object whose "toString" is a string
// would make String() throw).
function param(v) {
  if (v === null || v === undefined) return '';
  if (typeof v !== 'object') return String(v);
  try { return JSON.stringify(v); } catch (_) { return '?'; }
}

function t(key, params) {
  const k = typeof key === 'string' ? key : param(key);
  let s = lookup(S.cat, k) ?? lookup(S.en, k) ?? k;
  if (params && typeof params === 'object' && !Array.isArray(params)) {
    for (const p of Object.keys(params)) s = s.split('{' + p + '}').join(param(params[p]));
  }
  return s;
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) if (k !== null && k !== undefined) e.append(k);
  return e;
}

const $ = (sel) => document.querySelector(sel);

// Replaces a node's children, leaving out the parts that have nothing to show.
function fill(node, ...kids) {
  node.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined));
}

async function api(method, path, body) {
  try {
    const r = await fetch(path, {
      method, credentials: 'same-origin',
      headers: body ? { 'Content-Type': 'application/json' } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    let data = {};
    try { data = await r.json(); } catch (_) { /* empty answer */ }
    return { ok: r.ok, status: r.status, data };
  } catch (_) {
    return { ok: false, status: 0, data: { error: 'network' } };
  }
}

function errorText(d) {
  return t('error.' + (d.error || 'network'), { s: d.retry_s ?? '' });
}

async function loadCatalogue(lang) {
  const get = async (l) => (await fetch('/assets/i18n/' + l + '.json')).json();
  if (!Object.keys(S.en).length) S.en = await get('en');
  S.cat = lang === 'en' ? S.en : await get(lang);
  S.lang = lang;
  document.documentElement.lang = lang;
  document.title = t('app.title');
}

function time(iso) {
  if (!iso) return '';
  return new Date(iso).toLocaleTimeString(LOCALES[S.lang], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
}

function ago(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 120) return t('time.ago_s', { n: s });
  if (s < 7200) return t('time.ago_m', { n: Math.round(s / 60) });
  return t('time.ago_h', { n: Math.round(s / 3600) });
}

const tonnes = (kg) => (kg / 1000).toLocaleString(LOCALES[S.lang], { maximumFractionDigits: 1, minimumFractionDigits: 1 });

// ---- sign-in ----------------------------------------------------------------------------

function langSelect(id, onchange) {
  const s = el('select', { id, onchange });
  for (const l of LANGS) s.append(el('option', { value: l, text: t('lang.' + l), selected: l === S.lang }));
  return s;
}

function showLogin(message) {
  stopStream();
  S.me = null;
  $('#bar').hidden = true;
  const msg = el('p', { id: 'login-error', class: 'error', text: message || '' });
  const user = el('input', { id: 'user', name: 'user', autocomplete: 'username', required: true });
  const pass = el('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const form = el('form', { id: 'login', onsubmit: async (e) => {
    e.preventDefault();
    unlockAudio();
    const r = await api('POST', '/api/login', { user: user.value.trim(), password: pass.value });
    if (!r.ok) { msg.textContent = errorText(r.data); pass.value = ''; return; }
    S.me = r.data;
    start();
  } },
  el('h1', { text: t('login.title') }),
  el('label', {}, t('login.user'), user),
  el('label', {}, t('login.password'), pass),
  el('label', {}, t('login.lang'), langSelect('login-lang', async (e) => {
    await loadCatalogue(e.target.value); localStorage.setItem('acsgd.lang', S.lang); showLogin();
  })),
  el('button', { id: 'signin', type: 'submit', text: t('login.submit') }), msg);
  $('#main').replaceChildren(form);
  user.focus();
}

// ---- the stream -------------------------------------------------------------------------

function stopStream() {
  if (S.es) { S.es.close(); S.es = null; }
}

function connect() {
  stopStream();
  const es = new EventSource('/api/stream');
  S.es = es;
  es.onopen = () => setConn(true);
  es.addEventListener('snapshot', (m) => {
    const d = JSON.parse(m.data);
    S.status = d.status;
    S.board = d;
    render();
  });
  es.addEventListener('update', (m) => apply(JSON.parse(m.data)));
  es.addEventListener('status', (m) => { S.status = JSON.parse(m.data); renderStatus(); });
  es.onerror = async () => {
    setConn(false);
    if (es.readyState !== EventSource.CLOSED) return; // the browser retries by itself
    // Refused (signed out, restarting, busy): find out which, then try again.
    stopStream();
    const r = await api('GET', '/api/me');
    if (r.status === 401) { showLogin(t('error.signed_out')); return; }
    setTimeout(() => { if (S.me) connect(); }, 2000);
  };
}

function setConn(live) {
  const c = $('#conn');
  c.textContent = t(live ? 'conn.live' : 'conn.reconnecting');
  c.className = 'pill ' + (live ? 'ok' : 'bad');
  c.dataset.live = live ? 'yes' : 'no';
}

function apply(u) {
  if (!S.board) return;
  const d = u.data;
  if (u.kind === 'health') {
    const h = S.board.health.filter((x) => x.component !== d.component);
    h.push(d);
    S.board.health = h;
    renderHealth();
    return;
  }
  if (u.kind === 'passage' || u.kind === 'override') {
    const lane = S.board.lanes.find((l) => l.id === d.body.lane);
    if (!lane) return;
    const i = lane.passages.findIndex((p) => p.event === d.event);
    if (i >= 0) lane.passages[i] = d; else { lane.passages.unshift(d); lane.passages.length = Math.min(lane.passages.length, 20); }
    renderLane(lane);
    if (u.kind === 'passage') shown('passage', d, $(`.passage[data-event="${d.event}"]`));
    return;
  }
  if (u.kind === 'alert' || u.kind === 'ack') {
    const a = S.board.alerts || (S.board.alerts = []);
    const i = a.findIndex((x) => x.event === d.event);
    if (i >= 0) a[i] = d; else a.unshift(d);
    if (u.kind === 'alert') S.silenced = false;
    renderAlerts();
    if (u.kind === 'alert') shown('alert', d, $(`.alert[data-event="${d.event}"]`));
  }
}

// Event-to-screen latency: from the outbox's fsync to the element being in the page.
function shown(kind, d, node) {
  const ms = Date.now() - d.accepted_ms;
  S.latencies.push({ kind, event: d.event, ms });
  if (S.latencies.length > 200) S.latencies.shift();
  if (node) node.dataset.latencyMs = String(ms);
}

// ---- the screen -------------------------------------------------------------------------

function start() {
  loadCatalogue(S.me.lang).then(() => {
    localStorage.setItem('acsgd.lang', S.lang);
    if (S.me.role === 'technician' && location.pathname !== '/tech') { location.href = '/tech'; return; }
    shell();
    if (location.pathname === '/tech') { techPage(); return; }
    $('#main').replaceChildren(
      el('section', { id: 'alerts' }),
      el('section', { id: 'lanes' }),
      el('section', { id: 'health' }));
    connect();
  });
}

function shell() {
  $('#bar').hidden = false;
  $('#post').textContent = 'ACSGD · ' + S.me.post;
  $('#who').textContent = S.me.name + ' · ' + t('role.' + S.me.role);
  $('#logout').textContent = t('nav.signout');
  $('#logout').onclick = async () => { await api('POST', '/api/logout'); showLogin(); };
  const sel = $('#lang');
  sel.replaceChildren(...LANGS.map((l) => el('option', { value: l, text: t('lang.' + l), selected: l === S.lang })));
  sel.onchange = async () => {
    const r = await api('POST', '/api/me/lang', { lang: sel.value });
    if (r.ok) { S.me = r.data; await loadCatalogue(S.me.lang); shell(); if (location.pathname === '/tech') techPage(); else render(); }
  };
  const sil = $('#silence');
  sil.hidden = S.me.role === 'technician';
  sil.onclick = () => { S.silenced = !S.silenced; tone(); };
  setConn(!!S.es);
  tone();
}

function render() {
  if (!S.board || !$('#lanes')) return;
  renderAlerts();
  $('#lanes').replaceChildren(...S.board.lanes.map((l) => el('div', { class: 'lane', 'data-lane': l.id })));
  S.board.lanes.forEach(renderLane);
  renderHealth();
  renderStatus();
}

function renderStatus() {
  const st = S.status;
  if (!st) return;
  const u = $('#uplink');
  const up = st.uplink && st.uplink.connected;
  const parts = [t(up ? 'uplink.up' : 'uplink.down'), t('uplink.backlog', { n: st.outbox.backlog_events })];
  if (st.outbox.oldest_age_s) parts.push(t('uplink.oldest', { age: ago(st.outbox.oldest_age_s) }));
  u.textContent = parts.join(' · ');
  u.className = 'pill ' + (up ? 'ok' : 'bad');
  u.dataset.connected = up ? 'yes' : 'no';
  u.dataset.backlog = String(st.outbox.backlog_events);
  renderBarriers();
  if (S.tech) techPage();
}

// A lane's barrier, when the appliance drives it: what its lane node last reported, and (for
// officers) the buttons. The node, not the screen, decides whether the arm may come down.
function barrierBar(laneId) {
  const b = S.status && S.status.barriers && S.status.barriers[laneId];
  if (!b) return null;
  const officer = S.me && S.me.role !== 'technician';
  return el('div', { class: 'barrier', 'data-lane': laneId, 'data-barrier': param(b.barrier), 'data-lights': param(b.lights) },
    el('span', { class: 'barrier-state', text: t('gate.title') + ': ' + t('gate.' + param(b.barrier)) + ' · ' + t('lights.' + param(b.lights)) }),
    officer ? el('button', { class: 'barrier-open', type: 'button', text: t('gate.open_it'), onclick: () => moveBarrier(laneId, true) }) : null,
    officer ? el('button', { class: 'barrier-close', type: 'button', text: t('gate.close_it'), onclick: () => moveBarrier(laneId, false) }) : null,
    el('span', { class: 'barrier-said', text: S.barrierSaid[laneId] || '' }),
    b.last ? el('span', { class: 'barrier-last', text: lastMove(b.last) }) : null);
}

// The lane's last barrier command, whoever gave it (another screen, or the lane itself).
function lastMove(l) {
  const what = l.action === 'open' ? t('gate.opened') : t('gate.closed_it');
  const who = l.by === 'auto' ? t('gate.by_itself') : param(l.by);
  return t('gate.last', { what, who, result: t('outcome.' + param(l.result)), time: time(l.time) });
}

function renderBarriers() {
  document.querySelectorAll('.lane[data-lane]').forEach((box) => {
    const now = barrierBar(box.dataset.lane);
    const old = box.querySelector('.barrier');
    if (old && now) old.replaceWith(now);
    else if (old) old.remove();
    else if (now && box.firstChild) box.firstChild.after(now);
  });
}

async function moveBarrier(laneId, open) {
  S.barrierSaid[laneId] = '…';
  renderBarriers();
  const r = await api('POST', '/api/lanes/' + encodeURIComponent(laneId) + '/barrier', { open });
  S.barrierSaid[laneId] = r.ok ? t('outcome.' + param(r.data.result)) : errorText(r.data);
  renderBarriers();
}

function channelOf(p) {
  return (p.override && p.override.to) || p.body.channel;
}

function renderAlerts() {
  const box = $('#alerts');
  if (!box) return;
  const all = S.board.alerts || [];
  const open = all.filter((a) => !a.ack);
  const done = all.filter((a) => a.ack).slice(0, 8);
  fill(box,
    el('h2', { text: t('alerts.title') + (open.length ? ' (' + open.length + ')' : '') }),
    open.length ? el('ul', { id: 'open-alerts' }, open.map(alertItem)) : el('p', { class: 'quiet', text: t('alerts.none') }),
    done.length ? el('details', { id: 'acked' }, el('summary', { text: t('alerts.acked_title') }), el('ul', {}, done.map(alertItem))) : null);
  tone();
}

function alertText(b) {
  const m = b && typeof b.message === 'object' && b.message !== null ? b.message : {};
  const key = typeof m.key === 'string' ? m.key : 'alert.' + param(b && b.rule);
  // An alert the catalogue does not know is shown as such, with its raw key.
  if (!known(key)) return t('alert.unknown', { key });
  return t(key, m.params);
}

// One alert's list item; an alert that cannot be shown costs its own item, never the screen.
function alertItem(a) {
  try {
    return alertItemOf(a);
  } catch (e) {
    const key = a && a.body && a.body.message && a.body.message.key;
    return el('li', { class: 'alert ch-yellow', 'data-event': param(a && a.event) },
      el('strong', { class: 'what', text: t('alert.unknown', { key: param(key ?? (a && a.body && a.body.rule)) }) }));
  }
}

function alertItemOf(a) {
  const b = a.body;
  const li = el('li', { class: 'alert ch-' + (b.channel || 'yellow') + (a.ack ? ' done' : ''), 'data-event': a.event, 'data-rule': b.rule, 'data-passage': b.passage },
    el('span', { class: 'when', text: time(a.time) }),
    el('span', { class: 'lane-tag', text: t('lane.title', { id: b.lane }) }),
    el('strong', { class: 'what', text: alertText(b) }),
    b.plates && b.plates.length ? el('span', { class: 'plates', text: b.plates.join(' / ') }) : null,
    b.mrn ? el('span', { class: 'mrn', text: b.mrn }) : null);
  if (a.ack) {
    li.append(el('span', { class: 'ack-by', text: t('alerts.acked_by', { decision: t('decision.' + a.ack.decision), officer: a.ack.officer_name || a.ack.officer }) }));
    if (a.ack.note) li.append(el('q', { text: a.ack.note }));
  } else {
    li.append(el('button', { class: 'ack-btn', type: 'button', text: t('alerts.ack'), onclick: () => ackDialog(a) }));
  }
  return li;
}

function renderLane(lane) {
  const box = $(`.lane[data-lane="${lane.id}"]`);
  if (!box) return;
  const [cur, ...rest] = lane.passages;
  fill(box,
    el('h2', { text: t('lane.title', { id: lane.id }) }),
    barrierBar(lane.id),
    cur ? passageCard(cur) : el('p', { class: 'quiet', text: t('lane.empty') }),
    rest.length ? el('table', { class: 'recent' },
      el('caption', { text: t('lane.recent') }),
      rest.slice(0, 6).map((p) => el('tr', { class: 'ch-' + channelOf(p), 'data-event': p.event },
        el('td', { text: time(p.body.end) }),
        el('td', { text: p.body.plates.map((r) => r.text).join(' / ') || t('passage.no_plate') }),
        el('td', { text: p.body.mrn || '—' }),
        el('td', { text: t('channel.' + channelOf(p)) })))) : null);
}

function passageCard(p) {
  const b = p.body;
  const ch = channelOf(p);
  const card = el('article', { class: 'passage ch-' + ch, 'data-event': p.event, 'data-passage': b.id, 'data-channel': ch },
    el('div', { class: 'banner' },
      el('span', { class: 'channel', text: t('channel.' + ch) }),
      el('span', { text: time(b.end) }),
      b.speed_kmh ? el('span', { text: t('passage.speed', { v: Math.round(b.speed_kmh) }) }) : null),
    p.override ? el('p', { class: 'override', text: t('override.by', { channel: t('channel.' + p.override.to), officer: p.override.officer_name || p.override.officer }) + ' — ' + p.override.note }) : null,
    plates(b), declaration(b), wim(b), radiation(b), seal(b),
    b.reasons.length ? el('div', { class: 'reasons' }, el('h3', { text: t('reasons.title') }),
      el('ul', {}, b.reasons.map((r) => el('li', { 'data-rule': r, text: t('rule.' + r) })))) : null);
  if (S.me.role === 'supervisor') {
    card.append(el('button', { class: 'override-btn', type: 'button', text: t('override.button'), onclick: () => overrideDialog(p) }));
  }
  return card;
}

function plates(b) {
  if (!b.plates.length) return el('div', { class: 'plates' }, el('p', { class: 'warn', text: t('passage.no_plate') }));
  return el('div', { class: 'plates' }, b.plates.map((r) => el('figure', { class: 'plate' },
    r.crop_jpeg ? el('img', { class: 'crop', alt: r.text, src: 'data:image/jpeg;base64,' + r.crop_jpeg }) : null,
    el('figcaption', {}, el('span', { class: 'plate-text', text: r.text }),
      el('small', { text: [r.country, r.view ? t('view.' + r.view) : null, Math.round(r.confidence * 100) + '%'].filter(Boolean).join(' · ') })))));
}

function declaration(b) {
  if (!b.mrn) return el('div', { class: 'decl' }, el('h3', { text: t('passage.mrn') }), el('p', { class: 'warn', text: t('passage.no_mrn') }));
  const d = b.declaration || {};
  return el('div', { class: 'decl' }, el('h3', { text: t('passage.mrn') }),
    el('p', {}, el('span', { class: 'mrn', text: b.mrn })),
    d.gross_kg ? el('p', { text: t('passage.declared', { t: tonnes(d.gross_kg) }) }) : null,
    d.destination ? el('p', { text: t('passage.destination') + ': ' + d.destination }) : null);
}

function outcome(b, rule) {
  return (b.rules || []).find((r) => r.rule === rule);
}

function wim(b) {
  const box = el('div', { class: 'wim' }, el('h3', { text: t('wim.title') }));
  if (!b.wim) { box.append(el('p', { class: 'quiet', text: t('wim.none') })); return box; }
  const axle = outcome(b, 'axle_load');
  const limit = axle && axle.detail && axle.detail.limit_t;
  box.append(el('table', {},
    el('tr', {}, el('th', { text: t('wim.axle') }), el('th', { text: t('wim.load') }), el('th', { text: t('wim.limit') })),
    b.wim.axles.map((a) => el('tr', { class: limit && a.load_kg > limit * 1000 ? 'over' : '' },
      el('td', { text: String(a.index) }), el('td', { text: tonnes(a.load_kg) }), el('td', { text: limit ? String(limit) : '—' })))));
  const gross = outcome(b, 'gross_mass');
  const glimit = gross && gross.detail && gross.detail.limit_t;
  box.append(el('p', { class: 'gross' + (gross && gross.result === 'fail' ? ' over' : '') },
    t('wim.gross') + ': ' + t('wim.tonnes', { t: tonnes(b.wim.gross_kg) }) + (glimit ? ' / ' + t('wim.tonnes', { t: glimit }) : '')));
  return box;
}

function radiation(b) {
  const box = el('div', { class: 'rad' }, el('h3', { text: t('rad.title') }));
  const r = b.radiation;
  if (!r) { box.append(el('p', { class: 'quiet', text: t('rad.none') })); return box; }
  box.append(el('p', { class: 'verdict ' + (r.verdict === 'clear' ? 'ok' : 'over'), text: t('rad.' + r.verdict) + (r.portal_alarm ? ' · ' + t('rad.portal') : '') }));
  box.append(traceSvg(r));
  return box;
}

// The occupancy's summed gamma counts per interval against the alarm threshold.
function traceSvg(r) {
  const NS = 'http://www.w3.org/2000/svg';
  const W = 300, H = 80;
  const per = 0.2 * (r.profile_step || 1);
  const thr = r.gamma.threshold_cps * per;
  const bg = r.gamma.background_cps * per;
  const max = Math.max(thr, bg, ...r.profile, 1) * 1.15;
  const x = (i) => (r.profile.length < 2 ? 0 : (i / (r.profile.length - 1)) * W);
  const y = (v) => H - (v / max) * H;
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('class', 'trace');
  const line = (cls, pts) => {
    const p = document.createElementNS(NS, 'polyline');
    p.setAttribute('class', cls);
    p.setAttribute('points', pts);
    svg.append(p);
  };
  line('bg', `0,${y(bg)} ${W},${y(bg)}`);
  line('thr', `0,${y(thr)} ${W},${y(thr)}`);
  line('counts', r.profile.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' '));
  const label = document.createElementNS(NS, 'text');
  label.setAttribute('x', '2'); label.setAttribute('y', String(Math.max(10, y(thr) - 3)));
  label.textContent = t('rad.threshold');
  svg.append(label);
  return svg;
}

function seal(b) {
  const box = el('div', { class: 'seal' }, el('h3', { text: t('seal.title') }));
  const s = b.seal;
  if (!s) { box.append(el('p', { class: 'quiet', text: t('seal.none') })); return box; }
  const f = s.flags || {};
  const bad = Object.entries(f).filter(([, v]) => v !== null && v !== undefined).map(([k]) => k);
  box.append(el('p', {}, s.tracker + ' · ' + (s.heard && s.last_seen ? t('seal.heard', { ago: ago((Date.now() - Date.parse(s.last_seen)) / 1000) }) : t('seal.silent'))));
  box.append(el('p', { class: bad.length ? 'over' : 'ok', text: bad.length ? bad.map((k) => t('flag.' + k)).join(', ') : t('seal.ok') }));
  if (s.last_fix && s.last_fix.lat !== undefined) {
    box.append(el('p', { class: 'fix', text: t('seal.position') + ': ' + Number(s.last_fix.lat).toFixed(5) + ', ' + Number(s.last_fix.lon).toFixed(5) + (s.distance_m !== undefined ? ' · ' + t('seal.distance', { m: Math.round(s.distance_m) }) : '') }));
  }
  return box;
}

function renderHealth() {
  const box = $('#health');
  if (!box || !S.board) return;
  fill(box, el('h2', { text: t('health.title') }), healthTable(), sensorTable());
}

function healthTable() {
  const rows = (S.board.health || []).slice().sort((a, b) => a.component.localeCompare(b.component));
  if (!rows.length) return el('p', { class: 'quiet', text: t('health.none') });
  return el('table', { id: 'health-table' },
    el('tr', {}, el('th', { text: t('health.component') }), el('th', { text: t('health.state') }), el('th', { text: t('health.since') })),
    rows.map((h) => el('tr', { class: 'st-' + h.state, 'data-component': h.component },
      el('td', { text: h.component }), el('td', { text: t('state.' + h.state), title: h.reason || '' }), el('td', { text: time(h.time) }))));
}

function sensorTable() {
  const s = (S.status && S.status.sensors) || {};
  const ids = Object.keys(s).sort();
  if (!ids.length) return null;
  return el('table', { id: 'sensor-table' },
    el('tr', {}, el('th', { text: t('health.sensor') }), el('th', { text: t('health.frames') }), el('th', { text: t('health.bad') }), el('th', { text: t('health.reconnects') })),
    ids.map((id) => el('tr', {}, el('td', { text: id }), el('td', { text: String(s[id].frames) }), el('td', { text: String(s[id].bad_frames) }), el('td', { text: String(s[id].reconnects) }))));
}

// ---- dialogs ----------------------------------------------------------------------------

function modal(title, body, onconfirm) {
  const m = $('#modal');
  const err = el('p', { class: 'error', id: 'modal-error' });
  const close = () => { m.hidden = true; m.replaceChildren(); };
  m.replaceChildren(el('form', { class: 'dialog', onsubmit: async (e) => {
    e.preventDefault();
    const r = await onconfirm();
    if (r.ok) close(); else err.textContent = errorText(r.data);
  } }, el('h2', { text: title }), body, err,
  el('div', { class: 'buttons' },
    el('button', { type: 'submit', id: 'confirm', text: t('ack.confirm') }),
    el('button', { type: 'button', id: 'cancel', text: t('ack.cancel'), onclick: close }))));
  m.hidden = false;
}

function radios(name, values, prefix) {
  return el('fieldset', {}, values.map((v) => el('label', {},
    el('input', { type: 'radio', name, value: v, id: name + '-' + v, required: true }), t(prefix + v))));
}

function ackDialog(a) {
  const note = el('textarea', { id: 'ack-note', maxlength: '500', rows: '3' });
  modal(t('ack.title') + ': ' + alertText(a.body),
    el('div', {}, el('h3', { text: t('ack.decision') }), radios('decision', ['released', 'inspection', 'false_alarm'], 'decision.'),
      el('label', {}, t('ack.note'), note)),
    () => {
      const d = document.querySelector('input[name=decision]:checked');
      return api('POST', '/api/alerts/' + encodeURIComponent(a.event) + '/ack', { decision: d ? d.value : '', note: note.value });
    });
}

function overrideDialog(p) {
  const note = el('textarea', { id: 'override-note', maxlength: '500', rows: '3', required: true });
  modal(t('override.title'),
    el('div', {}, el('h3', { text: t('override.channel') }), radios('channel', ['green', 'yellow', 'red'], 'channel.'),
      el('label', {}, t('override.note'), note)),
    () => {
      const c = document.querySelector('input[name=channel]:checked');
      return api('POST', '/api/passages/' + encodeURIComponent(p.body.id) + '/override', { channel: c ? c.value : '', note: note.value });
    });
}

// ---- the tone ---------------------------------------------------------------------------

function unlockAudio() {
  try { if (!S.audio) S.audio = new AudioContext(); S.audio.resume(); } catch (_) { /* no audio device */ }
}

function beep() {
  if (!S.audio) return;
  const o = S.audio.createOscillator();
  const g = S.audio.createGain();
  o.frequency.value = 880;
  g.gain.value = 0.2;
  o.connect(g).connect(S.audio.destination);
  o.start();
  o.stop(S.audio.currentTime + 0.25);
}

// Sounds every 2.5 s while an alert is open and the officer has not silenced it; a new alert
// sounds again.
function tone() {
  const open = S.me && S.me.role !== 'technician' && S.board && (S.board.alerts || []).some((a) => !a.ack);
  const state = !open ? 'off' : S.silenced ? 'silenced' : 'on';
  document.body.dataset.tone = state;
  const b = $('#silence');
  if (b) { b.textContent = t(state === 'silenced' ? 'nav.sound_on' : 'nav.silence'); b.disabled = !open; }
  if (state === 'on' && !S.toneTimer) { beep(); S.toneTimer = setInterval(beep, 2500); }
  if (state !== 'on' && S.toneTimer) { clearInterval(S.toneTimer); S.toneTimer = null; }
}

// ---- technician pages -------------------------------------------------------------------

async function techPage() {
  if (!S.tech || !S.techTimer) {
    S.techTimer = setInterval(async () => {
      const r = await api('GET', '/api/tech');
      if (r.status === 401) { clearInterval(S.techTimer); S.techTimer = null; showLogin(t('error.signed_out')); return; }
      if (r.ok) { S.tech = r.data; drawTech(); }
    }, 2000);
    const r = await api('GET', '/api/tech');
    if (!r.ok) { $('#main').replaceChildren(el('p', { class: 'error', text: errorText(r.data) })); return; }
    S.tech = r.data;
    setConn(true);
  }
  drawTech();
}

function kv(obj) {
  return el('table', { class: 'kv' }, Object.entries(obj).map(([k, v]) => el('tr', {},
    el('th', { text: k }), el('td', { text: typeof v === 'object' && v !== null ? JSON.stringify(v) : String(v ?? '—') }))));
}

function drawTech() {
  const d = S.tech;
  S.board = { health: d.health, lanes: [] };
  S.status = d.status;
  const u = d.status.uplink || {};
  fill($('#main'), el('section', { id: 'tech' },
    el('h1', { text: t('tech.title') }),
    el('h2', { text: t('tech.uplink') }), kv({ connected: u.connected, forwarded: u.forwarded, last_error: u.last_error }),
    el('h2', { text: t('tech.outbox') }), kv(d.status.outbox),
    el('h2', { text: t('health.title') }), healthTable(), sensorTable(),
    el('h2', { text: t('tech.config') }), kv(Object.fromEntries(Object.entries(d.config).filter(([k]) => k !== 'sensors' && k !== 'display'))),
    el('h2', { text: t('tech.sensors') }),
    el('table', { id: 'config-sensors' },
      el('tr', {}, ['health.sensor', 'tech.lane', 'tech.protocol', 'tech.transport'].map((k) => el('th', { text: t(k) }))),
      d.config.sensors.map((x) => el('tr', {}, [x.id, x.lane, x.protocol, x.transport].map((v) => el('td', { text: v ?? '—' }))))),
    d.config.display ? el('h2', { text: t('tech.accounts') }) : null,
    d.config.display ? el('table', { id: 'config-accounts' },
      d.config.display.accounts.map((a) => el('tr', {}, el('td', { text: a.user }), el('td', { text: t('role.' + a.role) })))) : null));
  const st = $('#uplink');
  st.textContent = t(u.connected ? 'uplink.up' : 'uplink.down') + ' · ' + t('uplink.backlog', { n: d.status.outbox.backlog_events });
  st.className = 'pill ' + (u.connected ? 'ok' : 'bad');
}

// ---- start ------------------------------------------------------------------------------

(async function init() {
  const saved = localStorage.getItem('acsgd.lang');
  const guess = LANGS.find((l) => (navigator.language || '').startsWith(l)) || 'ru';
  await loadCatalogue(saved && LANGS.includes(saved) ? saved : guess);
  const r = await api('GET', '/api/me');
  if (r.ok) { S.me = r.data; start(); } else showLogin();
})();

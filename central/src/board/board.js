// The operator board. Plain DOM, no framework, no outside resources: it reads central's JSON
// API and reads again when /api/stream says something changed.
"use strict";

const T = {
  en: {
    "nav.transits": "Transits", "nav.posts": "Posts", "nav.map": "Map", "nav.alerts": "Alerts",
    "live.on": "live", "live.off": "offline", "signout": "Sign out",
    "signin.title": "Sign in", "signin.user": "User", "signin.password": "Password",
    "signin.go": "Sign in", "signin.wrong": "Wrong user or password",
    "col.mrn": "MRN", "col.state": "State", "col.flags": "Flags", "col.expected": "Expected at",
    "col.by": "by", "col.last": "Last seen", "col.post": "Post", "col.name": "Name",
    "col.link": "Link", "col.seq": "Delivered seq", "col.gaps": "Missing", "col.time": "Time",
    "col.what": "What", "col.alert": "Alert", "col.route": "Itinerary", "col.plates": "Plates",
    "col.limit": "Time limit", "none": "none", "back": "All transits",
    "state.declared": "declared", "state.departed": "departed", "state.en_route": "en route",
    "state.at_post": "held at post", "state.arrived": "arrived", "state.closed": "closed",
    "state.diverted": "diverted", "state.overdue": "overdue", "state.enquiry": "enquiry",
    "state.cancelled": "cancelled",
    "ev.passage": "passage", "ev.alert": "alert", "ev.override": "override", "ev.change": "state",
    "empty": "Nothing here.",
    "act.cancel": "Cancel the declaration", "act.enquiry": "Open an enquiry", "act.close": "Close (write off)", "act.note": "Note",
  },
  ru: {
    "nav.transits": "Транзиты", "nav.posts": "Посты", "nav.map": "Схема", "nav.alerts": "Тревоги",
    "live.on": "в сети", "live.off": "нет связи", "signout": "Выйти",
    "signin.title": "Вход", "signin.user": "Пользователь", "signin.password": "Пароль",
    "signin.go": "Войти", "signin.wrong": "Неверный пользователь или пароль",
    "col.mrn": "MRN", "col.state": "Состояние", "col.flags": "Отметки", "col.expected": "Ожидается на",
    "col.by": "до", "col.last": "Последний пост", "col.post": "Пост", "col.name": "Название",
    "col.link": "Связь", "col.seq": "Получено до seq", "col.gaps": "Пропуски", "col.time": "Время",
    "col.what": "Что", "col.alert": "Тревога", "col.route": "Маршрут", "col.plates": "Номера",
    "col.limit": "Срок доставки", "none": "нет", "back": "Все транзиты",
    "state.declared": "заявлен", "state.departed": "отправлен", "state.en_route": "в пути",
    "state.at_post": "задержан на посту", "state.arrived": "прибыл", "state.closed": "закрыт",
    "state.diverted": "отклонение", "state.overdue": "просрочен", "state.enquiry": "розыск",
    "state.cancelled": "отменён",
    "ev.passage": "проезд", "ev.alert": "тревога", "ev.override": "решение", "ev.change": "состояние",
    "empty": "Пусто.",
    "act.cancel": "Отменить декларацию", "act.enquiry": "Начать розыск", "act.close": "Закрыть (списать)", "act.note": "Примечание",
  },
  kk: {
    "nav.transits": "Транзиттер", "nav.posts": "Бекеттер", "nav.map": "Сызба", "nav.alerts": "Дабылдар",
    "live.on": "желіде", "live.off": "байланыс жоқ", "signout": "Шығу",
    "signin.title": "Кіру", "signin.user": "Пайдаланушы", "signin.password": "Құпиясөз",
    "signin.go": "Кіру", "signin.wrong": "Пайдаланушы немесе құпиясөз қате",
    "col.mrn": "MRN", "col.state": "Күйі", "col.flags": "Белгілер", "col.expected": "Күтілетін бекет",
    "col.by": "мерзімі", "col.last": "Соңғы бекет", "col.post": "Бекет", "col.name": "Атауы",
    "col.link": "Байланыс", "col.seq": "Алынған seq", "col.gaps": "Олқылықтар", "col.time": "Уақыт",
    "col.what": "Не", "col.alert": "Дабыл", "col.route": "Бағыт", "col.plates": "Нөмірлер",
    "col.limit": "Жеткізу мерзімі", "none": "жоқ", "back": "Барлық транзиттер",
    "state.declared": "мәлімделген", "state.departed": "жөнелтілді", "state.en_route": "жолда",
    "state.at_post": "бекетте ұсталды", "state.arrived": "келді", "state.closed": "жабылды",
    "state.diverted": "бағыттан ауытқу", "state.overdue": "мерзімі өтті", "state.enquiry": "іздеу",
    "state.cancelled": "күші жойылды",
    "ev.passage": "өту", "ev.alert": "дабыл", "ev.override": "шешім", "ev.change": "күйі",
    "empty": "Бос.",
    "act.cancel": "Декларацияның күшін жою", "act.enquiry": "Іздеу бастау", "act.close": "Жабу (есептен шығару)", "act.note": "Ескертпе",
  },
  zh: {
    "nav.transits": "过境", "nav.posts": "口岸", "nav.map": "示意图", "nav.alerts": "警报",
    "live.on": "在线", "live.off": "离线", "signout": "退出",
    "signin.title": "登录", "signin.user": "用户", "signin.password": "密码",
    "signin.go": "登录", "signin.wrong": "用户或密码错误",
    "col.mrn": "MRN", "col.state": "状态", "col.flags": "标记", "col.expected": "预计到达",
    "col.by": "期限", "col.last": "最后口岸", "col.post": "口岸", "col.name": "名称",
    "col.link": "连接", "col.seq": "已收 seq", "col.gaps": "缺失", "col.time": "时间",
    "col.what": "事件", "col.alert": "警报", "col.route": "路线", "col.plates": "车牌",
    "col.limit": "运输期限", "none": "无", "back": "全部过境",
    "state.declared": "已申报", "state.departed": "已出发", "state.en_route": "途中",
    "state.at_post": "口岸扣留", "state.arrived": "已到达", "state.closed": "已结关",
    "state.diverted": "偏离路线", "state.overdue": "逾期", "state.enquiry": "查询中",
    "state.cancelled": "已取消",
    "ev.passage": "通过", "ev.alert": "警报", "ev.override": "改判", "ev.change": "状态",
    "empty": "无内容。",
    "act.cancel": "取消申报", "act.enquiry": "发起查询", "act.close": "结关（核销）", "act.note": "备注",
  },
};

let lang = localStorage.getItem("lang") || "ru";
let me = null;
const $ = (id) => document.getElementById(id);
const t = (k) => (T[lang] && T[lang][k]) || T.en[k] || k;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of kids) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

function translateStatic() {
  document.documentElement.lang = lang;
  for (const e of document.querySelectorAll("[data-i18n]")) e.textContent = t(e.dataset.i18n);
  $("lang").value = lang;
}

async function get(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  if (r.status === 401) { signedOut(); throw new Error("signed out"); }
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

const when = (s) => (s ? s.replace("T", " ").replace(/\.\d+Z$/, "Z") : "");
const stateCell = (s) => el("span", { class: "state " + s, "data-state": s }, t("state." + s));

function table(cols, rows) {
  if (!rows.length) return el("p", { class: "empty" }, t("empty"));
  const head = el("tr", {}, ...cols.map((c) => el("th", {}, t(c))));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows));
}

async function viewTransits() {
  const ts = await get("/api/transits");
  const rows = ts.map((x) => {
    const tr = el("tr", { "data-mrn": x.mrn, class: "row " + x.state },
      el("td", {}, el("a", { href: "#/transit/" + x.mrn }, x.mrn)),
      el("td", {}, stateCell(x.state)),
      el("td", { class: "flags" }, x.flags.join(", ")),
      el("td", {}, x.expected_post || ""),
      el("td", {}, when(x.expected_by)),
      el("td", {}, (x.last_post || "") + " " + when(x.last_seen)));
    return tr;
  });
  return el("div", {}, table(["col.mrn", "col.state", "col.flags", "col.expected", "col.by", "col.last"], rows));
}

async function viewTransit(mrn) {
  const [x, evs, tr] = await Promise.all([
    get("/api/transits/" + encodeURIComponent(mrn)),
    get("/api/transits/" + encodeURIComponent(mrn) + "/events"),
    get("/api/transits/" + encodeURIComponent(mrn) + "/track"),
  ]);
  const d = x.declaration;
  const items = [];
  for (const e of evs) {
    const what = e.type === "passage" ? (e.channel || "") : e.type === "alert" ? (e.rule || "") : (e.to || "");
    items.push({ time: e.time, kind: e.type, text: e.post + " · " + what });
  }
  for (const c of x.journal) {
    items.push({ time: c.at, kind: "change", state: c.to,
      text: t("state." + c.from) + " → " + t("state." + c.to) + " · " + c.note + " (" + c.cause + ")" });
  }
  items.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : 0));
  const timeline = el("ol", { id: "timeline" }, ...items.map((i) =>
    el("li", { class: "ev " + i.kind + (i.state ? " " + i.state : ""), "data-kind": i.kind },
      el("time", {}, when(i.time)), " ", el("b", {}, t("ev." + i.kind)), " ", i.text)));
  return el("div", { id: "transit", "data-mrn": x.mrn },
    el("p", {}, el("a", { href: "#/transits" }, "← " + t("back"))),
    el("h1", {}, x.mrn, " ", stateCell(x.state)),
    actions(x),
    el("dl", {},
      el("dt", {}, t("col.route")), el("dd", {}, d.itinerary.map((s) => s.post).join(" → ")),
      el("dt", {}, t("col.plates")), el("dd", {}, (d.plates || []).join(", ")),
      el("dt", {}, t("col.limit")), el("dd", {}, when(d.time_limit) || t("none")),
      el("dt", {}, t("col.flags")), el("dd", {}, x.flags.join(", ") || t("none")),
      el("dt", {}, t("col.expected")), el("dd", {}, (x.expected_post || "") + " " + when(x.expected_by))),
    trackMap(d.corridor, tr),
    timeline);
}

// The tracker's fixes over the declared corridor, drawn to scale from the data alone.
function trackMap(corridor, tr) {
  const fixes = (tr && tr.fixes) || [];
  const line = (corridor && corridor.points) || [];
  if (!fixes.length) return el("span", {});
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 1000 400");
  svg.setAttribute("id", "track");
  svg.setAttribute("data-fixes", fixes.length);
  const lats = fixes.map((f) => f[1]).concat(line.map((p) => p[0]));
  const lons = fixes.map((f) => f[2]).concat(line.map((p) => p[1]));
  const [la0, la1, lo0, lo1] = [Math.min(...lats), Math.max(...lats), Math.min(...lons), Math.max(...lons)];
  const k = Math.cos(((la0 + la1) / 2) * Math.PI / 180);
  // Fit the wider of the two extents; the picture is only as tall as the track needs.
  const scale = Math.min(900 / (((lo1 - lo0) * k) || 0.01), 340 / ((la1 - la0) || 0.01));
  svg.setAttribute("viewBox", "0 0 1000 " + Math.ceil(60 + (la1 - la0) * scale));
  const pt = (la, lo) => (50 + (lo - lo0) * k * scale) + "," + (30 + (la1 - la) * scale);
  if (line.length > 1) {
    const c = document.createElementNS(NS, "polyline");
    c.setAttribute("points", line.map((p) => pt(p[0], p[1])).join(" "));
    c.setAttribute("class", "corridor");
    svg.append(c);
  }
  const path = document.createElementNS(NS, "polyline");
  path.setAttribute("points", fixes.map((f) => pt(f[1], f[2])).join(" "));
  path.setAttribute("class", "track" + (tr.deviating_since ? " deviating" : ""));
  svg.append(path);
  return svg;
}

// What an operator may do with a transit in its state (central refuses the rest anyway).
const ACTIONS = { declared: "cancel", overdue: "enquiry", arrived: "close" };

function actions(x) {
  const action = ACTIONS[x.state];
  if (!me || me.role !== "operator" || !action) return el("div", { id: "actions" });
  const note = el("input", { id: "action-note", placeholder: t("act.note") });
  const go = el("button", { id: "action", "data-action": action }, t("act." + action));
  go.addEventListener("click", async () => {
    go.disabled = true;
    const r = await fetch("/api/transits/" + encodeURIComponent(x.mrn) + "/" + action, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ note: note.value }) });
    if (!r.ok) {
      const e = await r.json().catch(() => ({}));
      $("view").prepend(el("p", { class: "error" }, e.error || String(r.status)));
    }
    render();
  });
  return el("div", { id: "actions" }, note, " ", go);
}

async function viewPosts() {
  const ps = await get("/api/posts");
  const rows = ps.map((p) => {
    const g = p.progress ? p.progress.gaps.map((r) => r[0] + "–" + r[1]).join(", ") : "";
    return el("tr", { "data-post": p.post.id },
      el("td", {}, p.post.id), el("td", {}, p.post.name),
      el("td", { class: "link " + (p.progress ? p.progress.link : "unknown") }, p.progress ? p.progress.link : "unknown"),
      el("td", {}, p.progress ? p.progress.contiguous_seq + " / " + p.progress.highest_seq : ""),
      el("td", {}, g || t("none")));
  });
  return table(["col.post", "col.name", "col.link", "col.seq", "col.gaps"], rows);
}

async function viewMap() {
  const [ps, ts] = await Promise.all([get("/api/posts"), get("/api/transits")]);
  const placed = ps.filter((p) => p.post.lat != null && p.post.lon != null);
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 1000 600");
  svg.setAttribute("id", "map");
  if (!placed.length) return el("p", { class: "empty" }, t("empty"));
  const lats = placed.map((p) => p.post.lat), lons = placed.map((p) => p.post.lon);
  const [la0, la1, lo0, lo1] = [Math.min(...lats), Math.max(...lats), Math.min(...lons), Math.max(...lons)];
  // One scale for both axes (km east-west shrink with the latitude), room left for labels.
  const k = Math.cos(((la0 + la1) / 2) * Math.PI / 180);
  const span = Math.max((lo1 - lo0) * k, la1 - la0) || 1;
  const scale = Math.min(760 / span, 480 / span);
  const sx = (lo) => 80 + (lo - lo0) * k * scale;
  const sy = (la) => 540 - (la - la0) * scale;
  const at = Object.fromEntries(placed.map((p) => [p.post.id, [sx(p.post.lon), sy(p.post.lat)]]));
  const open = ts.filter((x) => !["closed", "cancelled", "arrived"].includes(x.state));
  for (const x of open) {
    const pts = x.declaration.itinerary.map((s) => at[s.post]).filter(Boolean);
    if (pts.length < 2) continue;
    const line = document.createElementNS(NS, "polyline");
    line.setAttribute("points", pts.map((p) => p.join(",")).join(" "));
    line.setAttribute("class", "corridor " + x.state);
    line.setAttribute("data-mrn", x.mrn);
    svg.append(line);
  }
  for (const p of placed) {
    const [x, y] = at[p.post.id];
    const c = document.createElementNS(NS, "circle");
    c.setAttribute("cx", x); c.setAttribute("cy", y); c.setAttribute("r", 9);
    c.setAttribute("class", "post " + (p.progress ? p.progress.link : "unknown"));
    c.setAttribute("data-post", p.post.id);
    const label = document.createElementNS(NS, "text");
    label.setAttribute("x", x + 14); label.setAttribute("y", y + 5);
    label.textContent = p.post.name;
    svg.append(c, label);
  }
  return svg;
}

async function viewAlerts() {
  const al = await get("/api/alerts?open=true");
  const rows = al.map((a) => el("tr", { "data-alert": a.id, class: a.kind },
    el("td", {}, when(new Date(a.raised_ms).toISOString())), el("td", {}, a.kind),
    el("td", {}, a.post || ""), el("td", {}, a.text)));
  return table(["col.time", "col.alert", "col.post", "col.what"], rows);
}

let rendering = false, again = false;
async function render() {
  if (!me) return;
  if (rendering) { again = true; return; }
  rendering = true;
  try {
    const h = location.hash || "#/transits";
    let node;
    if (h.startsWith("#/transit/")) node = await viewTransit(decodeURIComponent(h.slice(10)));
    else if (h === "#/posts") node = await viewPosts();
    else if (h === "#/map") node = await viewMap();
    else if (h === "#/alerts") node = await viewAlerts();
    else node = await viewTransits();
    $("view").replaceChildren(node);
    $("view").dataset.rendered = String(Date.now());
  } catch (e) {
    if (me) $("view").replaceChildren(el("p", { class: "error" }, String(e.message || e)));
  } finally {
    rendering = false;
    if (again) { again = false; render(); }
  }
}

let source = null;
function listen() {
  if (source) source.close();
  source = new EventSource("/api/stream");
  source.addEventListener("open", () => { $("live").className = "live on"; $("live").textContent = t("live.on"); });
  source.addEventListener("error", () => { $("live").className = "live off"; $("live").textContent = t("live.off"); });
  source.addEventListener("change", () => render());
}

function signedIn(who) {
  me = who;
  if (!localStorage.getItem("lang") && who.lang) lang = who.lang;
  translateStatic();
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("signout").hidden = false;
  $("who").textContent = who.name;
  listen();
  render();
}

function signedOut() {
  me = null;
  if (source) { source.close(); source = null; }
  $("signin").hidden = false;
  $("nav").hidden = true;
  $("signout").hidden = true;
  $("who").textContent = "";
  $("view").replaceChildren();
}

document.addEventListener("DOMContentLoaded", async () => {
  translateStatic();
  $("lang").addEventListener("change", () => {
    lang = $("lang").value; localStorage.setItem("lang", lang); translateStatic(); render();
  });
  $("signin").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const r = await fetch("/api/session", { method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ user: $("user").value, password: $("password").value }) });
    if (r.ok) { $("signin-error").hidden = true; $("password").value = ""; signedIn(await r.json()); }
    else $("signin-error").hidden = false;
  });
  $("signout").addEventListener("click", async () => {
    await fetch("/api/session", { method: "DELETE" }); signedOut();
  });
  window.addEventListener("hashchange", render);
  const r = await fetch("/api/me");
  if (r.ok) signedIn(await r.json()); else signedOut();
});

// The tub cleaner's page: frames, a timeline of steering and throttle (and a pilot's),
// range selection (drag, touch, keys), delete / restore / undo through the server.
// Positions are 0..n-1 along the timeline; the server speaks record indexes.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);
const COLOURS = { steer: "#4cc9f0", throt: "#f4a261", pilot: "#e056fd", gone: "rgba(229,56,59,0.33)",
  sel: "rgba(58,134,255,0.30)", selEdge: "#3a86ff", cursor: "#ffffff", grid: "#2c333d",
  label: "#94a0ad" };
const LANES = [["steering", "steer"], ["throttle", "throt"]];

const S = {  // everything the page knows; window.tubClean for the tests
  tub: null, deleted: [], cur: 0, sel: null, view: [0, 1], playing: false, busy: false,
  loaded: false, edits: 0, message: "", error: false, frameLoaded: false,
};
window.tubClean = S;

function api(path) { return `${path}?token=${encodeURIComponent(TOKEN)}`; }
function fmt(v) { return v === null || v === undefined ? "–" : (v >= 0 ? "+" : "") + v.toFixed(2); }
function clamp(v, lo, hi) { return Math.max(lo, Math.min(hi, v)); }
function count() { return S.tub ? S.tub.count : 0; }

// ---------------------------------------------------------------- loading and edits

async function load() {
  try {
    const response = await fetch(api("api/tub"), { cache: "no-store" });
    if (!response.ok) throw new Error(await response.text());
    S.tub = await response.json();
  } catch (err) {
    say(`cannot load the tub: ${err.message || err}`, true);
    return;
  }
  S.deleted = S.tub.deleted;
  S.view = [0, S.tub.count];
  $("tubname").textContent = S.tub.path;
  $("tubname").title = S.tub.path;
  const pilot = S.tub.pilot;
  $("legend-pilot").hidden = $("pilot-readout").hidden = !pilot;
  if (pilot) $("legend-pilot").title = `${pilot.name}, run over the tub at start`;
  S.loaded = true;
  updateCounts(S.tub);
  resize();
  show(0);
}

function updateCounts(state) {
  const gone = S.deleted.reduce((a, b) => a + b, 0);
  $("counts").textContent = `${state.live} live · ${gone} deleted`;
  $("undo").disabled = !state.undo;
  $("undo").title = state.last_edit ? `undo: ${state.last_edit} (Z)` : "nothing to undo";
}

async function edit(kind) {
  if (S.busy || !S.loaded) return;
  let body = "{}";
  if (kind !== "undo") {
    if (!S.sel) { say("select a range first: drag on the timeline, or [ and ]", true); return; }
    const ix = S.tub.indexes;
    body = JSON.stringify({ start: ix[S.sel[0]], end: ix[S.sel[1]] + 1 });
  }
  S.busy = true;
  try {
    const response = await fetch(api(`api/${kind}`), { method: "POST", body,
      headers: { "Content-Type": "application/json" } });
    const reply = await response.json();
    if (reply.deleted) { S.deleted = reply.deleted; updateCounts(reply); }
    if (reply.error) say(reply.error, true); else { S.edits += 1; say(reply.message, false); }
  } catch (err) {
    say(`the server did not answer: ${err.message || err}`, true);
  } finally {
    S.busy = false;
    drawStatic();
    show(S.cur);
  }
}

function say(text, error) {
  S.message = text; S.error = error;
  $("message").textContent = text;
  $("message").classList.toggle("error", !!error);
}

// ---------------------------------------------------------------- the frame

function show(pos) {
  if (!S.loaded) return;
  S.cur = clamp(pos, 0, count() - 1);
  const index = S.tub.indexes[S.cur];
  const img = $("frame");
  const src = api(`frame/${index}`);
  if (img.dataset.index !== String(index)) {
    S.frameLoaded = false;
    img.dataset.index = String(index);
    img.src = src;
  }
  const gone = S.deleted[S.cur] === 1;
  $("deleted-badge").hidden = !gone;
  img.parentElement.classList.toggle("gone", gone);
  $("pos").textContent = `${S.cur + 1} / ${count()}`;
  $("index").textContent = String(index);
  $("steering").textContent = fmt(S.tub.steering[S.cur]);
  $("throttle").textContent = fmt(S.tub.throttle[S.cur]);
  if (S.tub.pilot) {
    $("pilot").textContent = `${fmt(S.tub.pilot.steering[S.cur])} ${fmt(S.tub.pilot.throttle[S.cur])}`;
  }
  follow();
  describeSelection();
  draw();
}

function preload(from) {
  for (let p = from + 1; p <= Math.min(count() - 1, from + 4); p++) {
    new Image().src = api(`frame/${S.tub.indexes[p]}`);
  }
}

$("frame").addEventListener("load", () => { S.frameLoaded = true; $("noframe").hidden = true; });
$("frame").addEventListener("error", () => { S.frameLoaded = true; $("noframe").hidden = false; });

let playTimer = null;
function play(on) {
  S.playing = on && S.loaded;
  $("play").textContent = S.playing ? "❚❚ Pause" : "▶︎ Play";
  clearTimeout(playTimer);
  if (!S.playing) return;
  if (S.cur >= count() - 1) show(0);
  let waited = 0;
  const tick = () => {
    if (!S.playing) return;
    const period = 1000 / (S.tub.rate_hz * Number($("speed").value));
    if (!S.frameLoaded && waited < 1000) { waited += 15; playTimer = setTimeout(tick, 15); return; }
    waited = 0;
    if (S.cur >= count() - 1) { play(false); return; }
    show(S.cur + 1);
    preload(S.cur);
    playTimer = setTimeout(tick, period);
  };
  playTimer = setTimeout(tick, 0);
}

// ---------------------------------------------------------------- selection

function select(a, b) { S.sel = [Math.min(a, b), Math.max(a, b)]; }

function describeSelection() {
  const el = $("selection");
  if (!S.sel) { el.textContent = "drag on the timeline (or [ and ]) to select a range"; return; }
  const [a, b] = S.sel;
  const ix = S.tub.indexes;
  let gone = 0;
  for (let p = a; p <= b; p++) gone += S.deleted[p];
  el.innerHTML = "";
  el.append(`selected ${b - a + 1} record(s), index ${ix[a]}..${ix[b]}` +
    (gone ? `, ${gone} deleted` : "") + " · ");
  const code = document.createElement("code");
  code.textContent = `${ix[a]}:${ix[b] + 1}`;
  el.append(code);
}

function step(delta, extend) {
  if (!S.loaded) return;
  play(false);
  const to = clamp(S.cur + delta, 0, count() - 1);
  if (extend) {
    // the end of the selection at the cursor moves with it; else a new one starts here
    let anchor = S.cur;
    if (S.sel && S.sel[1] === S.cur) anchor = S.sel[0];
    else if (S.sel && S.sel[0] === S.cur) anchor = S.sel[1];
    select(anchor, to);
  }
  show(to);
}

function markStart() {
  if (!S.loaded) return;
  S.sel = [S.cur, S.sel && S.sel[1] >= S.cur ? S.sel[1] : S.cur];
  show(S.cur);
}

function markEnd() {
  if (!S.loaded) return;
  S.sel = [S.sel && S.sel[0] <= S.cur ? S.sel[0] : S.cur, S.cur];
  show(S.cur);
}

function clearSelection() { S.sel = null; show(S.cur); }

// ---------------------------------------------------------------- the timeline

const canvas = $("timeline");
const ctx = canvas.getContext("2d");
const layer = document.createElement("canvas");  // series and deleted shading, drawn on change

function resize() {
  const ratio = window.devicePixelRatio || 1;
  const rect = canvas.getBoundingClientRect();
  canvas.width = layer.width = Math.max(1, Math.round(rect.width * ratio));
  canvas.height = layer.height = Math.max(1, Math.round(rect.height * ratio));
  drawStatic();
  draw();
}

function xOf(pos) { return (pos - S.view[0]) / (S.view[1] - S.view[0]) * canvas.width; }
function posAt(clientX) {
  const rect = canvas.getBoundingClientRect();
  const f = clamp((clientX - rect.left) / rect.width, 0, 0.999999);
  return clamp(Math.floor(S.view[0] + f * (S.view[1] - S.view[0])), 0, count() - 1);
}

function drawStatic() {
  if (!S.loaded) return;
  const g = layer.getContext("2d");
  const w = layer.width, h = layer.height, ratio = window.devicePixelRatio || 1;
  g.clearRect(0, 0, w, h);
  const [v0, v1] = S.view;
  const per = (v1 - v0) / w;  // positions per device pixel
  g.fillStyle = COLOURS.gone;  // deleted runs
  for (let p = v0; p < v1; p++) {
    if (!S.deleted[p]) continue;
    let q = p;
    while (q + 1 < v1 && S.deleted[q + 1]) q++;
    const x0 = xOf(p), x1 = xOf(q + 1);
    g.fillRect(x0, 0, Math.max(1, x1 - x0), h);
    p = q;
  }
  LANES.forEach(([name, colour], lane) => {
    const top = lane * h / 2, mid = top + h / 4, amp = h / 4 - 6 * ratio;
    g.strokeStyle = COLOURS.grid; g.lineWidth = 1;
    g.beginPath(); g.moveTo(0, mid); g.lineTo(w, mid); g.stroke();
    if (lane) { g.beginPath(); g.moveTo(0, top); g.lineTo(w, top); g.stroke(); }
    const series = [[S.tub[name], COLOURS[colour]]];
    if (S.tub.pilot) series.push([S.tub.pilot[name], COLOURS.pilot]);
    for (const [values, stroke] of series) trace(g, values, stroke, mid, amp, per, ratio);
    g.fillStyle = COLOURS.label;
    g.font = `${11 * ratio}px system-ui, sans-serif`;
    g.fillText(name, 4 * ratio, top + 13 * ratio);
  });
}

function trace(g, values, stroke, mid, amp, per, ratio) {
  const [v0, v1] = S.view;
  const y = (v) => mid - clamp(v, -1, 1) * amp;
  g.strokeStyle = stroke; g.lineWidth = 1.2 * ratio; g.beginPath();
  if (per <= 1) {  // fewer records than pixels: a polyline, broken where a value is missing
    let pen = false;
    for (let p = v0; p < v1; p++) {
      const v = values[p];
      if (v === null) { pen = false; continue; }
      const x = xOf(p + 0.5);
      if (pen) g.lineTo(x, y(v)); else g.moveTo(x, y(v));
      pen = true;
    }
  } else {  // many per pixel: each pixel column from its lowest to its highest value
    let last = null;  // the previous column's last value: the columns join up
    for (let x = 0; x < layer.width; x++) {
      const a = Math.floor(v0 + x * per), b = Math.min(v1, Math.floor(v0 + (x + 1) * per));
      let lo = last === null ? Infinity : last, hi = last === null ? -Infinity : last;
      last = null;
      for (let p = a; p < b; p++) {
        const v = values[p];
        if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); last = v; }
      }
      if (lo <= hi) { g.moveTo(x + 0.5, y(hi) - 0.5); g.lineTo(x + 0.5, y(lo) + 0.5); }
    }
  }
  g.stroke();
}

function draw() {
  if (!S.loaded) return;
  const w = canvas.width, h = canvas.height, ratio = window.devicePixelRatio || 1;
  ctx.clearRect(0, 0, w, h);
  ctx.drawImage(layer, 0, 0);
  if (S.sel) {
    const x0 = xOf(S.sel[0]), x1 = xOf(S.sel[1] + 1);
    ctx.fillStyle = COLOURS.sel;
    ctx.fillRect(x0, 0, Math.max(2, x1 - x0), h);
    ctx.fillStyle = COLOURS.selEdge;
    ctx.fillRect(x0 - ratio, 0, 2 * ratio, h);
    ctx.fillRect(x1 - ratio, 0, 2 * ratio, h);
  }
  const x = xOf(S.cur + 0.5);
  ctx.fillStyle = COLOURS.cursor;
  ctx.fillRect(x - ratio, 0, 2 * ratio, h);
}

function zoom(factor, centre) {
  if (!S.loaded) return;
  const n = count(), [v0, v1] = S.view;
  const span = factor ? clamp(Math.round((v1 - v0) / factor), Math.min(n, 20), n) : n;
  const c = centre === undefined ? S.cur : centre;
  const f = (c - v0) / (v1 - v0);
  const start = clamp(Math.round(c - f * span), 0, n - span);
  S.view = [start, start + span];
  drawStatic();
  draw();
}

function follow() {  // keep the cursor in view when zoomed
  const [v0, v1] = S.view, span = v1 - v0;
  if (S.cur >= v0 && S.cur < v1) return;
  const start = clamp(S.cur - Math.floor(span / 4), 0, count() - span);
  S.view = [start, start + span];
  drawStatic();
}

let drag = null;  // {anchor, x, moved}
canvas.addEventListener("pointerdown", (e) => {
  if (!S.loaded || e.button > 0) return;
  play(false);
  canvas.setPointerCapture(e.pointerId);
  const pos = posAt(e.clientX);
  drag = { anchor: pos, x: e.clientX, moved: false };
  show(pos);
  e.preventDefault();
});
canvas.addEventListener("pointermove", (e) => {
  if (!drag) return;
  if (Math.abs(e.clientX - drag.x) > 4) drag.moved = true;
  if (!drag.moved) return;
  const pos = posAt(e.clientX);
  select(drag.anchor, pos);
  show(pos);
});
const endDrag = (e) => {
  if (!drag) return;
  if (!drag.moved) { S.sel = null; show(posAt(e.clientX)); }  // a tap moves the cursor
  drag = null;
};
canvas.addEventListener("pointerup", endDrag);
canvas.addEventListener("pointercancel", () => { drag = null; });
canvas.addEventListener("wheel", (e) => {
  if (!S.loaded || e.deltaY === 0) return;
  e.preventDefault();
  zoom(e.deltaY < 0 ? 1.5 : 1 / 1.5, posAt(e.clientX));
}, { passive: false });

// ---------------------------------------------------------------- buttons and keys

function button(id, action) {
  $(id).addEventListener("click", (e) => { action(); e.currentTarget.blur(); });
}
button("first", () => { play(false); show(0); });
button("back", () => step(-1, false));
button("play", () => play(!S.playing));
button("fwd", () => step(1, false));
button("last", () => { play(false); show(count() - 1); });
button("mark-start", markStart);
button("mark-end", markEnd);
button("clear", clearSelection);
button("delete", () => edit("delete"));
button("restore", () => edit("restore"));
button("undo", () => edit("undo"));
button("zoom-in", () => zoom(2));
button("zoom-out", () => zoom(0.5));
button("zoom-fit", () => zoom(0));
$("speed").addEventListener("change", (e) => e.currentTarget.blur());

const KEYS = {
  ArrowLeft: (e) => step(-1, e.shiftKey), ArrowRight: (e) => step(1, e.shiftKey),
  ArrowUp: (e) => step(-10, e.shiftKey), ArrowDown: (e) => step(10, e.shiftKey),
  PageUp: (e) => step(-100, e.shiftKey), PageDown: (e) => step(100, e.shiftKey),
  Home: () => { play(false); show(0); }, End: () => { play(false); show(count() - 1); },
  " ": () => play(!S.playing), "[": markStart, "]": markEnd, Escape: clearSelection,
  Delete: () => edit("delete"), Backspace: () => edit("delete"), r: () => edit("restore"),
  z: () => edit("undo"), u: () => edit("undo"), "+": () => zoom(2), "=": () => zoom(2),
  "-": () => zoom(0.5), "0": () => zoom(0),
};
document.addEventListener("keydown", (e) => {
  if (e.target instanceof HTMLSelectElement || e.altKey || e.metaKey) return;
  const key = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  if (e.ctrlKey && key !== "z") return;  // leave the browser's shortcuts alone
  const action = KEYS[key];
  if (!action) return;
  e.preventDefault();
  action(e);
});
window.addEventListener("resize", resize);
load();

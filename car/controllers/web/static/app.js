// The car's page: video in, control out, over one WebSocket. No build step, no libraries.
// Steering and throttle are in [-1, 1]; steering +1 is full right, throttle +1 full forward.
// Rules the page keeps (the server keeps its own, see state.py and server.py):
// - hidden (visibilitychange, pagehide): one neutral control, then none until visible again
//   (a background tab's timers run at ~1 Hz); held keys, the joystick and the gamepad's
//   state are dropped, so nothing drives on return until touched again;
// - a random client id in sessionStorage goes with the socket (?client=), so a reconnect
//   within 10 s gets control back; nobody else may drive in those 10 s, and after them a
//   watcher drives only by pressing "Take control" (never automatically);
// - a STOP that cannot be sent (socket not open) says so: "STOP NOT SENT: offline".
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const SEND_MS = 40; // 25 Hz: the control message is also the heartbeat the failsafe watches
  const token = new URLSearchParams(location.search).get("token") || "";
  const NEUTRAL_BELOW = 0.05; // the server takes a control this close to centre as consent
  const page = (window.carPage = {
    frames: 0, statuses: 0, sent: 0, connected: false, owner: false, failsafe: false,
    failsafeSeen: 0, paused: false, hiddenNeutrals: 0, stopsNotSent: 0,
    takeoverPending: false, clientId: "", failsafeText: "", controlFree: false,
    reclaimS: 0, modeRefused: "", eraseText: "", touchOnly: false,
    hello: "", lastError: "", steering: 0, throttle: 0, source: "none", gamepad: "",
  });
  let ws = null;
  let retryMs = 500;
  let status = {};
  let eraseCount = 100;
  let failsafeMs = 250;

  // ------------------------------------------------------------------ connection
  function clientId() { // random per tab, kept across reloads and reconnects of this tab
    let id = "";
    try { id = sessionStorage.getItem("carClientId") || ""; } catch { /* storage off */ }
    if (!/^[A-Za-z0-9_-]{8,64}$/.test(id)) {
      const bytes = crypto.getRandomValues(new Uint8Array(16));
      id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
      try { sessionStorage.setItem("carClientId", id); } catch { /* storage off */ }
    }
    return id;
  }
  page.clientId = clientId();

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const sock = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(token)}`
      + `&client=${encodeURIComponent(page.clientId)}`);
    sock.binaryType = "blob";
    sock.onopen = () => { retryMs = 500; setConnected(true); };
    sock.onmessage = (ev) => {
      if (typeof ev.data !== "string") { showFrame(ev.data); return; }
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg.type === "status") onStatus(msg);
      else if (msg.type === "hello") onHello(msg);
      else if (msg.type === "error") onError(msg);
    };
    sock.onclose = () => {
      if (ws === sock) ws = null;
      setConnected(false);
      setTimeout(connect, retryMs);
      retryMs = Math.min(3000, retryMs * 2);
    };
    ws = sock;
  }

  function send(msg) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  function setConnected(on) {
    page.connected = on;
    $("conn").textContent = on ? "connected" : "offline";
    $("conn").className = "pill " + (on ? "on" : "off");
    $("banner-conn").hidden = on;
    if (!on) setOwner(false, true);
    showTakeover();
  }

  function setOwner(owner, unknown) {
    page.owner = owner;
    $("role").textContent = unknown ? "…" : owner ? "driving" : "view only";
    $("role").className = "pill " + (owner ? "on" : unknown ? "" : "warn");
    $("banner-view").hidden = owner || unknown || page.controlFree;
    document.body.classList.toggle("viewer", !owner && !unknown);
  }

  function onHello(msg) {
    page.hello = msg.message;
    eraseCount = msg.erase_count || eraseCount;
    $("erase").textContent = `Erase last ${eraseCount}`;
    failsafeMs = msg.failsafe_ms || failsafeMs;
    setFailsafeText(false);
    page.takeoverPending = !!msg.takeover_pending;
    setOwner(!!msg.owner, false);
    say(msg.message, false);
  }

  function setFailsafeText(switched) {
    const text = `FAILSAFE: no control for ${failsafeMs} ms — car stopped`
      + (switched ? " — switched to user mode" : "");
    if ($("banner-failsafe").textContent !== text) $("banner-failsafe").textContent = text;
  }

  function onError(msg) { // a refused mode change is said by the mode selector
    if (msg.about === "mode") refuseMode(msg.message, status.mode);
    else say(msg.message, true);
  }

  let sayTimer = 0;
  function say(text, error) {
    if (error) page.lastError = text;
    const el = $("message");
    el.textContent = text;
    el.className = "message" + (error ? " error" : "");
    clearTimeout(sayTimer);
    sayTimer = setTimeout(() => { el.textContent = ""; }, error ? 6000 : 4000);
  }

  // ------------------------------------------------------------------ video
  const video = $("video");
  let shownUrl = null;
  let loadingUrl = null;
  const frameTimes = [];
  function showFrame(blob) {
    const url = URL.createObjectURL(blob);
    if (loadingUrl) URL.revokeObjectURL(loadingUrl); // a newer frame replaces one still decoding
    loadingUrl = url;
    video.src = url;
  }
  video.addEventListener("load", () => {
    if (!loadingUrl || video.src !== loadingUrl) return;
    if (shownUrl) URL.revokeObjectURL(shownUrl);
    shownUrl = loadingUrl;
    loadingUrl = null;
    page.frames += 1;
    $("novideo").hidden = true;
    const now = performance.now();
    frameTimes.push(now);
    while (frameTimes.length && now - frameTimes[0] > 2000) frameTimes.shift();
  });

  // ------------------------------------------------------------------ status panel
  const fmt = (v, digits) => (typeof v === "number" ? v.toFixed(digits) : String(v));
  const has = (v) => v !== undefined && v !== null;
  const WIDE = new Set(["Model", "Command", "Rejected", "Gamepad"]); // rows given two columns
  const ROWS = [
    ["Loop", (s) => has(s.hz) ? `${fmt(s.hz, 1)} Hz` : null],
    ["Latency", (s) => has(s.latency_ms) ? `${fmt(s.latency_ms, 0)} ms` : null],
    ["Video", () => {
      const n = frameTimes.length;
      return n > 1 ? `${((n - 1) * 1000 / (frameTimes[n - 1] - frameTimes[0])).toFixed(0)} fps`
        : null;
    }],
    ["Mode", (s) => has(s.mode) ? s.mode : null],
    ["Records", (s) => has(s.records) ? `${s.records}${s.recording ? " ●" : ""}` : null],
    ["Model", (s) => has(s.model) ? s.model : null],
    ["Laps", (s) => has(s.lap) ? String(s.lap) : null], // in a simulator only
    ["Last lap", (s) => has(s.last_lap_s) ? `${fmt(s.last_lap_s, 1)} s` : null],
    ["Speed", (s) => has(s.speed_mps) ? `${fmt(s.speed_mps, 1)} m/s` : null],
    ["Resets", (s) => has(s.resets) ? String(s.resets) : null],
    ["Battery", (s) => has(s.battery_v) ? `${fmt(s.battery_v, 2)} V` : null],
    ["MCU", (s) => !s.mcu ? null : s.mcu_fault ? `fault: ${s.mcu_fault}`
      : s.mcu_failsafe ? "FAILSAFE" : "ok"],
    ["PWM board", (s) => !s.pwm ? null : s.pwm_fault ? `fault: ${s.pwm_fault}` : "ok"],
    ["Command", (s) => has(s.steering) && has(s.throttle)
      ? `${fmt(s.steering, 2)} / ${fmt(s.throttle, 2)}${s.reason && s.reason !== "ok"
        ? ` (${s.reason})` : ""}` : null],
    ["Viewers", (s) => has(s.viewers) ? String(s.viewers) : null],
    ["Gamepad", () => !navigator.getGamepads ? "needs https here" : page.gamepad || null],
    ["Rejected", (s) => {
      const r = s.rejected || {};
      const parts = Object.entries(r).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`);
      return parts.length ? parts.join(", ") : null;
    }],
  ];
  const statusEl = $("status");
  const cells = ROWS.map(([label]) => {
    const row = document.createElement("div");
    row.className = WIDE.has(label) ? "row wide" : "row";
    row.hidden = true;
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    row.append(dt, dd);
    statusEl.append(row);
    return { row, dd };
  });

  let modeChangedAt = -1e9;
  let refusalsSeen = null; // the loop's count of refused mode requests, as last seen
  let erasesSeen = null; // the recorder's count of finished erases, as last seen
  let limitHeld = false;
  function onStatus(s) {
    status = s;
    page.statuses += 1;
    page.failsafe = !!s.failsafe;
    if (s.failsafe) page.failsafeSeen += 1;
    ROWS.forEach(([, get], i) => {
      const text = get(s);
      cells[i].row.hidden = text === null;
      if (text !== null && cells[i].dd.textContent !== text) {
        cells[i].dd.textContent = text;
        cells[i].dd.title = text; // the whole text, where a narrow cell cuts it
      }
    });
    page.controlFree = !!s.control_free;
    page.reclaimS = s.reclaim_s || 0;
    if (has(s.owner)) setOwner(s.owner, false);
    showTakeover();
    page.takeoverPending = !!s.takeover_pending;
    setFailsafeText(!!s.failsafe_switched);
    if (s.failsafe) page.failsafeText = $("banner-failsafe").textContent;
    showBanners();
    $("banner-estop").hidden = !s.estop;
    $("rec").hidden = !s.recording;
    const rec = $("record");
    rec.textContent = s.recording ? "Stop recording" : "Record";
    rec.classList.toggle("active", !!s.recording);
    const noRecorder = "records" in s && s.records === null;
    rec.disabled = noRecorder;
    $("erase").disabled = noRecorder;
    if (has(s.mode) && performance.now() - modeChangedAt > 1000 &&
        document.activeElement !== $("mode")) $("mode").value = s.mode;
    if (has(s.mode_refusals)) {
      if (refusalsSeen !== null && s.mode_refusals > refusalsSeen) {
        refuseMode(s.mode_refused || "mode change refused", s.mode);
      }
      refusalsSeen = s.mode_refusals;
    }
    if (has(s.erases)) {
      if (erasesSeen !== null && s.erases > erasesSeen) erased(s);
      erasesSeen = s.erases;
    }
    if (has(s.throttle_limit) && !limitHeld) setLimitLabel(Math.round(s.throttle_limit * 100));
  }

  // The takeover banner while this page owns control but the server waits for it to centre
  // its controls (shown only while they are off centre: a centred page takes over at once);
  // the failsafe banner otherwise.
  function showBanners() {
    const offCentre = Math.abs(page.steering) >= NEUTRAL_BELOW
      || Math.abs(page.throttle) >= NEUTRAL_BELOW;
    const takeover = page.owner && page.takeoverPending && offCentre;
    $("banner-takeover").hidden = !takeover;
    $("banner-failsafe").hidden = !status.failsafe || takeover;
  }

  // "Take control": only while nobody drives; greyed, with a countdown, while the control
  // is kept for the browser that left.
  function showTakeover() {
    const el = $("takeover");
    el.hidden = page.owner || !page.controlFree || !page.connected;
    const wait = Math.ceil(page.reclaimS);
    el.disabled = wait > 0;
    const text = wait > 0 ? `Take control (in ${wait} s)` : "Take control";
    if (el.textContent !== text) el.textContent = text;
  }
  $("takeover").addEventListener("click", () => send({ type: "take_over" }));

  // ------------------------------------------------------------------ buttons and settings
  let stopFailedTimer = 0;
  function sendEstop() {
    if (send({ type: "estop" })) return;
    page.stopsNotSent += 1; // never silently: the car did NOT get this stop
    $("banner-stopfail").hidden = false;
    say("STOP NOT SENT: offline — the car did not get it", true);
    if (navigator.vibrate) navigator.vibrate(300);
    clearTimeout(stopFailedTimer);
    stopFailedTimer = setTimeout(() => { $("banner-stopfail").hidden = true; }, 6000);
  }
  $("estop").addEventListener("pointerdown", sendEstop);
  $("estop").addEventListener("keydown", (e) => {
    if (e.key === "Enter") sendEstop();
  });
  $("clear").addEventListener("click", () => send({ type: "clear_estop" }));
  $("record").addEventListener("click", () => send({ type: "record", on: !status.recording }));
  let eraseArmed = 0;
  $("erase").addEventListener("click", () => {
    const el = $("erase");
    if (!eraseArmed) { // two taps: the erase must not come from a stray touch while driving
      el.textContent = `Tap again to erase ${eraseCount}`;
      el.classList.add("armed");
      eraseArmed = setTimeout(disarm, 3000);
      return;
    }
    disarm();
    if (send({ type: "erase" })) say(`erasing the last ${eraseCount} records`, false);
  });
  // What the recorder really erased: fewer than asked near the start of a recording.
  function erased(s) {
    const k = s.erased_last || 0;
    const text = s.erase_error ? `erase failed: ${s.erase_error}`
      : `erased ${k} record${k === 1 ? "" : "s"}${k < eraseCount ? " (all there were)" : ""}`
        + "; restorable (car tub restore)";
    page.eraseText = text;
    say(text, !!s.erase_error);
  }
  function disarm() {
    clearTimeout(eraseArmed);
    eraseArmed = 0;
    $("erase").textContent = `Erase last ${eraseCount}`;
    $("erase").classList.remove("armed");
  }
  // A refused mode change: why, by the selector, which shows the mode in effect again.
  let noteTimer = 0;
  function refuseMode(text, mode) {
    page.modeRefused = text;
    const note = $("mode-note");
    note.textContent = text;
    note.hidden = false;
    clearTimeout(noteTimer);
    noteTimer = setTimeout(() => { note.hidden = true; }, 8000);
    modeChangedAt = -1e9;
    if (has(mode)) $("mode").value = mode;
  }
  $("mode").addEventListener("change", (e) => {
    modeChangedAt = performance.now();
    $("mode-note").hidden = true;
    send({ type: "mode", mode: e.target.value });
    e.target.blur(); // the arrow keys drive, they do not change the mode
  });
  const limit = $("limit");
  function setLimitLabel(pct) {
    limit.value = String(pct);
    $("limit-out").textContent = `${pct} %`;
  }
  limit.addEventListener("pointerdown", () => { limitHeld = true; });
  limit.addEventListener("input", () => { $("limit-out").textContent = `${limit.value} %`; });
  limit.addEventListener("change", () => {
    limitHeld = false;
    send({ type: "throttle_limit", value: Number(limit.value) / 100 });
    limit.blur();
  });

  // ------------------------------------------------------------------ joystick pad
  const pad = $("pad");
  const knob = $("knob");
  const joy = { id: null, steering: 0, throttle: 0 };
  const clamp = (v) => Math.max(-1, Math.min(1, v));
  function joyMove(e) {
    const r = pad.getBoundingClientRect();
    const half = (r.width - knob.offsetWidth) / 2;
    joy.steering = clamp((e.clientX - (r.left + r.width / 2)) / half);
    joy.throttle = clamp(((r.top + r.height / 2) - e.clientY) / half);
  }
  pad.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    pad.setPointerCapture(e.pointerId);
    joy.id = e.pointerId;
    joyMove(e);
  });
  pad.addEventListener("pointermove", (e) => { if (e.pointerId === joy.id) joyMove(e); });
  const joyEnd = (e) => {
    if (e.pointerId !== joy.id) return;
    joy.id = null; // released: back to the centre
    joy.steering = 0;
    joy.throttle = 0;
  };
  for (const ev of ["pointerup", "pointercancel", "lostpointercapture"]) {
    pad.addEventListener(ev, joyEnd);
  }

  // ------------------------------------------------------------------ keyboard
  // Held keys ramp toward full (steering in 0.2 s, throttle in 0.4 s); releasing the
  // throttle key (or pressing the other way) cuts throttle to 0 at once; steering re-centres
  // at the same rate it moved.
  const KEYS = {
    ArrowUp: "up", KeyW: "up", ArrowDown: "down", KeyS: "down",
    ArrowLeft: "left", KeyA: "left", ArrowRight: "right", KeyD: "right",
  };
  const held = new Set();
  const kb = { steering: 0, throttle: 0 };
  window.addEventListener("keydown", (e) => {
    if (e.code === "Space") { e.preventDefault(); sendEstop(); return; }
    const dir = KEYS[e.code];
    if (!dir) return;
    e.preventDefault(); // no scrolling, no slider or select moving
    held.add(dir);
  }, true);
  window.addEventListener("keyup", (e) => {
    const dir = KEYS[e.code];
    if (dir) { e.preventDefault(); held.delete(dir); }
  }, true);
  window.addEventListener("blur", () => held.clear());
  const toward = (v, target, step) => (v < target ? Math.min(target, v + step)
    : Math.max(target, v - step));
  function keyboardStep(dt) {
    const s = (held.has("right") ? 1 : 0) - (held.has("left") ? 1 : 0);
    const t = (held.has("up") ? 1 : 0) - (held.has("down") ? 1 : 0);
    kb.steering = toward(kb.steering, s, 5 * dt);
    kb.throttle = t === 0 || Math.sign(t) !== Math.sign(kb.throttle) && kb.throttle !== 0
      ? 0 : toward(kb.throttle, t, 2.5 * dt);
    return held.size > 0 || kb.steering !== 0 || kb.throttle !== 0;
  }

  // ------------------------------------------------------------------ gamepad (standard mapping)
  const dead = (v) => (Math.abs(v) < 0.1 ? 0 : v);
  let pressedBefore = {};
  let gpResync = false; // after the page was hidden: ignore the pad until it reads centred
  function readGamepad() {
    if (!navigator.getGamepads) return null;
    const pads = navigator.getGamepads();
    const gp = Array.from(pads || []).find((p) => p && p.connected);
    page.gamepad = gp ? gp.id : "";
    if (!gp) return null;
    const button = (i) => (gp.buttons[i] ? gp.buttons[i].value : 0);
    for (const [i, action] of [[1, sendEstop],
      [3, () => send({ type: "record", on: !status.recording })]]) {
      const down = button(i) > 0.5;
      if (down && !pressedBefore[i] && !gpResync) action(); // a held button is no new press
      pressedBefore[i] = down;
    }
    const rt = button(7);
    const lt = button(6);
    const steering = clamp(dead(gp.axes[0] || 0));
    const throttle = clamp(rt > 0.05 || lt > 0.05 ? rt - lt : -dead(gp.axes[3] || 0));
    if (gpResync) {
      if (steering !== 0 || throttle !== 0) return null;
      gpResync = false;
    }
    return { steering, throttle };
  }

  // ------------------------------------------------------------------ hidden page
  // A background tab's timers run at ~1 Hz: its controls would re-arm the failsafe once a
  // second and the car would lurch. Hidden: one neutral control, then none until visible.
  function pause() {
    if (page.paused) return;
    if (page.owner && send({ type: "control", steering: 0, throttle: 0 })) {
      page.sent += 1;
      page.hiddenNeutrals += 1;
    }
    page.paused = true;
    held.clear(); // keys, joystick and gamepad: nothing held survives the hide
    kb.steering = 0;
    kb.throttle = 0;
    if (joy.id !== null && pad.hasPointerCapture(joy.id)) pad.releasePointerCapture(joy.id);
    joy.id = null;
    joy.steering = 0;
    joy.throttle = 0;
    pressedBefore = {};
    gpResync = true;
    Object.assign(page, { steering: 0, throttle: 0, source: "none" });
  }
  function resume() {
    if (!page.paused) return;
    page.paused = false;
    lastTick = performance.now();
  }
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "hidden") pause(); else resume();
  });
  window.addEventListener("pagehide", pause);
  window.addEventListener("pageshow", () => {
    if (document.visibilityState !== "hidden") resume();
  });

  // ------------------------------------------------------------------ the 25 Hz control tick
  let lastTick = performance.now();
  function tick() {
    if (page.paused) return;
    const now = performance.now();
    const dt = Math.min(0.2, (now - lastTick) / 1000);
    lastTick = now;
    const keyboard = keyboardStep(dt);
    const gp = readGamepad();
    let steering = 0;
    let throttle = 0;
    let source = "none";
    if (joy.id !== null) {
      [steering, throttle, source] = [joy.steering, joy.throttle, "joystick"];
    } else if (keyboard) {
      [steering, throttle, source] = [kb.steering, kb.throttle, "keyboard"];
    } else if (gp) {
      [steering, throttle, source] = [gp.steering, gp.throttle, "gamepad"];
    }
    Object.assign(page, { steering, throttle, source });
    const half = (pad.clientWidth - knob.offsetWidth) / 2;
    knob.style.transform = `translate(${steering * half}px, ${-throttle * half}px)`;
    if (page.owner && send({ type: "control", steering, throttle })) page.sent += 1;
    showBanners();
  }
  setInterval(tick, SEND_MS); // not requestAnimationFrame: it must run in every frame state

  // A touch-only device (no hover, a coarse pointer) has no keyboard to hint at.
  const touchQuery = window.matchMedia("(hover: none) and (pointer: coarse)");
  const showKeysHint = () => {
    page.touchOnly = touchQuery.matches;
    $("hint-keys").hidden = touchQuery.matches;
  };
  showKeysHint();
  touchQuery.addEventListener("change", showKeysHint);

  if (document.visibilityState === "hidden") pause(); // opened in a background tab
  connect();
})();

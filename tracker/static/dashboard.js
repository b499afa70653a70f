// etem live dashboard: polls the run's JSON endpoints at a human rate and draws what they hold.
// Self-contained (no libraries, nothing fetched from elsewhere).
"use strict";

const STATUS_MS = 500;   // counters and queues
const FRAME_MS = 400;    // latest frame and its columns
const MAPS_MS = 1000;    // occupancy and event maps
const SITE_MS = 1000;    // the selected site's timeline
const HIDDEN_WAIT_S = 20; // a hidden tab's status request: answered at the run's end, or after this

const $ = (id) => document.getElementById(id);
let frameInfo = null;    // /api/frame of the frame on screen
let mapsInfo = null;     // /api/maps of the maps on screen
let selected = null;     // /api/site of the selected site
let lastStatus = null;   // the last /api/status answered

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
  return r.json();
}

function loadImage(img, src) {
  return new Promise((resolve, reject) => {
    img.onload = () => { img.parentElement.classList.add("ready"); resolve(img); };
    img.onerror = () => reject(new Error(`${src}: not loaded`));
    img.src = src;
  });
}

// Run fn every ms milliseconds, one call at a time; paused while the tab is hidden.
function every(ms, fn) {
  const tick = async () => {
    if (!document.hidden) {
      try { await fn(); } catch (e) { console.debug(e); }
    }
    setTimeout(tick, ms);
  };
  tick();
}

const fmt = (v, digits = 0) => (v === null || v === undefined || Number.isNaN(v)) ? "–" : Number(v).toFixed(digits);

function bytes(n) {
  if (n < 1024) return `${n} B`;
  const u = ["KiB", "MiB", "GiB", "TiB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
  return `${n.toFixed(1)} ${u[i]}`;
}

// -- status -----------------------------------------------------------------------------------
// How the run ended, as its last status said; `exited`: the tracker no longer answers.
function endText(s, exited) {
  const how = `run ended${s.outcome ? ` (${s.outcome})` : ""}`;
  if (!exited) return s.exiting ? `${how} — the tracker is exiting` : how;
  const final = mapsInfo && mapsInfo.version >= s.maps_version;
  return `${how} — the tracker has exited; ` + (final ? "these are its final maps" : "the maps shown may lack its last frames");
}

function showState(s, exited) {
  const el = $("state");
  if (s.state === "finished") {
    el.textContent = endText(s, exited);
    el.className = s.outcome && s.outcome !== "complete" ? "finished ended-early" : "finished";
  } else if (exited) {
    el.textContent = "connection lost";
    el.className = "offline";
  } else {
    el.textContent = { waiting: "waiting for the first frame", running: "running" }[s.state] || s.state;
    el.className = s.state;
  }
}

function showReasons(s) {
  const rows = Object.entries(s).filter(([k, v]) => k.includes("/") && v > 0);
  $("reasons-panel").hidden = !rows.length;
  const table = $("reasons");
  table.replaceChildren();
  if (!rows.length) return;
  const row = (cells, tag) => {
    const tr = table.insertRow();
    for (const c of cells) { const td = document.createElement(tag); td.textContent = c; tr.append(td); }
  };
  row(["", "reason", "frames"], "th");
  for (const [k, v] of rows) row([...k.split("/", 2), String(v)], "td");
}

async function pollStatus(waitS) {
  let s;
  try {
    s = await getJSON(waitS ? `api/status?wait=${waitS}` : "api/status");
  } catch (e) {
    showState(lastStatus || { state: "waiting" }, true);
    throw e;
  }
  lastStatus = s;
  showState(s, false);
  $("engine").textContent = s.engine ? `engine: ${s.engine}` : "";
  const run = [];
  if (s.source) run.push(`frames from ${s.source}`);
  if (s.state && s.state !== "waiting") run.push(s.run_file ? `run file ${s.run_file.split(/[\\/]/).pop()}` : "no run file");
  $("run").textContent = run.join(" · ");
  $("run").title = s.run_file || "";
  $("updated").textContent = s.since_last_frame_s != null && s.since_last_frame_s > 2
    ? `no frame for ${fmt(s.since_last_frame_s)} s` : "";
  $("last_frame").textContent = s.last_frame ?? "–";
  for (const k of ["processed", "received", "rejected", "dropped", "missing", "sites", "view_jumps", "class_changes", "hops"]) {
    $(k).textContent = s[k] ?? 0;
  }
  // a site's occupancy is final look_ahead frames after it is seen: until the first frame is,
  // the sites are building, and the class changes and hops beside them count the final frames only
  const lag = s.look_ahead_frames;
  if (s.sites_building) {
    $("sites").textContent = "building";
    $("sites_why").textContent = lag != null ? `final ${lag} frames after they are seen` : "";
  } else {
    $("sites_why").textContent = "";
  }
  const upto = s.sites_final_frame != null && s.state === "running"
    ? `up to frame ${s.sites_final_frame}, the last whose sites are final` : "";
  $("t_sites").title = s.sites_building
    ? `no frame's sites are final yet: a site's occupancy is decided ${lag} frames after it is seen` : upto;
  for (const k of ["class_changes", "hops"]) $(`t_${k}`).title = s.sites_building ? "counted once the sites are final" : upto;
  for (const k of ["rejected", "dropped", "missing"]) {
    $(`t_${k}`).classList.toggle("alert", (s[k] || 0) > 0);
  }
  // the latest judged frames decide the alert; the whole run's count is beside them
  const judged = (s.in_range || 0) + (s.out_of_range || 0);
  const recent = s.recent_judged || 0;
  const recentOut = recent - (s.recent_in_range || 0);
  $("trust").textContent = !judged ? "–"
    : recent < judged ? `${s.recent_in_range} of the last ${recent}` : `${s.in_range} of ${judged}`;
  // one short line under the figure; the whole of it in the tile's tooltip
  const why = [];
  if (recent < judged) why.push(`whole run ${s.in_range} of ${judged}`);
  if (recentOut > 0 && s.trust_last_out) why.push(`last ${s.trust_last_out}`);
  $("trust_why").textContent = why.join("; ");
  $("t_trust").title = "frames whose images are inside the ranges the locator was made for" +
    (why.length ? `\n${why.join("\n")}` : "");
  $("t_trust").classList.toggle("alert", !!s.trust_alert);
  $("fps_recent").textContent = fmt(s.fps_recent, 1);
  $("fps").textContent = fmt(s.fps, 1);
  $("latency").textContent = `${fmt(s.latency_p50_ms)} / ${fmt(s.latency_p99_ms)}`;
  for (const q of ["ingest", "host"]) {
    const v = s.queues && s.queues[q];
    $(`queue_${q}`).textContent = v ? `${v.depth} / ${v.capacity}` : "–";
  }
  const gpu = Object.entries(s.gpu || {});
  $("gpu").textContent = gpu.length ? gpu.map(([d, m]) => `${bytes(m.allocated)}`).join(", ") : "no GPU";
  showReasons(s);
}

// -- latest frame -----------------------------------------------------------------------------
function fitCanvas(canvas, img) {
  const w = img.clientWidth, h = img.clientHeight, r = window.devicePixelRatio || 1;
  if (canvas.width !== Math.round(w * r) || canvas.height !== Math.round(h * r)) {
    canvas.width = Math.round(w * r);
    canvas.height = Math.round(h * r);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(r, 0, 0, r, 0, 0);
  ctx.clearRect(0, 0, w, h);
  return ctx;
}

function drawColumns() {
  const img = $("frame"), f = frameInfo;
  if (!f || !img.naturalWidth) return;
  const ctx = fitCanvas($("frame-overlay"), img);
  const s = img.clientWidth / f.display_shape[1] * f.scale;   // screen px per frame px
  const rad = Math.max(4, Math.min(10, 2.5 * s));
  ctx.lineWidth = 1.5;
  for (const [y, x, cls, site] of f.columns) {
    ctx.strokeStyle = f.colours[cls % f.colours.length];
    ctx.beginPath();
    ctx.arc((x + 0.5) * s, (y + 0.5) * s, rad, 0, 2 * Math.PI);
    ctx.stroke();
    if (selected && site === selected.site) {
      ctx.save();
      ctx.strokeStyle = "#ffffff";
      ctx.lineWidth = 2.5;
      ctx.beginPath();
      ctx.arc((x + 0.5) * s, (y + 0.5) * s, rad + 4, 0, 2 * Math.PI);
      ctx.stroke();
      ctx.restore();
    }
  }
}

function drawLegend(f) {
  const counts = new Map();
  for (const c of f.columns) counts.set(c[2], (counts.get(c[2]) || 0) + 1);
  const items = [...counts.entries()].sort((a, b) => a[0] - b[0]).map(([k, n]) => {
    const name = (f.class_labels || f.class_names)[k] ?? `class ${k}`;
    return `<span style="--c:${f.colours[k % f.colours.length]}">${name} (${n})</span>`;
  });
  $("legend").innerHTML = items.join("");
  $("class-note").textContent = f.class_note || "";
  $("classes-example").textContent = f.class_change_example || "a site's column changing class";
}

// A bar of a round length (1, 2 or 5 × 10^k Å), about a fifth of the frame wide.
function drawScaleBar(f) {
  const bar = $("scalebar");
  bar.hidden = !f.sampling_A;
  if (!f.sampling_A) return;
  const widthA = f.shape[1] * f.sampling_A, target = widthA / 5;
  const p = 10 ** Math.floor(Math.log10(target));
  const len = Number([5, 2, 1].map((m) => m * p).find((l) => l <= target).toPrecision(2));
  bar.style.width = `${(100 * len / widthA).toFixed(3)}%`;
  $("scalebar-label").textContent = len >= 10 ? `${Number((len / 10).toPrecision(2))} nm` : `${len} Å`;
  bar.dataset.lengthA = String(len);
}

async function pollFrame() {
  const f = await getJSON("api/frame");
  if (f.frame === null || (frameInfo && f.frame === frameInfo.frame)) return;
  await loadImage($("frame"), f.png);
  frameInfo = f;
  $("frame-info").textContent =
    `#${f.frame} · ${f.n_columns} columns · drift ${fmt(f.drift[0], 1)}, ${fmt(f.drift[1], 1)} px`;
  drawLegend(f);
  drawScaleBar(f);
  drawColumns();
}

// -- maps -------------------------------------------------------------------------------------
function drawSelection() {
  for (const name of ["occupancy", "events", "classes"]) {
    const img = $(name);
    if (!mapsInfo || !img.naturalWidth) continue;
    const ctx = fitCanvas($(`${name}-overlay`), img);
    const s = img.clientWidth / mapsInfo.display_shape[1] * mapsInfo.scale;
    if (name === "events" && mapsInfo.quiet_sites) {
      // sites with no event are drawn near-black on the near-black ground: a grey ring each
      ctx.strokeStyle = "rgba(170, 170, 180, 0.8)";
      ctx.lineWidth = 1;
      const r = Math.max(2, (mapsInfo.site_radius_px || 2) * s);
      for (const [y, x] of mapsInfo.quiet_sites) {
        ctx.beginPath();
        ctx.arc((x + 0.5) * s, (y + 0.5) * s, r, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }
    if (!selected) continue;
    ctx.strokeStyle = "#ffffff";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc((selected.x + 0.5) * s, (selected.y + 0.5) * s, 8, 0, 2 * Math.PI);
    ctx.stroke();
  }
}

async function pollMaps() {
  const m = await getJSON("api/maps");
  if (m.version === null || !m.n_sites) {
    // no site final yet: say when the maps start, not empty panels with a 0–0 scale
    if (lastStatus && lastStatus.state !== "waiting" && m.look_ahead_frames != null) {
      const say = `maps start after ${m.look_ahead_frames} frames: a site's occupancy is final that many frames after it is seen`;
      for (const name of ["occupancy", "events", "classes"]) {
        $(`${name}-view`).querySelector(".placeholder").textContent = say;
      }
      $("maps-info").textContent = `starts after ${m.look_ahead_frames} frames`;
    }
    return;
  }
  if (mapsInfo && m.version === mapsInfo.version) return;
  const loads = [loadImage($("occupancy"), m.occupancy), loadImage($("events"), m.events)];
  if (m.classes) loads.push(loadImage($("classes"), m.classes));
  await Promise.all(loads);
  mapsInfo = m;
  // sites in view in too few frames for a measurement are left out of the maps (as the exported
  // maps draw them hollow): said, so that a gap at the field's edge is not read as empty sites
  const few = m.sites_left_out ? ` · ${m.sites_left_out} not shown (in view < ${m.min_frames_in_view} frames)` : "";
  $("maps-info").textContent = `${m.n_sites} sites · ${m.n_frames} frames · mean ${fmt(m.occupancy_mean, 2)}${few}`;
  $("events-max").textContent = fmt(m.events_max, 3);
  $("classes-panel").hidden = !m.classes;  // (only where sites change class)
  if (m.classes) $("classes-max").textContent = fmt(m.classes_max, 3);
  drawSelection();
}

function onMapClick(ev) {
  if (!mapsInfo) return;
  const r = ev.currentTarget.getBoundingClientRect();
  const y = (ev.clientY - r.top) / r.height * mapsInfo.display_shape[0] / mapsInfo.scale;
  const x = (ev.clientX - r.left) / r.width * mapsInfo.display_shape[1] / mapsInfo.scale;
  selectSite(`api/site?y=${y.toFixed(2)}&x=${x.toFixed(2)}`);
}

function onFrameClick(ev) {
  if (!frameInfo || !frameInfo.columns.length) return;
  const r = ev.currentTarget.getBoundingClientRect();
  const y = (ev.clientY - r.top) / r.height * frameInfo.display_shape[0] / frameInfo.scale;
  const x = (ev.clientX - r.left) / r.width * frameInfo.display_shape[1] / frameInfo.scale;
  let best = null, bestD = Infinity;
  for (const c of frameInfo.columns) {
    const d = (c[0] - y) ** 2 + (c[1] - x) ** 2;
    if (c[3] >= 0 && d < bestD) { best = c; bestD = d; }
  }
  if (best) selectSite(`api/site?site=${best[3]}`);
}

// -- the selected site's timeline -------------------------------------------------------------
async function selectSite(url) {
  const s = await getJSON(url);
  if (s.site === null) return;
  selected = s;
  showSite();
  drawSelection();
  drawColumns();
}

async function pollSite() {
  if (!selected) return;
  const s = await getJSON(`api/site?site=${selected.site}`);
  if (s.site !== null) { selected = s; showSite(); }
}

// The site's class by name (the run's class names), else its number.
function className(s) {
  return s.class_name ?? (frameInfo && frameInfo.class_names[s.cls]) ?? `class ${s.cls}`;
}

function showSite() {
  const s = selected;
  $("site-info").textContent =
    `site ${s.site} at ${s.y_A != null ? `(${fmt(s.y_A, 1)}, ${fmt(s.x_A, 1)}) Å [${fmt(s.y, 1)}, ${fmt(s.x, 1)} px]`
      : `(${fmt(s.y, 1)}, ${fmt(s.x, 1)}) px`} · ${className(s)} · occupancy ${fmt(s.occupancy, 3)}` +
    ` · ${s.n_events} events (rate ${fmt(s.event_rate, 3)})` +
    (s.n_class_changes === null || s.n_class_changes === undefined ? "" : ` · ${s.n_class_changes} class changes`) +
    ` · first seen in frame ${s.first_frame}`;
  const c = $("timeline");
  c.dataset.site = String(s.site);
  const w = c.clientWidth, h = c.clientHeight, r = window.devicePixelRatio || 1;
  c.width = Math.round(w * r); c.height = Math.round(h * r);
  const ctx = c.getContext("2d");
  ctx.setTransform(r, 0, 0, r, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const left = 64, right = 12, top = 10, bottom = 26;
  const pw = w - left - right, ph = h - top - bottom;
  const span = Math.max(s.end - s.start + 1, 1);
  const X = (f) => left + (f - s.start) / span * pw;
  ctx.fillStyle = "#2c2f38";
  ctx.fillRect(left, top, pw, ph);
  const cl = s.classes;  // a class-change run: the site's class over time, a band under the occupancy
  const occH = ph - 8 - (cl && cl.length ? 14 : 0);
  ctx.fillStyle = "#21918c";
  const ch = s.changes;
  for (let i = 0; i < ch.length; i++) {
    if (!ch[i][1]) continue;
    const a = ch[i][0], b = i + 1 < ch.length ? ch[i + 1][0] : s.end + 1;
    ctx.fillRect(X(a), top + 4, Math.max(X(b) - X(a), 1), occH);
  }
  if (cl && cl.length) {
    const names = s.class_labels || [], colours = s.colours || [];
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    for (let i = 0; i < cl.length; i++) {
      const a = cl[i][0], b = i + 1 < cl.length ? cl[i + 1][0] : s.end + 1;
      ctx.fillStyle = colours[cl[i][1] % Math.max(colours.length, 1)] || "#9a9ca3";
      ctx.fillRect(X(a), top + ph - 14, Math.max(X(b) - X(a), 1), 10);
      const label = names[cl[i][1]] ?? `class ${cl[i][1]}`;
      if (X(b) - X(a) > ctx.measureText(label).width + 6) {
        ctx.fillStyle = "#000";
        ctx.fillText(label, X(a) + 3, top + ph - 9);
      }
    }
    ctx.fillStyle = "#9a9ca3";
    ctx.fillText("class", 4, top + ph - 9);
  }
  c.dataset.classes = cl ? String(cl.length) : "";
  ctx.fillStyle = "#9a9ca3";
  ctx.font = "12px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  ctx.fillText("occupied", 4, top + (cl && cl.length ? ph / 2 - 8 : ph / 2));
  ctx.textBaseline = "top";
  ctx.fillText(String(s.start), left, top + ph + 6);
  const endLabel = `frame ${s.end}`;
  ctx.fillText(endLabel, left + pw - ctx.measureText(endLabel).width, top + ph + 6);
  c.dataset.drawn = String(ch.length);
}

// -- a hidden tab ---------------------------------------------------------------------------
// The browser slows a hidden tab's timers (to once a minute after a while), and the tracker
// stays after its run only for a page that is polling: a tab hidden when the run ended would
// find the tracker gone and could only say "connection lost". So while hidden, the page keeps
// one status request open, which the tracker answers at the run's end (it waits for such a
// page to fetch the end), and then fetches the last frame and the final maps; shown again, it
// polls at once.
let watching = false;
const ended = () => lastStatus && lastStatus.state === "finished";

async function watchWhileHidden() {
  if (watching) return;
  watching = true;
  try {
    while (document.hidden && !ended()) {
      try { await pollStatus(HIDDEN_WAIT_S); } catch (e) { console.debug(e); break; }  // (gone: said so)
    }
    if (ended()) await Promise.allSettled([pollFrame(), pollMaps()]);
  } finally {
    watching = false;
  }
}

function pollAllNow() {
  for (const fn of [pollStatus, pollFrame, pollMaps, pollSite]) fn().catch((e) => console.debug(e));
}

document.addEventListener("visibilitychange", () => document.hidden ? watchWhileHidden() : pollAllNow());

// -- start ------------------------------------------------------------------------------------
$("occupancy-view").addEventListener("click", onMapClick);
$("events-view").addEventListener("click", onMapClick);
$("classes-view").addEventListener("click", onMapClick);
$("frame-view").addEventListener("click", onFrameClick);
window.addEventListener("resize", () => { drawColumns(); drawSelection(); if (selected) showSite(); });
every(STATUS_MS, pollStatus);
every(FRAME_MS, pollFrame);
every(MAPS_MS, pollMaps);
every(SITE_MS, pollSite);
if (document.hidden) watchWhileHidden();  // (opened in a background tab)

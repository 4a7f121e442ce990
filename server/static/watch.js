// The operator's watch page: polls /api/watch a few times per second (the JSON of
// server/_watch.py) and draws the whole hunt, with positions interpolated between polls.
// For a hunt with rounds it shows the phase and its clock, and the results of every round
// that ended (GET /api/hunts/<hunt>/rounds, read again when a round ends).
// The admin token comes from ?token= or the form (an admin ticket from #ticket=), and is kept
// in sessionStorage (this tab only). `window.watch` holds the last payload, for the console
// and the browser tests.

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "treasure-hunt.admin-token";
const POLL_MS = 250;
const BURST_MS = 2000;

const canvas = $("map");
const ctx = canvas.getContext("2d");
const state = {
  token: null, hunt: null, payload: null, previous: new Map(), polledAt: 0, bursts: [],
  seen: new Set(), feed: [], roundKey: null, history: [], latest: null,
};
window.watch = state;

function setStatus(kind, text) {
  $("status").dataset.state = kind;
  $("status").textContent = text;
}

// ------------------------------------------------------------------ token and hunts

function askToken(message = "") {
  $("login").hidden = false;
  $("forget").hidden = true;
  $("login-error").textContent = message;
  $("token").focus();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("login").hidden = true;
  $("forget").hidden = false;
  poll();
});

$("forget").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  askToken();
});

$("hunt").addEventListener("change", () => {
  state.hunt = $("hunt").value;
  state.payload = null;
  state.previous.clear();
  state.seen.clear();
  state.feed = [];
  state.roundKey = null;
  state.history = [];
  renderFeed();
});

async function loadHunts() {
  const response = await fetch("/api/info", { cache: "no-store" });
  const info = await response.json();
  const wanted = new URLSearchParams(location.search).get("hunt");
  $("hunt").replaceChildren(...info.hunts.map((h) => new Option(h.name, h.name, false,
    h.name === wanted)));
  state.hunt = $("hunt").value;
  return info;
}

// ------------------------------------------------------------------ polling

let timer = null;

async function poll() {
  clearTimeout(timer);
  if (!state.token) return;
  const started = performance.now();
  try {
    const url = `/api/watch?hunt=${encodeURIComponent(state.hunt ?? "")}`;
    const response = await fetch(url, {
      cache: "no-store", headers: { Authorization: `Bearer ${state.token}` },
    });
    const body = await response.json();
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = null;
      setStatus("error", "Admin token refused");
      askToken(body.error ?? "The server refused this token.");
      return;
    }
    if (!response.ok) throw new Error(body.error ?? `HTTP ${response.status}`);
    accept(body);
    setStatus("playing", `Watching ${body.hunt}`);
  } catch (err) {
    setStatus("reconnecting", `Cannot reach the server (${err.message}); retrying…`);
  }
  timer = setTimeout(poll, Math.max(0, POLL_MS - (performance.now() - started)));
}

function accept(payload) {
  // Where each player was drawn from: the last payload's positions, for interpolation.
  const previous = new Map();
  const old = state.payload;
  if (old && old.hunt === payload.hunt) {
    old.players.slot.forEach((slot, i) => previous.set(slot, [old.players.x[i], old.players.y[i]]));
  }
  state.previous = previous;
  state.payload = payload;
  state.polledAt = performance.now();
  for (const d of payload.recent) {
    const key = `${d.tick}:${d.slot}:${d.x}:${d.y}`;
    if (state.seen.has(key)) continue;
    state.seen.add(key);
    state.bursts.push({ x: d.x, y: d.y, value: d.value, start: performance.now() });
    state.feed.unshift(d);
  }
  state.feed.length = Math.min(state.feed.length, 15);
  if (state.seen.size > 500) state.seen = new Set([...state.seen].slice(-200));
  renderSide(payload);
}

// ------------------------------------------------------------------ side panel

function renderSide(p) {
  const s = p.stats;
  $("s-tick").textContent = String(s.tick ?? p.tick);
  $("s-clients").textContent = String(s.clients ?? "–");
  $("s-p50").textContent = s.tick_ms_p50 != null ? s.tick_ms_p50.toFixed(2) : "–";
  $("s-p99").textContent = s.tick_ms_p99 != null ? s.tick_ms_p99.toFixed(2) : "–";
  $("s-players").textContent = String(p.players.slot.length);
  $("s-treasures").textContent =
    `${p.treasures.active.filter((a) => a).length} / ${p.treasures.active.length}`;
  const rows = p.leaderboard.map((r, i) => {
    const li = document.createElement("li");
    li.innerHTML = "<span class='rank'></span><span class='name'></span><span class='pts'></span>";
    li.children[0].textContent = `${i + 1}.`;
    li.children[1].textContent = r.name ?? `bot #${r.slot}`;
    li.children[2].textContent = String(r.score);
    return li;
  });
  if (!rows.length) rows.push(Object.assign(document.createElement("li"),
    { className: "empty", textContent: "Nobody has scored yet." }));
  $("board").replaceChildren(...rows);
  renderFeed();
  renderRound(p);
}

// ------------------------------------------------------------------ rounds

function clock(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

const PHASE_WORDS = {
  lobby: "lobby: players gather", running: "running", results: "results", over: "over",
};

function renderRound(p) {
  const r = p.round;
  $("round-card").hidden = !r;
  $("history-card").hidden = !r;
  if (!r) return;
  const of = r.count ? ` of ${r.count}` : "";
  const line = $("w-phase");
  line.dataset.phase = r.phase;
  line.textContent = r.phase === "over" ? `The hunt is over (${r.number} rounds played)`
    : `Round ${r.number}${of} · ${PHASE_WORDS[r.phase] ?? r.phase}`;
  const small = document.createElement("small");
  small.textContent = r.phase === "over" ? "nothing more happens"
    : `${clock(r.seconds_left)} left (until tick ${r.phase_end})` +
      (r.request ? ` · "${r.request}" queued for the next tick` : "");
  line.append(small);
  const key = `${p.hunt}:${r.number}:${r.phase}`;
  if (key !== state.roundKey) {
    state.roundKey = key;
    loadHistory(p.hunt);
  }
}

async function loadHistory(hunt) {
  try {
    const response = await fetch(`/api/hunts/${encodeURIComponent(hunt)}/rounds`,
      { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    if (hunt !== state.hunt && state.hunt) return;  // the operator picked another hunt
    state.history = body.rounds ?? [];
    const newest = state.history.at(-1);
    state.latest = null;
    if (newest) {
      const detail = await fetch(
        `/api/hunts/${encodeURIComponent(hunt)}/rounds/${newest.round}`, { cache: "no-store" });
      if (detail.ok) state.latest = await detail.json();
    }
  } catch (err) {
    console.warn("results history:", err.message);
    return;
  }
  renderHistory();
}

function renderHistory() {
  const rounds = [...state.history].sort((a, b) => b.round - a.round);
  if (!rounds.length) {
    $("history").innerHTML = "<li class='empty'>No round has ended yet.</li>";
    return;
  }
  const who = (row) => row.name ?? row.user ?? `player ${row.player_id}`;
  $("history").replaceChildren(...rounds.map((entry) => {
    const li = document.createElement("li");
    const no = document.createElement("span");
    no.className = "round-no";
    no.textContent = `Round ${entry.round}`;
    const latest = state.latest?.round === entry.round ? state.latest : null;
    let text;
    if (latest?.standings.length) {
      text = latest.standings.slice(0, 3).map((row) =>
        `${row.rank}. ${who(row)} ${row.score}`).join(" · ");
    } else {
      text = entry.winner ? `winner ${who(entry.winner)} with ${entry.winner.score}`
        : "nobody played";
    }
    li.append(no, text, ` (${entry.players} ranked, ended at tick ${entry.ended_tick})`);
    return li;
  }));
}

function renderFeed() {
  if (!state.feed.length) {
    $("feed").innerHTML = "<li class='empty'>No treasure found yet.</li>";
    return;
  }
  $("feed").replaceChildren(...state.feed.map((d) => Object.assign(document.createElement("li"), {
    textContent: `tick ${d.tick}: ${d.name ?? `bot #${d.slot}`} found ${d.value} ` +
      `at (${Math.round(d.x)}, ${Math.round(d.y)})`,
  })));
}

// ------------------------------------------------------------------ drawing

function frame() {
  const rect = canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(1, Math.round(rect.width * dpr));
  const h = Math.max(1, Math.round(rect.height * dpr));
  if (canvas.width !== w || canvas.height !== h) [canvas.width, canvas.height] = [w, h];
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#070c14";
  ctx.fillRect(0, 0, rect.width, rect.height);
  const p = state.payload;
  if (p) draw(p, rect.width, rect.height);
  requestAnimationFrame(frame);
}

function draw(p, W, H) {
  const { width, height } = p.params;
  const pad = 24;
  const s = Math.min((W - 2 * pad) / width, (H - 2 * pad) / height);
  const ox = (W - width * s) / 2;
  const oy = (H - height * s) / 2;
  const sx = (x) => ox + x * s;
  const sy = (y) => oy + y * s;
  ctx.fillStyle = "#0f1b2c";
  ctx.fillRect(ox, oy, width * s, height * s);
  ctx.strokeStyle = "#4a6183";
  ctx.lineWidth = 2;
  ctx.strokeRect(ox, oy, width * s, height * s);

  // Treasures: gold diamonds, hollow while waiting to respawn.
  const t = p.treasures;
  const d = Math.max(3, Math.min(7, 2.5 * s));
  const diamond = (i) => {
    const x = sx(t.x[i]);
    const y = sy(t.y[i]);
    ctx.moveTo(x, y - d); ctx.lineTo(x + d, y); ctx.lineTo(x, y + d); ctx.lineTo(x - d, y);
    ctx.closePath();
  };
  ctx.beginPath();
  t.x.forEach((_, i) => { if (t.active[i]) diamond(i); });
  ctx.fillStyle = "#ffd166";
  ctx.fill();
  ctx.beginPath();
  t.x.forEach((_, i) => { if (!t.active[i]) diamond(i); });
  ctx.strokeStyle = "#8a7a4a";
  ctx.lineWidth = 1;
  ctx.stroke();

  // Discoveries as they happen.
  const now = performance.now();
  state.bursts = state.bursts.filter((b) => now - b.start < BURST_MS);
  for (const b of state.bursts) {
    const k = (now - b.start) / BURST_MS;
    ctx.globalAlpha = 1 - k;
    ctx.strokeStyle = "#6be3a4";
    ctx.lineWidth = 3;
    ctx.beginPath();
    ctx.arc(sx(b.x), sy(b.y), 6 + 34 * k, 0, 2 * Math.PI);
    ctx.stroke();
    ctx.fillStyle = "#6be3a4";
    ctx.font = "800 15px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.fillText(`+${b.value}`, sx(b.x), sy(b.y) - 12 - 24 * k);
    ctx.globalAlpha = 1;
  }

  // Players, interpolated from the previous poll; named ones labelled.
  const a = Math.min(1, (now - state.polledAt) / POLL_MS);
  const pl = p.players;
  const r = Math.max(3, Math.min(7, 2.5 * s));
  const labels = [];
  ctx.beginPath();
  for (let i = 0; i < pl.slot.length; i++) {
    const from = state.previous.get(pl.slot[i]);
    const x = sx(from ? from[0] + (pl.x[i] - from[0]) * a : pl.x[i]);
    const y = sy(from ? from[1] + (pl.y[i] - from[1]) * a : pl.y[i]);
    ctx.moveTo(x + r, y);
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    const name = p.names[String(pl.slot[i])];
    if (name && labels.length < 200) labels.push([name, x, y, pl.score[i]]);
  }
  ctx.fillStyle = "#7cc4ff";
  ctx.fill();
  ctx.strokeStyle = "#0a111b";
  ctx.lineWidth = 1.5;
  ctx.stroke();
  ctx.font = "600 12px system-ui, sans-serif";
  ctx.textAlign = "center";
  ctx.lineJoin = "round";
  for (const [name, x, y, score] of labels) {
    const text = `${name} · ${score}`;
    ctx.strokeStyle = "rgba(5, 9, 15, 0.9)";
    ctx.lineWidth = 4;
    ctx.strokeText(text, x, y - r - 5);
    ctx.fillStyle = "#e6f3ff";
    ctx.fillText(text, x, y - r - 5);
  }
}

// ------------------------------------------------------------------ start

// An admin ticket (ticket mode) comes in the fragment, #ticket=..., which no request sends;
// the server takes it where it takes the admin token.
const fromUrl = new URLSearchParams(location.search).get("token") ||
  new URLSearchParams(location.hash.slice(1)).get("ticket");
state.token = fromUrl || sessionStorage.getItem(TOKEN_KEY);
if (fromUrl) {
  sessionStorage.setItem(TOKEN_KEY, fromUrl);
  // Keep the secret out of the address bar, the history and anything shared from it.
  const clean = new URL(location.href);
  clean.searchParams.delete("token");
  clean.hash = "";
  history.replaceState(null, "", clean);
}
let info = null;
try {
  info = await loadHunts();
} catch (err) {
  setStatus("error", `Cannot reach /api/info (${err.message})`);
}
if (info && info.watch === false) {
  askToken("This server has no admin token, so the watch view is off: start it with " +
    "--admin-token (or admin_token in [server]).");
} else if (state.token) {
  $("forget").hidden = false;
  poll();
} else {
  askToken();
}
requestAnimationFrame(frame);

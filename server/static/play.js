// The play page: join form, input (keys, click / touch to walk somewhere), the side panel
// (score, warmer / colder meter, leaderboard, discoveries) and the render loop. The protocol
// and the reconnects are hunt.js's; the drawing is play-render.js's; the rounds' clock and
// results screen are play-rounds.js's.
//
// Reloading the page resumes the same player (its resume token is kept in sessionStorage).
// `window.game` holds {client, view, rounds} for the console (and the browser tests).
//
// On a platform (docs/js-client.md, "Tickets"), the embedding page hands over its user's join
// ticket in the URL fragment (#ticket=...), by postMessage({type: "treasure-hunt:ticket",
// ticket}) to this window, or with window.huntPage.setTicket(ticket); the page then plays
// under the ticket's display name, and joins at once when the hunt is known (?hunt=, or the
// ticket's only hunt).

import { ErrorCode, connect, isValidName, ticketClaims } from "./hunt.js";
import { MapRenderer, hintColour } from "./play-render.js";
import { RoundPanel } from "./play-rounds.js";

const $ = (id) => document.getElementById(id);
const SESSION_KEY = "treasure-hunt.session";
const NAME_KEY = "treasure-hunt.name";
const TICKET_KEY = "treasure-hunt.ticket";
const TICKET_CODES = [ErrorCode.TICKET_REQUIRED, ErrorCode.TICKET_INVALID,
  ErrorCode.TICKET_EXPIRED, ErrorCode.TICKET_NOT_YET_VALID, ErrorCode.TICKET_FORBIDDEN];
const KEYS = {
  ArrowUp: [0, -1], KeyW: [0, -1], ArrowDown: [0, 1], KeyS: [0, 1],
  ArrowLeft: [-1, 0], KeyA: [-1, 0], ArrowRight: [1, 0], KeyD: [1, 0],
};
const ADJECTIVES = ["Swift", "Clever", "Quiet", "Lucky", "Bold", "Curious", "Brave", "Nimble"];
const ANIMALS = ["Fox", "Otter", "Heron", "Lynx", "Badger", "Falcon", "Hare", "Wren"];

const renderer = new MapRenderer($("map"));
const rounds = new RoundPanel();
const pressed = new Set();
let client = null;
let info = null;
let target = null;          // world point the player walks to, or null
let lastTickMs = 0;          // arrival time of the last TICK, for interpolation
let lastHint = 0;
let steered = false;         // the help line on the map shows until the player first moves
let boardShown = null;
const feed = [];             // {text, mine, at}
let ticket = "";             // the join ticket the embedding platform handed over ("" none)

function randomName() {
  const pick = (list) => list[Math.floor(Math.random() * list.length)];
  return `${pick(ADJECTIVES)} ${pick(ANIMALS)} ${Math.floor(Math.random() * 90) + 10}`;
}

function setStatus(state, text) {
  const el = $("status");
  el.dataset.state = state;
  el.textContent = text;
}

function wsUrl() {
  const host = location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname;
  return `${location.protocol === "https:" ? "wss" : "ws"}://${host}:${info.ws_port}/`;
}

// ------------------------------------------------------------------ join

async function loadInfo() {
  const select = $("hunt");
  try {
    const response = await fetch("/api/info", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    info = await response.json();
  } catch (err) {
    select.innerHTML = "<option value=''>No hunts</option>";
    $("join-error").textContent =
      `Cannot reach the server's /api/info (${err.message}). Is treasure-hunt serve running?`;
    return;
  }
  const wanted = new URLSearchParams(location.search).get("hunt");
  select.replaceChildren(...info.hunts.map((h) => {
    const option = new Option(`${h.name} — ${h.players} playing`, h.name);
    option.selected = h.name === wanted;
    return option;
  }));
  if (!info.hunts.length) $("join-error").textContent = "This server runs no hunt yet.";
}

function showJoin(message = "") {
  $("join").hidden = false;
  $("leave").hidden = true;
  $("join-error").textContent = message;
  $("name").focus();
}

// ------------------------------------------------------------------ the platform's ticket

/** The display name of the ticket, as a valid player name (the server names the player from
 * the ticket anyway; HELLO's name must only be valid). */
function ticketName() {
  const name = (ticketClaims(ticket)?.name ?? "").trim();
  const cut = new TextDecoder().decode(new TextEncoder().encode(name).slice(0, 32))
    .replace(/\uFFFD$/, "").trim();
  return isValidName(cut) ? cut : "Player";
}

/** Take a ticket from the platform: the name field shows its display name, locked. */
function useTicket(value) {
  ticket = typeof value === "string" ? value.trim() : "";
  if (ticket) sessionStorage.setItem(TICKET_KEY, ticket);
  else sessionStorage.removeItem(TICKET_KEY);
  $("name").readOnly = Boolean(ticket);
  if (ticket) $("name").value = ticketName();
  client?.setTicket(ticket);
}

function ticketFromFragment() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  const value = fragment.get("ticket");
  if (!value) return null;
  // A credential: out of the address bar, the history and anything shared from it.
  fragment.delete("ticket");
  const rest = fragment.toString();
  history.replaceState(null, "", location.pathname + location.search + (rest ? `#${rest}` : ""));
  return value;
}

window.addEventListener("message", (event) => {
  const data = event.data;
  if (data?.type === "treasure-hunt:ticket" && typeof data.ticket === "string") {
    useTicket(data.ticket);
  }
});
window.huntPage = { setTicket: useTicket };

function join(name, hunt, resumeToken = null) {
  if (client) client.close();
  $("join").hidden = true;
  $("leave").hidden = false;
  $("who").textContent = name;
  if (!ticket) localStorage.setItem(NAME_KEY, name);
  feed.length = 0;
  renderFeed();
  boardShown = null;
  target = null;
  rounds.reset();
  client = connect(wsUrl(), { name, hunt, resumeToken, ticket });
  window.game = { client, view: client.view, rounds };
  client.on("status", (state, detail) => {
    if (state === "connecting") setStatus(state, `Joining ${hunt}…`);
    else if (state === "playing") setStatus(state, `Playing in ${hunt}`);
    else if (state === "reconnecting") {
      setStatus(state, detail.delayMs > 0
        ? `Connection lost, reconnecting in ${(detail.delayMs / 1000).toFixed(1)} s…`
        : "Reconnecting…");
    } else if (state === "closed" && $("status").dataset.state !== "error") {
      setStatus(state, "Disconnected");  // an error said more (another tab took over)
    }
  });
  client.on("welcome", (welcome) => {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify({ name, hunt, token: client.resumeToken }));
    $("meter").setAttribute("aria-valuemax", String(welcome.hintLevels));
    if (welcome.resumed) pushFeed("Reconnected: welcome back!", false);
    $("map").focus();
  });
  client.on("tick", onTick);
  client.on("round", (round) => {
    rounds.onRound(round);
    rounds.update(client.view, lastTickMs);  // label and clock now, not at the next frame
  });
  client.on("results", (results, view) => rounds.onResults(results, view, name));
  client.on("error", (err) => {
    if (err.code === ErrorCode.RESUME_INVALID) {
      sessionStorage.removeItem(SESSION_KEY);
      pushFeed("Your previous player expired; you join as a new one.", false);
    } else if (err.fatal && client.state !== "playing" && [ErrorCode.BAD_NAME,
      ErrorCode.UNKNOWN_HUNT, ErrorCode.HUNT_FULL, ErrorCode.BAD_VERSION].includes(err.code)) {
      sessionStorage.removeItem(SESSION_KEY);
      showJoin(err.message);
    } else if (TICKET_CODES.includes(err.code)) {
      sessionStorage.removeItem(SESSION_KEY);
      showJoin(`The platform's ticket was refused: ${err.message}`);
    } else if (err.code === ErrorCode.REPLACED) {
      setStatus("error", "Playing in another tab");
    } else if (!err.fatal && err.code !== ErrorCode.RATE_LIMITED) {
      console.warn("server warning:", err.message);
    }
  });
}

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("name").value.trim();
  const hunt = $("hunt").value;
  if (!name) return showJoin("Choose a name first.");
  if (!isValidName(name)) {
    return showJoin("A name is up to 32 bytes of letters, digits, punctuation and spaces.");
  }
  if (!hunt || !info) return showJoin("No hunt to join: is the server running?");
  join(name, hunt);
});

$("leave").addEventListener("click", () => {
  sessionStorage.removeItem(SESSION_KEY);
  client?.leave();
  client = null;
  rounds.reset();
  setStatus("idle", "Not connected");
  showJoin();
});

// ------------------------------------------------------------------ ticks -> side panel

function onTick(tick, view) {
  lastTickMs = performance.now();
  $("score").textContent = String(tick.score);
  renderHint(tick.hint, view.params.hintLevels, view.params.hintRadius);
  for (const d of tick.discoveries) {
    const mine = view.isMe(d.slot, d.gen);
    const who = mine ? "You" : view.nameOf(d.slot, d.gen) ?? `Player #${d.slot}`;
    pushFeed(`${who} found a treasure worth ${d.value}`, mine);
    renderer.burst(d.x, d.y, d.value, mine);
  }
  if (view.leaderboard !== boardShown || tick.discoveries.length) renderBoard(view);
}

function hintWords(level, levels) {
  if (level === 0) return "Cold";
  if (level === levels) return "Burning hot! It is right here";
  return ["Warm", "Warmer", "Hot", "Very hot"][Math.floor(((level - 1) / Math.max(1, levels - 1)) * 4)];
}

function renderHint(level, levels, radius) {
  const meter = $("meter");
  if (meter.children.length !== levels) {
    meter.replaceChildren(...Array.from({ length: levels }, () => document.createElement("span")));
  }
  [...meter.children].forEach((seg, i) => {
    seg.style.background = i < level ? hintColour(i + 1, levels) : "";
  });
  meter.setAttribute("aria-valuenow", String(level));
  $("hint-text").textContent = hintWords(level, levels);
  $("hint-text").style.color = level ? hintColour(level, levels) : "";
  const trend = $("hint-trend");
  if (level > lastHint) {
    trend.dataset.trend = "warmer";
    trend.textContent = "▲ Warmer: keep going this way";
  } else if (level < lastHint) {
    trend.dataset.trend = "colder";
    trend.textContent = "▼ Colder: turn around";
  } else if (level === 0) {
    trend.dataset.trend = "";
    trend.textContent = `No treasure within ${Math.round(radius)} units: explore.`;
  }
  lastHint = level;
}

function renderBoard(view) {
  boardShown = view.leaderboard;
  const rows = view.leaderboard.map((r, i) => {
    const li = document.createElement("li");
    const mine = view.isMe(r.slot, r.gen);
    li.className = mine ? "me" : "";
    const name = mine ? `${client.name} (you)` : view.nameOf(r.slot, r.gen) ?? `Player #${r.slot}`;
    li.innerHTML = "<span class='rank'></span><span class='name'></span><span class='pts'></span>";
    li.children[0].textContent = `${i + 1}.`;
    li.children[1].textContent = name;
    li.children[2].textContent = String(r.score);
    return li;
  });
  if (!rows.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "Nobody has scored yet.";
    rows.push(li);
  }
  $("board").replaceChildren(...rows);
}

function pushFeed(text, mine) {
  feed.unshift({ text, mine, at: Date.now() });
  feed.length = Math.min(feed.length, 12);
  renderFeed();
}

function renderFeed() {
  if (!feed.length) {
    $("feed").innerHTML = "<li class='empty'>No treasure found yet.</li>";
    return;
  }
  $("feed").replaceChildren(...feed.map((item) => {
    const li = document.createElement("li");
    li.className = item.mine ? "mine" : "";
    const seconds = Math.round((Date.now() - item.at) / 1000);
    li.textContent = `${item.text} `;
    const ago = document.createElement("span");
    ago.className = "ago";
    ago.textContent = seconds < 2 ? "just now" : `${seconds} s ago`;
    li.append(ago);
    return li;
  }));
}

// ------------------------------------------------------------------ input

function keyDirection() {
  let dx = 0;
  let dy = 0;
  for (const code of pressed) {
    dx += KEYS[code][0];
    dy += KEYS[code][1];
  }
  return [Math.sign(dx), Math.sign(dy)];
}

function typing(event) {
  return event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement;
}

window.addEventListener("keydown", (event) => {
  if (!client || typing(event)) return;
  if (event.code === "Space") {
    target = null;
    pressed.clear();
    client.move(0, 0);
    event.preventDefault();
    return;
  }
  if (!(event.code in KEYS)) return;
  event.preventDefault();  // arrows would scroll the page
  pressed.add(event.code);
  target = null;
  steered = true;
  client.move(...keyDirection());
});

window.addEventListener("keyup", (event) => {
  if (!client || !(event.code in KEYS)) return;
  pressed.delete(event.code);
  if (!target) client.move(...keyDirection());
});

window.addEventListener("blur", () => {
  // A key released while the page had no focus never sends keyup: stop rather than run away.
  if (pressed.size && client) client.move(0, 0);
  pressed.clear();
});

$("map").addEventListener("pointerdown", (event) => {
  if (!client?.view.me) return;
  $("map").setPointerCapture(event.pointerId);
  target = renderer.toWorld(event.clientX, event.clientY);
  steered = true;
  event.preventDefault();
});
$("map").addEventListener("pointermove", (event) => {
  if (client && event.buttons && $("map").hasPointerCapture(event.pointerId)) {
    target = renderer.toWorld(event.clientX, event.clientY);
  }
});

/** Steer toward the target: a direction quantised to 2° so that small wobbles send nothing. */
function steer() {
  if (!target || !client?.view.me || client.state !== "playing") return;
  const me = client.view.me;
  const p = client.view.params;
  const dx = target[0] - me.x;
  const dy = target[1] - me.y;
  const distance = Math.hypot(dx, dy);
  if (distance <= p.playerSpeed / p.tickRate) {
    target = null;
    client.move(0, 0);
    return;
  }
  const step = Math.PI / 90;
  const angle = Math.round(Math.atan2(dy, dx) / step) * step;
  client.move(Math.cos(angle), Math.sin(angle));
}

// ------------------------------------------------------------------ the loop

function frame() {
  steer();
  const view = client?.view;
  let alpha = 1;
  if (view?.params) alpha = (performance.now() - lastTickMs) / (1000 / view.params.tickRate);
  const help = steered ? null : matchMedia("(pointer: coarse)").matches
    ? "Touch the map to walk there" : "Move with W A S D or the arrows, or click the map";
  if (view) renderer.draw(view, alpha, target, client.name, help);
  else renderer.fit();
  rounds.update(view, lastTickMs);
  requestAnimationFrame(frame);
}

setInterval(() => {
  if (feed.length) renderFeed();
}, 1000);

// ------------------------------------------------------------------ start

$("name").value = localStorage.getItem(NAME_KEY) || randomName();
useTicket(ticketFromFragment() ?? sessionStorage.getItem(TICKET_KEY) ?? "");
await loadInfo();
const saved = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
const ticketHunts = ticketClaims(ticket)?.hunts ?? [];
const wantedHunt = new URLSearchParams(location.search).get("hunt") ??
  (ticketHunts.length === 1 ? ticketHunts[0] : null);
if (saved && info?.hunts.some((h) => h.name === saved.hunt)) {
  join(saved.name, saved.hunt, saved.token);  // a reload: take the same player back
} else if (ticket && info?.hunts.some((h) => h.name === wantedHunt)) {
  join(ticketName(), wantedHunt);  // sent by the platform to this hunt: play at once
} else {
  showJoin($("join-error").textContent);
}
requestAnimationFrame(frame);

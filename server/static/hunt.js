// The treasure-hunt JavaScript client: one ES module, no framework, no build step.
//
//   import { connect } from "/static/hunt.js";
//   const game = connect("ws://127.0.0.1:8765/", { name: "Ada", hunt: "demo" });
//   game.on("tick", (tick, view) => draw(view));
//   game.move(1, 0);                                  // full speed toward +x
//
// It speaks docs/protocol.md (codec in hunt-protocol.js), keeps the view of the hunt
// (hunt-view.js), and survives dropped connections: it reconnects by itself with the resume
// token, after an exponential backoff with jitter, and resumes when it notices a lost TICK.
// Scale-out: it follows a REDIRECT to the node that owns the hunt (at most 3 per attempt) and
// always reconnects through the URL it was given (the entry URL), which knows the owner.
// On a platform, the page gets a join ticket for its user (docs/server.md, "Authentication"):
// `connect(url, {name, hunt, ticket})`, or `client.setTicket(t)` when a new one comes.
// Documented for game developers in docs/js-client.md.

import {
  ErrorCode, ProtocolError, decodeServerFrame, encodeBye, encodeHello, encodeMoves, toHex,
} from "./hunt-protocol.js";
import { TickDecoder } from "./hunt-compact.js";
import { HuntView } from "./hunt-view.js";

export * from "./hunt-protocol.js";
export { TickDecoder } from "./hunt-compact.js";
export { HuntView, lerpPosition } from "./hunt-view.js";

/** Refusals a retry cannot fix: the page must change something (name, hunt) first. */
const FINAL_CODES = new Set([
  ErrorCode.HUNT_FULL, ErrorCode.UNKNOWN_HUNT, ErrorCode.BAD_VERSION, ErrorCode.BAD_NAME,
  ErrorCode.REPLACED, ErrorCode.ADDRESS_FULL, ErrorCode.TICKET_REQUIRED,
  ErrorCode.TICKET_INVALID, ErrorCode.TICKET_EXPIRED, ErrorCode.TICKET_FORBIDDEN,
]);
/** Refusals of the ticket: `setTicket` with a new one tries again. */
const TICKET_CODES = new Set([
  ErrorCode.TICKET_REQUIRED, ErrorCode.TICKET_INVALID, ErrorCode.TICKET_EXPIRED,
  ErrorCode.TICKET_NOT_YET_VALID, ErrorCode.TICKET_FORBIDDEN,
]);

/**
 * What a join ticket (a JWT) says, read without checking its signature: for showing the
 * display name before joining; only the server decides. Returns {user, name, expires (Unix
 * seconds), hunts (array or null), role}, or null when `ticket` is not a readable JWT.
 */
export function ticketClaims(ticket) {
  try {
    const part = String(ticket).split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    const claims = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof claims !== "object" || claims === null) return null;
    return { user: claims.sub ?? null, name: typeof claims.name === "string" ? claims.name : null,
             expires: claims.exp ?? null, hunts: Array.isArray(claims.hunts) ? claims.hunts : null,
             role: claims.role ?? "player" };
  } catch {
    return null;
  }
}

const DEFAULTS = {
  resumeToken: null,
  // The join ticket a platform signed for its user ("" none): sent when joining; a resume
  // goes by its token (a ticket admits once, it may have expired since).
  ticket: "",
  reconnect: true,
  maxRedirects: 3,
  backoffInitialMs: 250,
  backoffMaxMs: 8000,
  // No message for this long while playing: the connection is dead even if the socket does
  // not know it yet (a phone that lost its network); close it and resume.
  stallTimeoutMs: 4000,
  // Nothing sent for this long while playing (a player standing still): the current move is
  // sent again with the next seq. Browsers cannot send WebSocket pings, and the server closes
  // a connection that sent no frame for its idle_timeout (docs/protocol.md, message flow 9).
  keepAliveMs: 60000,
  WebSocket: globalThis.WebSocket,
};

/**
 * Open a connection and join `hunt` as `name` (or resume with `resumeToken`). Returns a
 * HuntClient at once; it connects in the background and emits events (see HuntClient.on).
 */
export function connect(url, options) {
  return new HuntClient(url, options);
}

export class HuntClient {
  constructor(url, options = {}) {
    /** The URL given (every attempt starts there), and the node of the current connection. */
    this.entryUrl = url;
    this.url = url;
    /** The REDIRECT URLs followed in the current attempt, in order. */
    this.redirects = [];
    this.options = { ...DEFAULTS, ...options };
    this.name = this.options.name;
    this.hunt = this.options.hunt;
    /** The join ticket ("" none); `setTicket` replaces it. */
    this.ticket = this.options.ticket ?? "";
    this._ticketRefused = false;
    /** The resume token of the current player, 32 hex digits (null before the first WELCOME). */
    this.resumeToken = typeof this.options.resumeToken === "string"
      ? this.options.resumeToken.toLowerCase()
      : this.options.resumeToken ? toHex(this.options.resumeToken) : null;
    /** The hunt as this client knows it (players in view, names, leaderboard, own state). */
    this.view = new HuntView();
    /** Round-based hunts: the last ROUND and RESULTS received (null until then). */
    this.round = null;
    this.results = null;
    /** "connecting", "playing", "reconnecting" or "closed". */
    this.state = "connecting";
    /** The last move sequence number sent (moves go on from the WELCOME's ack + 1). */
    this.seq = 0;
    /** Connections opened so far, and WELCOMEs with `resumed` received. */
    this.connections = 0;
    this.resumes = 0;
    this._attempts = 0;
    this._handlers = new Map();
    this._direction = [0, 0];
    this._sentDirection = null;
    this._lastSendMs = -Infinity;
    this._flushTimer = null;
    this._retryTimer = null;
    this._attempt = 0;
    this._final = false;
    this._ws = null;
    /** The TickDecoder of the open connection (from its WELCOME). */
    this._ticks = null;
    this._lastMessageMs = 0;
    this._watchdog = setInterval(() => this._checkStall(), 500);
    // The browser knows when the network comes back: retry then, not at the end of a backoff.
    this._onOnline = () => {
      if (this.state === "reconnecting" && this._retryTimer !== null) this._open();
    };
    globalThis.addEventListener?.("online", this._onOnline);
    this._open();
  }

  /**
   * Listen to an event; returns a function that removes the listener. Events:
   * - "welcome" (welcome, view): joined or resumed (`welcome.resumed`); world size, radii...
   * - "tick" (tick, view): a TICK was applied to `view`; draw from `view`.
   * - "error" ({code, closeCode, message, fatal}): a REFUSED or ERROR from the server, or a
   *   protocol error found here. Not fatal (`closeCode` 0) errors are warnings.
   * - "status" (state, detail): "connecting", "playing", "reconnecting" (detail.delayMs)
   *   or "closed" (detail.code, detail.reason); while following a REDIRECT, "connecting" or
   *   "reconnecting" with detail.redirect ({url, hunt, node, count}).
   * - "redirect" ({url, hunt, node, count}): another node owns the hunt; going there.
   * - "round" (round, view): round-based hunts: the phase and its times, after WELCOME and at
   *   each change (also kept as `client.round`); time left = round.phaseEnd - view.tick ticks.
   * - "results" (results, view): a round's final standings (also kept as `client.results`).
   */
  on(type, handler) {
    if (!this._handlers.has(type)) this._handlers.set(type, new Set());
    this._handlers.get(type).add(handler);
    return () => this._handlers.get(type).delete(handler);
  }

  _emit(type, ...args) {
    for (const handler of this._handlers.get(type) ?? []) {
      try {
        handler(...args);
      } catch (err) {
        console.error(`hunt.js: a "${type}" handler failed`, err);
      }
    }
  }

  _setState(state, detail = {}) {
    this.state = state;
    this._emit("status", state, detail);
  }

  /**
   * Steer: a direction (unitless; the server scales one longer than 1 down to 1, so (1, 1) is
   * a full-speed diagonal; (0, 0) stops). Kept until the next call, and sent again after a
   * resume. Calls are coalesced to at most two MOVES frames per tick.
   */
  move(dx, dy) {
    if (!Number.isFinite(dx) || !Number.isFinite(dy)) {
      throw new ProtocolError(`move(dx, dy) takes finite numbers, got (${dx}, ${dy})`,
        ErrorCode.INVALID_VALUE, false);
    }
    this._direction = [Math.fround(dx), Math.fround(dy)];
    this._flush();
  }

  _flush() {
    if (this.state !== "playing" || this._flushTimer !== null) return;
    const [dx, dy] = this._direction;
    const sent = this._sentDirection;
    if (sent && sent[0] === dx && sent[1] === dy) return;
    const intervalMs = 500 / (this.view.params?.tickRate ?? 20);
    const wait = this._lastSendMs + intervalMs - performance.now();
    if (wait > 0) {
      this._flushTimer = setTimeout(() => {
        this._flushTimer = null;
        this._flush();
      }, wait);
      return;
    }
    this.seq += 1;
    this._send(encodeMoves([{ seq: this.seq, dx, dy }]));
    this._sentDirection = [dx, dy];
    this._lastSendMs = performance.now();
  }

  /**
   * A new join ticket from the host page (the last one expired, or was refused): kept for the
   * next join, and tried at once if a ticket refusal had stopped this client.
   */
  setTicket(ticket) {
    this.ticket = ticket ?? "";
    if (this._ticketRefused && this.state === "closed") {
      this._ticketRefused = false;
      this._final = false;
      this._attempt = 0;
      this._watchdog = setInterval(() => this._checkStall(), 500);  // close() stopped them
      globalThis.addEventListener?.("online", this._onOnline);
      this._open();
    }
  }

  /** Leave the hunt for good: BYE (the resume token dies), then close. */
  leave() {
    this._send(encodeBye());
    this.resumeToken = null;
    this.close(1000, "bye");
  }

  /**
   * Close without BYE and stop reconnecting: the server keeps the player for its resume grace
   * period, so a later connect() with `resumeToken` takes it back.
   */
  close(code = 1000, reason = "client closed") {
    this._final = true;
    clearInterval(this._watchdog);
    globalThis.removeEventListener?.("online", this._onOnline);
    clearTimeout(this._retryTimer);
    clearTimeout(this._flushTimer);
    this._flushTimer = null;
    const ws = this._ws;
    this._ws = null;
    if (ws && ws.readyState <= 1) ws.close(code, reason);
    if (this.state !== "closed") this._setState("closed", { code, reason });
  }

  /**
   * Drop the connection as a network failure would (no BYE); the client then resumes by
   * itself. For tests and for a page's "reconnect now" button.
   */
  dropConnection(reason = "dropped by the client") {
    if (this._ws && this._ws.readyState <= 1) this._ws.close(4000, reason);
  }

  _send(frame) {
    const ws = this._ws;
    if (ws && ws.readyState === 1) ws.send(frame);
  }

  /** Open a connection: a new attempt from the entry URL, or one hop of a `redirect`. */
  _open(redirect = null) {
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this.connections += 1;
    this._sentDirection = null;
    if (redirect === null) {
      this._attempts += 1;
      this.url = this.entryUrl;
      this.redirects = [];
    } else {
      this.url = redirect.url;
    }
    this._setState(this._attempts === 1 ? "connecting" : "reconnecting",
      redirect === null ? { delayMs: 0 } : { delayMs: 0, redirect });
    let ws;
    try {
      ws = new this.options.WebSocket(this.url);
    } catch (err) {
      this._emit("error", { code: 0, closeCode: 0, message: String(err), fatal: true });
      this._final = true;
      this._setState("closed", { code: 0, reason: String(err) });
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    this._ticks = null;  // until this connection's WELCOME
    this._lastMessageMs = performance.now();
    ws.onopen = () => {
      let hello;
      try {
        hello = encodeHello({ name: this.name, hunt: this.hunt, resumeToken: this.resumeToken,
                              ticket: this.resumeToken ? "" : this.ticket });
      } catch (err) {
        if (err.code !== ErrorCode.RESUME_INVALID) {
          this._fail(ws, err);
          return;
        }
        this.resumeToken = null;  // a mangled stored token: join as a new player instead
        hello = encodeHello({ name: this.name, hunt: this.hunt, ticket: this.ticket });
      }
      ws.send(hello);
    };
    ws.onmessage = (event) => this._receive(ws, event.data);
    ws.onclose = (event) => this._closed(ws, event.code, event.reason);
  }

  _fail(ws, err) {
    const closeCode = err.closeCode ?? 1011;
    this._emit("error", { code: err.code ?? ErrorCode.INTERNAL, closeCode, message: err.message,
      fatal: true });
    if (err.remote === false) this._final = true;  // our own input is invalid: retrying won't help
    // Browsers may send only 1000 or 3000-4999 themselves.
    ws.close(closeCode >= 3000 ? closeCode : 1000, err.message.slice(0, 100));
  }

  _receive(ws, data) {
    if (ws !== this._ws) return;
    this._lastMessageMs = performance.now();
    if (typeof data === "string") {
      this._fail(ws, new ProtocolError("the server sends binary frames only",
        ErrorCode.UNKNOWN_TYPE));
      return;
    }
    let msg;
    try {
      msg = decodeServerFrame(data, this._ticks);
    } catch (err) {
      this._fail(ws, err);
      return;
    }
    if (msg.type === "tick") {
      if (!this.view.apply(msg)) {
        // A lost message: this view is stale. Resume at once; the server sends a keyframe.
        this._attempt = 0;
        ws.close(4000, `lost a tick before ${msg.tick}; resuming`);
        return;
      }
      this._attempt = 0;  // a working connection: the next failure starts a fresh backoff
      this._emit("tick", msg, this.view);
    } else if (msg.type === "welcome") {
      this._ticks = new TickDecoder(msg);  // this connection's TICKs are of msg.version
      this.resumeToken = toHex(msg.resumeToken);
      if (msg.resumed) this.resumes += 1;
      this.seq = Math.max(this.seq, msg.ack);
      this.view.welcome(msg);
      this._setState("playing");
      this._emit("welcome", msg, this.view);
      this._flush();  // the current direction again, so a resumed player keeps its course
    } else if (msg.type === "redirect") {
      this._redirect(ws, msg);
    } else if (msg.type === "round") {
      this.round = msg;
      this._emit("round", msg, this.view);
    } else if (msg.type === "results") {
      this.results = msg;
      this._emit("results", msg, this.view);
    } else {
      const fatal = msg.type === "refused" || msg.closeCode !== 0;
      if (msg.code === ErrorCode.RESUME_INVALID) this.resumeToken = null;  // join afresh
      if (FINAL_CODES.has(msg.code)) this._final = true;
      if (TICKET_CODES.has(msg.code)) this._ticketRefused = true;
      this._emit("error", { ...msg, fatal });
    }
  }

  _redirect(ws, msg) {
    if (msg.hunt !== this.hunt) {
      this._fail(ws, new ProtocolError(`a REDIRECT for hunt ${JSON.stringify(msg.hunt)} ` +
        `answered a HELLO for ${JSON.stringify(this.hunt)}`, ErrorCode.UNEXPECTED));
      return;
    }
    if (this.redirects.length >= this.options.maxRedirects) {
      // The nodes disagree about the owner (a takeover under way): give this attempt up; the
      // backoff retries from the entry URL.
      const chain = [this.entryUrl, ...this.redirects, msg.url].join(" -> ");
      this._emit("error", { code: 0, closeCode: 0, fatal: true,
        message: `more than ${this.options.maxRedirects} redirects: ${chain}` });
      ws.close(1000, "too many redirects");
      return;
    }
    this.redirects.push(msg.url);
    const detail = { url: msg.url, hunt: msg.hunt, node: msg.node, count: this.redirects.length };
    this._emit("redirect", detail);
    // The server closes this one with 4010; nothing more is expected from it.
    ws.onmessage = ws.onclose = null;
    this._ws = null;
    if (ws.readyState <= 1) ws.close(1000, "redirected");
    this._open(detail);
  }

  _closed(ws, code, reason) {
    if (ws !== this._ws) return;
    this._ws = null;
    clearTimeout(this._flushTimer);
    this._flushTimer = null;
    if (this._final || !this.options.reconnect) {
      this.close(code, reason);
      return;
    }
    // A lost tick (4000 from us) or a hunt that moved (4011: the entry URL knows its new
    // owner) resumes at once; anything else (a failed hunt, 4014, restarts after a backoff
    // of the server's) backs off, with "equal jitter" so that clients dropped together do
    // not come back together.
    const ceiling = Math.min(this.options.backoffMaxMs,
      this.options.backoffInitialMs * 2 ** this._attempt);
    const now = code === 4000 || code === ErrorCode.HUNT_MOVED;
    const delayMs = now && this._attempt === 0 ? 0
      : Math.round(ceiling / 2 + Math.random() * ceiling / 2);
    this._attempt += 1;
    this._setState("reconnecting", { delayMs, code, reason });
    this._retryTimer = setTimeout(() => this._open(), delayMs);
  }

  _checkStall() {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1 || this.state !== "playing") return;
    const now = performance.now();
    if (now - this._lastMessageMs > this.options.stallTimeoutMs) {
      ws.close(4000, "no message from the server; resuming");
      // A dead network may never deliver the close handshake: stop waiting for it.
      this._closed(ws, 4000, "stalled");
    } else if (now - this._lastSendMs > this.options.keepAliveMs && this._flushTimer === null) {
      this._sentDirection = null;  // the same direction again: a keep-alive the tick ignores
      this._flush();
    }
  }
}

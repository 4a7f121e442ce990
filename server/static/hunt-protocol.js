// The treasure-hunt wire protocol, versions 1 and 2 (docs/protocol.md), for browsers: pure
// functions on bytes, no socket (version 2's stateful TICK decoder is in hunt-compact.js). Encoders for what a client sends (HELLO, MOVES, BYE), one decoder for
// what the server sends (WELCOME, REFUSED, REDIRECT, ERROR, TICK, ROUND, RESULTS). Held byte for byte to
// tests/protocol_vectors.json by tests/test_browser_protocol.py, like the Python implementation.
//
// Numbers: 64-bit fields (tick, ack, score, seq, value) are JavaScript Numbers, exact up to
// 2^53 (a tick counter at 20 Hz reaches that after 14 million years); the player id is a
// BigInt, with its slot and generation as Numbers. Positions are in world units.

/** The version this client speaks (2: compact TICKs); a server also speaks 1. */
export const PROTOCOL_VERSION = 2;

export const MessageType = Object.freeze({
  HELLO: 0x01, MOVES: 0x02, BYE: 0x03, WELCOME: 0x81, REFUSED: 0x82, TICK: 0x83, ERROR: 0x84,
  REDIRECT: 0x85, ROUND: 0x86, RESULTS: 0x87,
});

/** Round phases as ROUND carries them (docs/protocol.md, "Rounds"). */
export const PHASES = Object.freeze({ 1: "lobby", 2: "running", 3: "results", 4: "over" });

export const ErrorCode = Object.freeze({
  MALFORMED: 1, UNKNOWN_TYPE: 2, UNEXPECTED: 3, INVALID_VALUE: 4, TOO_BIG: 5,
  HANDSHAKE_TIMEOUT: 6, RATE_LIMITED: 7, GOING_AWAY: 8, INTERNAL: 9, OVER_BUDGET: 10,
  HUNT_FULL: 4001, UNKNOWN_HUNT: 4002, BAD_VERSION: 4003, BAD_NAME: 4004,
  RESUME_INVALID: 4005, SERVER_FULL: 4006, REPLACED: 4007, TOO_SLOW: 4008, HUNT_MOVED: 4011,
  TOO_MANY_JOINS: 4012, ADDRESS_FULL: 4013, HUNT_FAILED: 4014,
  TICKET_REQUIRED: 4015, TICKET_INVALID: 4016, TICKET_EXPIRED: 4017, TICKET_NOT_YET_VALID: 4018,
  TICKET_FORBIDDEN: 4019,
});

/** The WebSocket close code that goes with each error code (0: a warning, not fatal). */
export const CLOSE_CODES = Object.freeze({
  1: 1002, 2: 1002, 3: 1008, 4: 1008, 5: 1009, 6: 1008, 7: 0, 8: 1001, 9: 1011, 10: 1008,
  4001: 4001, 4002: 4002, 4003: 4003, 4004: 4004, 4005: 4005, 4006: 4006, 4007: 4007,
  4008: 4008, 4011: 4011, 4012: 4012, 4013: 4013, 4014: 4014, 4015: 4015, 4016: 4016,
  4017: 4017, 4018: 4018, 4019: 4019,
});

/** The close code after a REDIRECT (scale-out): not an error, go to the REDIRECT's url. */
export const CLOSE_REDIRECT = 4010;

export const MAX_NAME_BYTES = 32;
export const MAX_HUNT_BYTES = 256;
/** Bytes of a HELLO's join ticket (visible ASCII, 0x21-0x7e). */
export const MAX_TICKET_BYTES = 716;
export const MAX_MESSAGE_BYTES = 256;
export const MAX_URL_BYTES = 256;
export const MAX_NODE_BYTES = 64;
export const MAX_MOVES_PER_FRAME = 64;
export const MAX_HINT_LEVEL = 15;
export const MAX_SERVER_FRAME_BYTES = 1 << 24;
export const MAX_SEQ = (1n << 63n) - 1n;
/** Largest seq a client sends: the seqs above are the server's (its stop moves). */
export const MAX_CLIENT_SEQ = (1n << 62n) - 1n;
export const TICK_HEADER_BYTES = 64;
const RECORD = { visible: 16, discovery: 48, leader: 16, leave: 8, nameHeader: 9, result: 32 };

/**
 * A frame the protocol forbids. `code` is an ErrorCode, `closeCode` the WebSocket close code
 * that goes with it; `remote` is true when the server sent it (decoding), false when this side
 * was asked to encode something invalid.
 */
export class ProtocolError extends Error {
  constructor(message, code, remote = true, closeCode = CLOSE_CODES[code] ?? 1011) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
    this.closeCode = closeCode;
    this.remote = remote;
  }
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });
// Python's str.isprintable(): no control, format, surrogate, private-use, unassigned or
// separator characters, except the plain space.
const NOT_PRINTABLE = /(?! )[\p{C}\p{Z}]/u;

/** Whether `text` is a valid player (or hunt) name: 1..maxBytes bytes, printable, no outer spaces. */
export function isValidName(text, maxBytes = MAX_NAME_BYTES) {
  if (typeof text !== "string" || NOT_PRINTABLE.test(text) || text !== text.trim()) return false;
  const size = utf8Encoder.encode(text).length;
  return size >= 1 && size <= maxBytes;
}

function tokenBytes(token) {
  if (token == null) return null;
  const bytes = typeof token === "string"
    ? Uint8Array.from(token.match(/../g) ?? [], (h) => parseInt(h, 16)) : new Uint8Array(token);
  if (bytes.length !== 16 || (typeof token === "string" && !/^[0-9a-fA-F]{32}$/.test(token))) {
    throw new ProtocolError("a resume token is 16 bytes (or 32 hex digits)",
      ErrorCode.RESUME_INVALID, false);
  }
  return bytes;
}

/** Hex of bytes, lowercase (resume tokens travel like that in storage and in the vectors). */
export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * HELLO: join `hunt` as `name`, or with `resumeToken` (16 bytes or 32 hex digits) take back
 * the player of an earlier WELCOME; `ticket` is the join ticket a platform signed ("" none).
 * Returns a Uint8Array; throws ProtocolError (BAD_NAME, UNKNOWN_HUNT, RESUME_INVALID,
 * TICKET_INVALID) for invalid fields.
 */
export function encodeHello({ name, hunt, version = PROTOCOL_VERSION, resumeToken = null,
                              ticket = "" }) {
  if (!isValidName(name)) {
    throw new ProtocolError(`a player name is 1-${MAX_NAME_BYTES} bytes of printable UTF-8 ` +
      `without outer spaces, got ${JSON.stringify(name)}`, ErrorCode.BAD_NAME, false);
  }
  if (!isValidName(hunt, MAX_HUNT_BYTES)) {
    throw new ProtocolError(`a hunt name is 1-${MAX_HUNT_BYTES} bytes of printable UTF-8 ` +
      `without outer spaces, got ${JSON.stringify(hunt)}`, ErrorCode.UNKNOWN_HUNT, false);
  }
  if (!Number.isInteger(version) || version < 0 || version > 255) {
    throw new ProtocolError(`version must be 0-255, got ${version}`, ErrorCode.BAD_VERSION, false);
  }
  if (typeof ticket !== "string" || ticket.length > MAX_TICKET_BYTES || /[^!-~]/.test(ticket)) {
    throw new ProtocolError(`a ticket is at most ${MAX_TICKET_BYTES} characters of visible ` +
      "ASCII", ErrorCode.TICKET_INVALID, false);
  }
  const token = tokenBytes(resumeToken);
  const nameBytes = utf8Encoder.encode(name);
  const huntBytes = utf8Encoder.encode(hunt);
  const ticketBytes = utf8Encoder.encode(ticket);
  const frame = new Uint8Array(24 + nameBytes.length + huntBytes.length + ticketBytes.length);
  const view = new DataView(frame.buffer);
  view.setUint8(0, MessageType.HELLO);
  view.setUint8(1, version);
  view.setUint8(2, token ? 1 : 0);
  view.setUint8(3, nameBytes.length);
  view.setUint16(4, huntBytes.length, true);
  view.setUint16(6, ticketBytes.length, true);
  if (token) frame.set(token, 8);
  frame.set(nameBytes, 24);
  frame.set(huntBytes, 24 + nameBytes.length);
  frame.set(ticketBytes, 24 + nameBytes.length + huntBytes.length);
  return frame;
}

/**
 * MOVES: 1..64 moves `{seq, dx, dy}` (seq a positive integer, Number or BigInt; dx, dy finite
 * numbers, sent as float32; a direction longer than 1 is scaled down to 1 by the server).
 */
export function encodeMoves(moves) {
  if (!Array.isArray(moves) || moves.length < 1 || moves.length > MAX_MOVES_PER_FRAME) {
    const count = Array.isArray(moves) ? moves.length : 0;
    throw new ProtocolError(`MOVES carries 1-${MAX_MOVES_PER_FRAME} moves, got ${count}`,
      count > MAX_MOVES_PER_FRAME ? ErrorCode.TOO_BIG : ErrorCode.INVALID_VALUE, false);
  }
  const frame = new Uint8Array(4 + 16 * moves.length);
  const view = new DataView(frame.buffer);
  view.setUint8(0, MessageType.MOVES);
  view.setUint16(2, moves.length, true);
  moves.forEach(({ seq, dx, dy }, i) => {
    const big = typeof seq === "bigint" ? seq : Number.isInteger(seq) ? BigInt(seq) : 0n;
    if (big < 1n || big > MAX_CLIENT_SEQ) {
      throw new ProtocolError(`seq must be an integer in [1, 2^62 - 1], got ${seq}`,
        ErrorCode.INVALID_VALUE, false);
    }
    const f32 = [Math.fround(dx), Math.fround(dy)];
    if (typeof dx !== "number" || typeof dy !== "number" || !f32.every(Number.isFinite)) {
      throw new ProtocolError(`a direction is two finite float32 numbers, got (${dx}, ${dy})`,
        ErrorCode.INVALID_VALUE, false);
    }
    view.setBigUint64(4 + 16 * i, big, true);
    view.setFloat32(12 + 16 * i, f32[0], true);
    view.setFloat32(16 + 16 * i, f32[1], true);
  });
  return frame;
}

/** BYE: leave the hunt for good (the resume token dies). */
export function encodeBye() {
  return Uint8Array.of(MessageType.BYE);
}

// ------------------------------------------------------------------ decoding

function malformed(message) {
  return new ProtocolError(message, ErrorCode.MALFORMED);
}

function invalid(message) {
  return new ProtocolError(message, ErrorCode.INVALID_VALUE);
}

function text(bytes, what, code = ErrorCode.MALFORMED) {
  try {
    return utf8Decoder.decode(bytes);
  } catch {
    throw new ProtocolError(`${what} is not valid UTF-8`, code);
  }
}

function u64(view, at) {
  return Number(view.getBigUint64(at, true));
}

function checkLength(bytes, expected, what) {
  if (bytes.length !== expected) {
    throw malformed(`${what} must be ${expected} bytes, got ${bytes.length}`);
  }
}

function isValidCloseCode(code) {
  return code === 0 || (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
    (code >= 3000 && code <= 4999);
}

function decodeWelcome(bytes, view) {
  checkLength(bytes, 112, "WELCOME");
  const flags = view.getUint8(2);
  if (flags & ~1 || view.getUint16(6, true)) throw malformed("WELCOME has reserved bits set");
  const f = (at) => view.getFloat64(at, true);
  const welcome = {
    type: "welcome", version: view.getUint8(1), resumed: Boolean(flags & 1),
    hintLevels: view.getUint8(3), tickRate: view.getUint16(4, true),
    playerId: view.getBigUint64(8, true), slot: view.getUint32(8, true),
    gen: view.getUint32(12, true), resumeToken: bytes.slice(16, 32),
    tick: u64(view, 32), ack: u64(view, 40), width: f(48), height: f(56), playerSpeed: f(64),
    discoveryRadius: f(72), hintRadius: f(80), viewRadius: f(88), spawnX: f(96), spawnY: f(104),
  };
  if (welcome.tickRate < 1 || welcome.hintLevels < 1 || welcome.hintLevels > MAX_HINT_LEVEL ||
      view.getBigUint64(40, true) > MAX_SEQ) {
    throw invalid("WELCOME has tick_rate 0, hint_levels outside 1-15 or ack >= 2^63");
  }
  const positive = [welcome.width, welcome.height, welcome.discoveryRadius, welcome.hintRadius,
    welcome.viewRadius];
  if (!positive.every((v) => Number.isFinite(v) && v > 0) ||
      !(Number.isFinite(welcome.playerSpeed) && welcome.playerSpeed >= 0) ||
      !Number.isFinite(welcome.spawnX) || !Number.isFinite(welcome.spawnY)) {
    throw invalid("WELCOME has a non-finite, negative or zero size, speed or radius");
  }
  return welcome;
}

function decodeNotice(bytes, view, kind) {
  if (bytes.length < 8) throw malformed(`ERROR/REFUSED needs 8 bytes, got ${bytes.length}`);
  if (view.getUint8(1)) throw malformed("ERROR/REFUSED has reserved bits set");
  const code = view.getUint16(2, true);
  const closeCode = view.getUint16(4, true);
  const length = view.getUint16(6, true);
  checkLength(bytes, 8 + length, "this ERROR/REFUSED");
  const message = text(bytes.subarray(8), "the error message");
  if (code < 1 || !isValidCloseCode(closeCode) || length > MAX_MESSAGE_BYTES ||
      (kind === "refused" && closeCode === 0)) {
    throw invalid(`${kind.toUpperCase()} has code ${code}, close code ${closeCode} or a ` +
      `message of ${length} bytes`);
  }
  return { type: kind, code, closeCode, message };
}

/** Whether `url` may travel in a REDIRECT: ws:// or wss:// and more, no space or control. */
export function isValidRedirectUrl(url) {
  if (typeof url !== "string" || !/^wss?:\/\/./.test(url) || /^wss?:\/*$/.test(url) ||
      NOT_PRINTABLE.test(url) || url.includes(" ")) return false;
  return utf8Encoder.encode(url).length <= MAX_URL_BYTES;
}

function decodeRedirect(bytes, view) {
  if (bytes.length < 8) throw malformed(`REDIRECT needs at least 8 bytes, got ${bytes.length}`);
  const nodeLen = view.getUint8(1);
  const urlLen = view.getUint16(2, true);
  const huntLen = view.getUint16(4, true);
  if (view.getUint16(6, true)) throw malformed("REDIRECT has reserved bits set");
  checkLength(bytes, 8 + urlLen + huntLen + nodeLen, "this REDIRECT");
  const url = text(bytes.subarray(8, 8 + urlLen), "the redirect URL");
  const hunt = text(bytes.subarray(8 + urlLen, 8 + urlLen + huntLen), "the hunt name");
  const node = text(bytes.subarray(8 + urlLen + huntLen), "the node id");
  if (!isValidRedirectUrl(url)) {
    throw invalid(`REDIRECT url must be a ws:// or wss:// URL of 1-${MAX_URL_BYTES} bytes ` +
      `without spaces, got ${JSON.stringify(url.slice(0, 80))}`);
  }
  if (!isValidName(hunt, MAX_HUNT_BYTES)) throw invalid("REDIRECT carries an invalid hunt name");
  if (nodeLen > MAX_NODE_BYTES || NOT_PRINTABLE.test(node) || node !== node.trim()) {
    throw invalid("REDIRECT carries an invalid node id");
  }
  return { type: "redirect", url, hunt, node };
}

/** One TICK; its records are plain objects (see decodeServerFrame). */
function decodeTick(bytes, view) {
  const size = bytes.length;
  if (size < TICK_HEADER_BYTES) {
    throw malformed(`TICK needs at least ${TICK_HEADER_BYTES} bytes, got ${size}`);
  }
  const flags = view.getUint8(1);
  const nLeaders = view.getUint8(3);
  if (flags & ~3 || (nLeaders && !(flags & 2))) {
    throw malformed("TICK has reserved flag bits set, or rows of a leaderboard it lacks");
  }
  const nVisible = view.getUint32(4, true);
  const nDiscoveries = view.getUint32(48, true);
  const nLeaves = view.getUint32(52, true);
  const nNames = view.getUint32(56, true);
  const namesBytes = view.getUint32(60, true);
  const expected = TICK_HEADER_BYTES + RECORD.visible * nVisible +
    RECORD.discovery * nDiscoveries + RECORD.leader * nLeaders + RECORD.leave * nLeaves;
  if (size !== expected + namesBytes || nNames * (RECORD.nameHeader + 1) > namesBytes) {
    throw malformed(`TICK header announces ${expected + namesBytes} bytes and ${nNames} names ` +
      `in ${namesBytes}; the frame has ${size} bytes`);
  }
  const tick = {
    type: "tick", keyframe: Boolean(flags & 1), hint: view.getUint8(2), tick: u64(view, 8),
    ack: u64(view, 16), x: view.getFloat64(24, true), y: view.getFloat64(32, true),
    score: Number(view.getBigInt64(40, true)),
    visible: [], discoveries: [], leaderboard: flags & 2 ? [] : null, leaves: [], names: [],
  };
  let at = TICK_HEADER_BYTES;
  for (let i = 0; i < nVisible; i++, at += RECORD.visible) {
    tick.visible.push({
      slot: view.getUint32(at, true), gen: view.getUint16(at + 4, true),
      flags: view.getUint16(at + 6, true), x: view.getFloat32(at + 8, true),
      y: view.getFloat32(at + 12, true),
    });
  }
  for (let i = 0; i < nDiscoveries; i++, at += RECORD.discovery) {
    tick.discoveries.push({
      hunt: view.getUint32(at, true), treasure: view.getUint32(at + 4, true),
      slot: view.getUint32(at + 8, true), gen: view.getUint32(at + 12, true),
      value: Number(view.getBigInt64(at + 16, true)),
      score: Number(view.getBigInt64(at + 24, true)),
      x: view.getFloat64(at + 32, true), y: view.getFloat64(at + 40, true),
    });
  }
  for (let i = 0; i < nLeaders; i++, at += RECORD.leader) {
    tick.leaderboard.push({
      slot: view.getInt32(at, true), gen: view.getUint32(at + 4, true),
      score: Number(view.getBigInt64(at + 8, true)),
    });
  }
  for (let i = 0; i < nLeaves; i++, at += RECORD.leave) {
    tick.leaves.push({ slot: view.getUint32(at, true), gen: view.getUint32(at + 4, true) });
  }
  for (let i = 0; i < nNames; i++) {
    if (at + RECORD.nameHeader > size) throw malformed("TICK name table is shorter than its count");
    const slot = view.getUint32(at, true);
    const gen = view.getUint32(at + 4, true);
    const length = view.getUint8(at + 8);
    at += RECORD.nameHeader + length;
    if (at > size) throw malformed("TICK name entry runs past the end of the frame");
    const name = text(bytes.subarray(at - length, at), "a player name", ErrorCode.INVALID_VALUE);
    if (!isValidName(name)) throw invalid(`TICK carries an invalid player name ${JSON.stringify(name)}`);
    tick.names.push({ slot, gen, name });
  }
  if (at !== size) throw malformed("TICK name table does not fill names_bytes");
  // Values last, like the Python decoder: a frame with two faults gets the same code.
  if (tick.hint > MAX_HINT_LEVEL || view.getBigUint64(16, true) > MAX_SEQ ||
      !Number.isFinite(tick.x) || !Number.isFinite(tick.y)) {
    throw invalid("TICK has hint > 15, ack >= 2^63 or a non-finite position");
  }
  return tick;
}

function decodeRound(bytes, view) {
  checkLength(bytes, 48, "ROUND");
  const flags = view.getUint8(2);
  if (flags & ~1) throw malformed("ROUND has reserved bits set");
  const round = {
    type: "round", phase: view.getUint8(1), phaseName: PHASES[view.getUint8(1)],
    respawn: Boolean(flags & 1), end: view.getUint8(3), round: view.getUint32(4, true),
    rounds: view.getUint32(8, true), treasures: view.getUint32(12, true), tick: u64(view, 16),
    phaseStart: u64(view, 24), phaseEnd: u64(view, 32),
    targetScore: Number(view.getBigInt64(40, true)),
  };
  const big = (at) => view.getBigUint64(at, true) > MAX_SEQ;
  if (!round.phaseName || round.end > 2 || round.round < 1 || big(16) || big(24) || big(32) ||
      round.targetScore < 0 || (round.phase === 4) !== (round.phaseEnd === 0) ||
      (round.phase !== 4 && round.phaseEnd <= round.phaseStart) ||
      round.phaseStart > round.tick) {
    throw invalid("ROUND has an unknown phase or end condition, round 0, or inconsistent times");
  }
  return round;
}

function decodeResults(bytes, view) {
  if (bytes.length < 40) throw malformed(`RESULTS needs at least 40 bytes, got ${bytes.length}`);
  if (view.getUint8(1) || view.getUint32(36, true)) throw malformed("RESULTS has reserved bits set");
  const nRows = view.getUint16(2, true);
  checkLength(bytes, 40 + RECORD.result * nRows, `RESULTS of ${nRows} rows`);
  const results = {
    type: "results", round: view.getUint32(4, true), tick: u64(view, 8),
    players: view.getUint32(16, true), yourRank: view.getUint32(20, true),
    yourScore: Number(view.getBigInt64(24, true)), yourFound: view.getUint32(32, true),
    standings: [],
  };
  for (let i = 0, at = 40; i < nRows; i++, at += RECORD.result) {
    results.standings.push({
      rank: view.getUint32(at, true), slot: view.getUint32(at + 4, true),
      gen: view.getUint32(at + 8, true), found: view.getUint32(at + 12, true),
      score: Number(view.getBigInt64(at + 16, true)),
      lastTick: Number(view.getBigInt64(at + 24, true)),
    });
  }
  if (results.round < 1 || results.tick < 1 || view.getBigUint64(8, true) > MAX_SEQ ||
      results.yourRank > results.players || nRows > Math.min(results.players, 100)) {
    throw invalid("RESULTS has round 0, tick 0, a rank past its players or too many rows");
  }
  return results;
}

/**
 * Decode one binary WebSocket message from the server (ArrayBuffer, a typed array or a
 * DataView). Returns an object with `type`:
 * - "welcome": {version, resumed, hintLevels, tickRate, playerId (BigInt), slot, gen,
 *   resumeToken (Uint8Array), tick, ack, width, height, playerSpeed, discoveryRadius,
 *   hintRadius, viewRadius, spawnX, spawnY}
 * - "refused" / "error": {code, closeCode, message}
 * - "redirect": {url, hunt, node}: another node owns the hunt; send the same HELLO to `url`
 * - "tick": {keyframe, hint, tick, ack, x, y, score, visible: [{slot, gen, flags, x, y}],
 *   discoveries: [{hunt, treasure, slot, gen, value, score, x, y}],
 *   leaderboard: null or [{slot, gen, score}], leaves: [{slot, gen}], names: [{slot, gen, name}]}
 * - "round" (round-based hunts): {round, phase (1-4), phaseName ("lobby", "running", "results",
 *   "over"), tick, phaseStart, phaseEnd (0 when over), rounds (0: forever), treasures, respawn,
 *   end (0 time, 1 all found, 2 score), targetScore}; time left = phaseEnd - tick.tick ticks
 * - "results": {round, tick, players, yourRank (0: not ranked), yourScore, yourFound,
 *   standings: [{rank, slot, gen, found, score, lastTick}]}
 * `ticks`: the connection's TickDecoder (hunt-compact.js, built from its WELCOME), which
 * decodes the TICKs of the connection's version; without it a TICK is read as version 1.
 * Throws ProtocolError (with the code and close code to use) for anything the protocol forbids.
 */
export function decodeServerFrame(frame, ticks = null) {
  const bytes = frame instanceof ArrayBuffer ? new Uint8Array(frame)
    : new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength);
  if (!bytes.length) throw malformed("empty frame");
  if (bytes.length > MAX_SERVER_FRAME_BYTES) {
    throw new ProtocolError(`frame of ${bytes.length} bytes exceeds the limit of ` +
      `${MAX_SERVER_FRAME_BYTES}`, ErrorCode.TOO_BIG);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (bytes[0]) {
    case MessageType.WELCOME: return decodeWelcome(bytes, view);
    case MessageType.REFUSED: return decodeNotice(bytes, view, "refused");
    case MessageType.ERROR: return decodeNotice(bytes, view, "error");
    case MessageType.TICK: return ticks ? ticks.decode(bytes, view, decodeTick) : decodeTick(bytes, view);
    case MessageType.REDIRECT: return decodeRedirect(bytes, view);
    case MessageType.ROUND: return decodeRound(bytes, view);
    case MessageType.RESULTS: return decodeResults(bytes, view);
    default: {
      const known = Object.values(MessageType).includes(bytes[0]);
      throw new ProtocolError(`unexpected message type 0x${bytes[0].toString(16)}` +
        (known ? ", a server does not send it" : ""), ErrorCode.UNKNOWN_TYPE);
    }
  }
}

// Version 2 of the wire protocol: the compact TICK (docs/protocol.md, "TICK, version 2").
// A diff carries only what changed since the connection's previous TICK and names other
// players by hunt-local indices, so decoding needs the connection's state: one TickDecoder
// per connection, built from its WELCOME, fed every TICK in order
// (decodeServerFrame(frame, ticks)). It returns the same tick object as a version-1 TICK.
// Held to the tick_v2 vectors of tests/protocol_vectors.json by tests/test_browser_protocol.py.

import { ErrorCode, MAX_HINT_LEVEL, MAX_NAME_BYTES, MAX_SEQ, ProtocolError, isValidName }
  from "./hunt-protocol.js";

const KEYFRAME = 1, ACK = 2, POSITION = 4, SCORE = 8, HINT = 16, VIEW = 32, EVENTS = 64;
const KEYFRAME_FIELDS = KEYFRAME | ACK | POSITION | SCORE | HINT;
const QUANT = 65535;
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

function malformed(message) {
  return new ProtocolError(message, ErrorCode.MALFORMED);
}

function invalid(message) {
  return new ProtocolError(message, ErrorCode.INVALID_VALUE);
}

/** Reads a frame from the front; every overrun is MALFORMED. */
class Reader {
  constructor(bytes, view) {
    this.bytes = bytes;
    this.view = view;
    this.at = 2;
  }

  /** An unsigned LEB128 varint as a BigInt (0..2^64-1). */
  big() {
    const { bytes } = this;
    let value = 0n;
    let shift = 0n;
    for (let n = 0; ; n++) {
      if (this.at >= bytes.length) throw malformed("TICK ends inside a varint");
      if (n === 10) throw malformed("TICK has a varint longer than 10 bytes");
      const byte = bytes[this.at++];
      value |= BigInt(byte & 0x7f) << shift;
      if (!(byte & 0x80)) break;
      shift += 7n;
    }
    if (value >> 64n) throw malformed("TICK has a varint above 2^64 - 1");
    return value;
  }

  /** A varint as a Number (exact below 2^53, like the 64-bit fields of version 1). */
  varint() {
    const { bytes } = this;
    let at = this.at;
    let value = 0;
    for (let scale = 1; at < bytes.length && scale < 2 ** 49; scale *= 128) {
      const byte = bytes[at++];
      value += (byte & 0x7f) * scale;
      if (!(byte & 0x80)) {
        this.at = at;
        return value;
      }
    }
    return Number(this.big());  // long (or cut: big() says so)
  }

  /** A zigzag varint: a signed integer. */
  signed() {
    const v = this.big();
    return Number((v >> 1n) ^ -(v & 1n));
  }

  take(n) {
    if (this.at + n > this.bytes.length) throw malformed(`TICK ends inside a field of ${n} bytes`);
    const at = this.at;
    this.at += n;
    return at;
  }

  u8() {
    return this.bytes[this.take(1)];
  }

  u16() {
    return this.view.getUint16(this.take(2), true);
  }
}

/** The TICK decoder of one connection: version 1 frames as they are, version 2 with state. */
export class TickDecoder {
  /** `welcome`: the connection's decoded WELCOME ({version, width, height}). */
  constructor(welcome) {
    this.version = welcome.version;
    this.width = welcome.width;
    this.height = welcome.height;
    /** hunt-local index -> {slot, gen}, as the TICKs announced them. */
    this.players = new Map();
    this.last = null;
  }

  /** One TICK frame (its bytes and a DataView on them) -> the tick object. */
  decode(bytes, view, decodeV1) {
    const tick = this.version === 1 ? decodeV1(bytes, view) : this._decode2(bytes, view);
    this.last = tick;
    return tick;
  }

  _decode2(bytes, view) {
    if (bytes.length < 2) throw malformed(`TICK needs at least 2 bytes, got ${bytes.length}`);
    const flags = bytes[1];
    if (flags & 0x80) throw malformed("TICK has reserved flag bits set");
    const keyframe = Boolean(flags & KEYFRAME);
    if (keyframe && (flags & KEYFRAME_FIELDS) !== KEYFRAME_FIELDS) {
      throw malformed("a keyframe TICK must carry ack, position, score and hint");
    }
    const last = this.last;
    if (!keyframe && last === null) throw malformed("the first TICK of a connection must be a keyframe");
    const r = new Reader(bytes, view);
    const t = keyframe
      ? { tick: 0, ack: 0n, x: 0, y: 0, score: 0, hint: 0 }
      : { tick: 0, ack: last.ackBig, x: last.x, y: last.y, score: last.score, hint: last.hint };
    if (keyframe) {
      t.tick = r.varint();
      t.ack = r.big();
    } else {
      // The tick's low byte: the previous TICK's + 1, unless TICKs were lost on the way.
      t.tick = last.tick + 1 + ((r.u8() - last.tick - 1) & 0xff);
      if (flags & ACK) t.ack += r.big();
    }
    if (flags & POSITION) {
      t.x = view.getFloat64(r.take(8), true);
      t.y = view.getFloat64(r.take(8), true);
    }
    if (flags & SCORE) t.score = r.signed();
    if (flags & HINT) t.hint = r.u8();
    const seen = [];
    if (flags & VIEW) {
      for (let n = r.varint(); n > 0; n--) {
        const code = r.varint();
        seen.push(code % 2 ? [(code - 1) / 2, 1, r.u16(), r.u16()] : [code / 2, 0, 0, 0]);
      }
    }
    const found = [];
    let board = null;
    const leaves = [];
    const names = [];
    if (flags & EVENTS) {
      const mask = r.u8();
      if (!mask || mask & 0xf0) {
        throw malformed("TICK hunt part has no section or reserved section bits set");
      }
      if (mask & 1) {
        for (let n = r.varint(); n > 0; n--) {
          found.push([r.varint(), r.varint(), r.varint(), r.signed(), r.signed(), r.u16(),
            r.u16()]);
        }
      }
      if (mask & 2) {
        board = [];
        for (let n = r.varint(); n > 0; n--) board.push([r.varint(), r.signed()]);
      }
      if (mask & 4) {
        if (keyframe) throw malformed("a keyframe TICK has no leaves section (it names everyone)");
        for (let n = r.varint(); n > 0; n--) leaves.push(r.varint());
      }
      if (mask & 8) {
        for (let n = r.varint(); n > 0; n--) {
          const index = r.varint();
          const slot = r.varint();
          const gen = r.varint();
          const length = r.u8();
          names.push([index, slot, gen, length, bytes.subarray(r.take(length), r.at)]);
        }
      }
    }
    if (r.at !== bytes.length) {
      throw malformed(`TICK has ${bytes.length - r.at} bytes after its last section`);
    }
    // Values last, like the Python decoder: a frame with two faults gets the same code.
    if (t.hint > MAX_HINT_LEVEL || t.ack > MAX_SEQ || !Number.isFinite(t.x) ||
        !Number.isFinite(t.y)) {
      throw invalid("TICK has hint > 15, ack >= 2^63 or a non-finite position");
    }
    return this._apply(t, keyframe, seen, found, board, leaves, names);
  }

  _who(index) {
    const who = this.players.get(index);
    if (!who) throw invalid(`TICK names player index ${index}, which no NAME entry announced`);
    return who;
  }

  _apply(t, keyframe, seen, found, board, leaves, names) {
    const { players, width, height } = this;
    if (keyframe) players.clear();
    const tick = {
      type: "tick", keyframe, hint: t.hint, tick: t.tick, ack: Number(t.ack), ackBig: t.ack,
      x: t.x, y: t.y, score: t.score, visible: [], discoveries: [], leaderboard: null,
      leaves: [], names: [],
    };
    for (const index of leaves) {
      const { slot, gen } = this._who(index);
      tick.leaves.push({ slot, gen });
      players.delete(index);
    }
    for (const [index, slot, gen, length, raw] of names) {
      if (length > MAX_NAME_BYTES || slot >= 2 ** 32 || gen >= 2 ** 32) {
        throw invalid("TICK NAME entry out of range");
      }
      players.set(index, { slot, gen });
      if (!length) continue;
      let name;
      try {
        name = utf8Decoder.decode(raw);
      } catch {
        throw invalid("a player name is not valid UTF-8");
      }
      if (!isValidName(name)) throw invalid(`TICK carries an invalid player name ${JSON.stringify(name)}`);
      tick.names.push({ slot, gen, name });
    }
    for (const [index, inView, qx, qy] of seen) {
      const { slot, gen } = this._who(index);
      tick.visible.push({
        slot, gen: gen & 0xffff, flags: inView,
        x: inView ? Math.fround((qx * width) / QUANT) : 0,
        y: inView ? Math.fround((qy * height) / QUANT) : 0,
      });
    }
    for (const [index, hunt, treasure, value, score, qx, qy] of found) {
      const { slot, gen } = this._who(index);
      tick.discoveries.push({ hunt, treasure, slot, gen, value, score, x: (qx * width) / QUANT,
        y: (qy * height) / QUANT });
    }
    if (board) {
      tick.leaderboard = board.map(([index, score]) => ({ ...this._who(index), score }));
    }
    Object.defineProperty(tick, "ackBig", { enumerable: false });
    return tick;
  }
}

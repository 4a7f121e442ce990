// What a client knows of its hunt, kept up to date from decoded TICK messages, following
// "What a client does with a TICK" in docs/protocol.md: keyframes replace the view, diffs
// patch it, LEAVE notices drop players, NAME entries label them, the leaderboard is replaced
// when sent, and the player's own authoritative position, score and hint are kept.
//
// Every position is kept twice, at the last tick and at the tick before it (`px`, `py`), so
// that a renderer can draw at 60 fps by interpolating between the two (see `lerpPosition`).

const GEN16 = 0xffff;

/** A player's position at `alpha` (0: previous tick, 1: last tick), world units. */
export function lerpPosition(player, alpha, currentTick) {
  if (player.t !== currentTick) return [player.x, player.y];
  const a = Math.min(1, Math.max(0, alpha));
  return [player.px + (player.x - player.px) * a, player.py + (player.y - player.py) * a];
}

export class HuntView {
  /** @param {number} recentLimit discoveries kept in `recent` (newest last). */
  constructor(recentLimit = 20) {
    this.recentLimit = recentLimit;
    /** slot -> {slot, gen (low 16 bits), x, y, px, py, t (tick of the last position)} */
    this.players = new Map();
    /** slot -> {gen (32 bits), name} */
    this.names = new Map();
    /** Rows of the hunt's leaderboard, best first: {slot, gen, score}. */
    this.leaderboard = [];
    /** Recent discoveries in the hunt: {tick, slot, gen, value, score, x, y, treasure}. */
    this.recent = [];
    /** The WELCOME of the current connection (world size, radii, tick rate...). */
    this.params = null;
    /** The player itself: slot, gen, x, y, px, py, t, score, hint, ack. */
    this.me = null;
    /** Tick number of the last TICK applied (-1: none since the last WELCOME). */
    this.tick = -1;
    this.waitingForKeyframe = true;
  }

  /** A WELCOME (join or resume): what follows is a keyframe with tick > welcome.tick. */
  welcome(welcome) {
    const keep = this.me && this.me.slot === welcome.slot && this.me.gen === welcome.gen;
    this.params = welcome;
    this.me = {
      slot: welcome.slot, gen: welcome.gen, x: welcome.spawnX, y: welcome.spawnY,
      px: welcome.spawnX, py: welcome.spawnY, t: welcome.tick,
      score: keep ? this.me.score : 0, hint: keep ? this.me.hint : 0, ack: welcome.ack,
    };
    if (!keep) {
      this.players.clear();
      this.recent = [];
    }
    this.tick = welcome.tick;
    this.waitingForKeyframe = true;
  }

  /**
   * Apply one decoded TICK. Returns false, changing nothing, when it cannot be applied: a
   * diff whose tick does not follow the last one (a message was lost), or a diff before the
   * first keyframe. The caller then reconnects and resumes, which brings a keyframe.
   */
  apply(tick) {
    if (!tick.keyframe && (this.waitingForKeyframe || tick.tick !== this.tick + 1)) return false;
    const t = tick.tick;
    const players = this.players;
    if (tick.keyframe) {
      // Forget everyone, but keep where the ones still in view were, to interpolate smoothly.
      const before = new Map(players);
      players.clear();
      for (const r of tick.visible) {
        const old = before.get(r.slot);
        const same = old && old.gen === r.gen;
        players.set(r.slot, {
          slot: r.slot, gen: r.gen, x: r.x, y: r.y, px: same ? old.x : r.x,
          py: same ? old.y : r.y, t,
        });
      }
      this.waitingForKeyframe = false;
    } else {
      for (const r of tick.visible) {
        if (!(r.flags & 1)) {
          players.delete(r.slot);
          continue;
        }
        const old = players.get(r.slot);
        if (old && old.gen === r.gen) {
          old.px = old.x;
          old.py = old.y;
          old.x = r.x;
          old.y = r.y;
          old.t = t;
        } else {
          players.set(r.slot, { slot: r.slot, gen: r.gen, x: r.x, y: r.y, px: r.x, py: r.y, t });
        }
      }
    }
    for (const leave of tick.leaves) {
      const p = players.get(leave.slot);
      if (p && p.gen === (leave.gen & GEN16)) players.delete(leave.slot);
    }
    for (const entry of tick.names) this.names.set(entry.slot, { gen: entry.gen, name: entry.name });
    if (tick.leaderboard) this.leaderboard = tick.leaderboard;
    for (const d of tick.discoveries) this.recent.push({ tick: t, ...d });
    if (this.recent.length > this.recentLimit) this.recent.splice(0, this.recent.length - this.recentLimit);
    const me = this.me;
    if (me) {
      me.px = me.x;
      me.py = me.y;
      me.x = tick.x;
      me.y = tick.y;
      me.t = t;
      me.score = tick.score;
      me.hint = tick.hint;
      me.ack = tick.ack;
    }
    this.tick = t;
    return true;
  }

  /**
   * The name of the player in `slot`, if known for generation `gen` (compared modulo 2^16,
   * since VISIBLE records carry only the low 16 bits); null otherwise.
   */
  nameOf(slot, gen = null) {
    const entry = this.names.get(slot);
    if (!entry) return null;
    if (gen !== null && (entry.gen & GEN16) !== (gen & GEN16)) return null;
    return entry.name;
  }

  /** Whether the record (slot, gen) is this player. */
  isMe(slot, gen) {
    return Boolean(this.me) && this.me.slot === slot && (this.me.gen & GEN16) === (gen & GEN16);
  }
}

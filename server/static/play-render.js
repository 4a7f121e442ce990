// The play page's map: a canvas centred on the player, drawn every animation frame with every
// position interpolated between the last two ticks. Scale: the view radius (how far a player
// sees others) fills most of the shorter side of the canvas, so whoever the server reports is
// on screen (a world smaller than that is shown whole). Hundreds of players cost one path and at most LABELS labels per frame.

import { lerpPosition } from "./hunt.js";

const LABELS = 40;
const HINT_COLOURS = ["#5aa9ff", "#6fd3c0", "#ffd166", "#ff9f43", "#ff5e5e"];
const BURST_MS = 1600;

/** The colour of hint `level` out of `levels` (0: none). */
export function hintColour(level, levels) {
  if (!level) return "#5c6f8c";
  const i = Math.round(((level - 1) / Math.max(1, levels - 1)) * (HINT_COLOURS.length - 1));
  return HINT_COLOURS[Math.min(HINT_COLOURS.length - 1, i)];
}

export class MapRenderer {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.scale = 1;   // pixels (CSS) per world unit
    this.centre = [0, 0];
    this.bursts = [];  // discoveries being animated: {x, y, value, mine, start}
    this.dpr = 1;
    this.cssWidth = 0;
    this.cssHeight = 0;
  }

  /** Match the backing store to the element's size and the screen's pixel ratio. */
  fit() {
    const rect = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(rect.width * dpr));
    const h = Math.max(1, Math.round(rect.height * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.dpr = dpr;
    this.cssWidth = rect.width;
    this.cssHeight = rect.height;
  }

  /** World coordinates of a point given in client (CSS pixel) coordinates. */
  toWorld(clientX, clientY) {
    const rect = this.canvas.getBoundingClientRect();
    return [
      this.centre[0] + (clientX - rect.left - rect.width / 2) / this.scale,
      this.centre[1] + (clientY - rect.top - rect.height / 2) / this.scale,
    ];
  }

  /** Animate a discovery at (x, y), world units. */
  burst(x, y, value, mine) {
    this.bursts.push({ x, y, value, mine, start: performance.now() });
    if (this.bursts.length > 60) this.bursts.shift();
  }

  /**
   * One frame. `alpha`: 0..1, how far we are between the previous tick and the last one.
   * `target`: the point the player walks to (world units) or null.
   */
  draw(view, alpha, target, nameOfMe, help = null) {
    this.fit();
    const { ctx, dpr } = this;
    const W = this.cssWidth;
    const H = this.cssHeight;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#070c14";
    ctx.fillRect(0, 0, W, H);
    const p = view.params;
    if (!p || !view.me) return;
    const [mx, my] = lerpPosition(view.me, alpha, view.tick);
    // Show a little more than the view radius, or the whole world if it is smaller.
    const halfExtent = Math.min(1.15 * p.viewRadius, 0.55 * Math.max(p.width, p.height));
    this.scale = Math.min(W, H) / (2 * halfExtent);
    this.centre = [mx, my];
    const s = this.scale;
    const sx = (x) => W / 2 + (x - mx) * s;
    const sy = (y) => H / 2 + (y - my) * s;

    // The world: its floor, a grid every 50 units, its border.
    ctx.fillStyle = "#0f1b2c";
    ctx.fillRect(sx(0), sy(0), p.width * s, p.height * s);
    ctx.strokeStyle = "#1b2c45";
    ctx.lineWidth = 1;
    ctx.beginPath();
    const step = 50;
    const x0 = Math.max(0, Math.floor((mx - W / 2 / s) / step) * step);
    const x1 = Math.min(p.width, mx + W / 2 / s);
    for (let x = x0; x <= x1; x += step) { ctx.moveTo(sx(x), sy(0)); ctx.lineTo(sx(x), sy(p.height)); }
    const y0 = Math.max(0, Math.floor((my - H / 2 / s) / step) * step);
    const y1 = Math.min(p.height, my + H / 2 / s);
    for (let y = y0; y <= y1; y += step) { ctx.moveTo(sx(0), sy(y)); ctx.lineTo(sx(p.width), sy(y)); }
    ctx.stroke();
    ctx.strokeStyle = "#4a6183";
    ctx.lineWidth = 2;
    ctx.strokeRect(sx(0), sy(0), p.width * s, p.height * s);

    // The hint as a glow around the player: its colour and size grow as it gets warmer.
    const hint = view.me.hint;
    if (hint > 0) {
      const r = p.hintRadius * s;
      const glow = ctx.createRadialGradient(W / 2, H / 2, 0, W / 2, H / 2, r);
      const colour = hintColour(hint, p.hintLevels);
      glow.addColorStop(0, colour + "88");
      glow.addColorStop(Math.min(1, 0.25 + 0.6 * hint / p.hintLevels), colour + "22");
      glow.addColorStop(1, colour + "00");
      ctx.fillStyle = glow;
      ctx.beginPath();
      ctx.arc(W / 2, H / 2, r, 0, 2 * Math.PI);
      ctx.fill();
    }
    // How far the player sees others.
    ctx.setLineDash([6, 6]);
    ctx.strokeStyle = "rgba(124, 196, 255, 0.28)";
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    ctx.arc(W / 2, H / 2, p.viewRadius * s, 0, 2 * Math.PI);
    ctx.stroke();
    ctx.setLineDash([]);

    if (target) {
      const tx = sx(target[0]);
      const ty = sy(target[1]);
      ctx.strokeStyle = "#ffd166";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(tx - 6, ty - 6); ctx.lineTo(tx + 6, ty + 6);
      ctx.moveTo(tx + 6, ty - 6); ctx.lineTo(tx - 6, ty + 6);
      ctx.stroke();
    }

    this._drawBursts(sx, sy);

    // Others: a dark disc under a light one, one path each (filling is much cheaper than
    // stroking 500 outlines), then labels for the nearest ones.
    const others = [];
    const r = Math.max(4, Math.min(8, 3 * s));
    for (const o of view.players.values()) {
      if (view.isMe(o.slot, o.gen)) continue;
      const [ox, oy] = lerpPosition(o, alpha, view.tick);
      const px = sx(ox);
      const py = sy(oy);
      if (px < -20 || py < -20 || px > W + 20 || py > H + 20) continue;
      others.push([(px - W / 2) ** 2 + (py - H / 2) ** 2, px, py, o]);
    }
    for (const [radius, colour] of [[r + 1.5, "#0a111b"], [r, "#7cc4ff"]]) {
      ctx.beginPath();
      for (const [, px, py] of others) {
        ctx.moveTo(px + radius, py);
        ctx.arc(px, py, radius, 0, 2 * Math.PI);
      }
      ctx.fillStyle = colour;
      ctx.fill();
    }
    if (others.length > LABELS) others.sort((a, b) => a[0] - b[0]);
    ctx.font = "600 12px system-ui, sans-serif";
    ctx.textAlign = "center";
    ctx.lineJoin = "round";
    // Labels of the nearest players that do not overlap each other nor the player's own.
    const taken = [[W / 2 - 70, H / 2 - 32, W / 2 + 70, H / 2 + 10]];
    let placed = 0;
    for (const [, px, py, o] of others.slice(0, 8 * LABELS)) {
      if (placed >= LABELS) break;
      const text = view.nameOf(o.slot, o.gen) ?? `#${o.slot}`;
      const half = 3.6 * text.length + 4;
      const box = [px - half, py - r - 19, px + half, py - r - 1];
      if (taken.some((t) => box[0] < t[2] && box[2] > t[0] && box[1] < t[3] && box[3] > t[1])) {
        continue;
      }
      taken.push(box);
      placed += 1;
      this._label(text, px, py - r - 5, "#d6ecff");
    }

    // The player, on top.
    ctx.beginPath();
    ctx.arc(W / 2, H / 2, 9, 0, 2 * Math.PI);
    ctx.fillStyle = "#ffd166";
    ctx.fill();
    ctx.lineWidth = 3;
    ctx.strokeStyle = "#1a1300";
    ctx.stroke();
    ctx.font = "700 13px system-ui, sans-serif";
    this._label(`${nameOfMe} (you)`, W / 2, H / 2 - 16, "#ffe3a3");

    this._drawMinimap(view, mx, my, W);
    if (help) {
      ctx.font = "600 14px system-ui, sans-serif";
      ctx.textAlign = "center";
      const width = ctx.measureText(help).width + 28;
      ctx.fillStyle = "rgba(13, 20, 32, 0.88)";
      ctx.beginPath();
      ctx.roundRect(W / 2 - width / 2, H - 46, width, 32, 16);
      ctx.fill();
      ctx.fillStyle = "#eef3fa";
      ctx.fillText(help, W / 2, H - 25);
    }
  }

  _label(text, x, y, colour) {
    const ctx = this.ctx;
    ctx.strokeStyle = "rgba(5, 9, 15, 0.9)";
    ctx.lineWidth = 4;
    ctx.strokeText(text, x, y);
    ctx.fillStyle = colour;
    ctx.fillText(text, x, y);
  }

  _drawBursts(sx, sy) {
    const ctx = this.ctx;
    const now = performance.now();
    this.bursts = this.bursts.filter((b) => now - b.start < BURST_MS);
    for (const b of this.bursts) {
      const k = (now - b.start) / BURST_MS;
      const x = sx(b.x);
      const y = sy(b.y);
      ctx.globalAlpha = 1 - k;
      ctx.strokeStyle = b.mine ? "#ffd166" : "#6be3a4";
      ctx.lineWidth = 3;
      ctx.beginPath();
      ctx.arc(x, y, 8 + 40 * k, 0, 2 * Math.PI);
      ctx.stroke();
      ctx.font = `800 ${b.mine ? 22 : 15}px system-ui, sans-serif`;
      ctx.textAlign = "center";
      this._label(`+${b.value}`, x + 22, y - 24 - 30 * k, b.mine ? "#ffd166" : "#6be3a4");
      ctx.globalAlpha = 1;
    }
  }

  _drawMinimap(view, mx, my, W) {
    const ctx = this.ctx;
    const p = view.params;
    const size = Math.min(120, W * 0.28);
    const k = size / Math.max(p.width, p.height);
    const w = p.width * k;
    const h = p.height * k;
    const x = W - w - 10;
    const y = 10;
    ctx.fillStyle = "rgba(10, 17, 27, 0.85)";
    ctx.strokeStyle = "#4a6183";
    ctx.lineWidth = 1;
    ctx.fillRect(x, y, w, h);
    ctx.strokeRect(x, y, w, h);
    ctx.fillStyle = "#7cc4ff";
    for (const o of view.players.values()) ctx.fillRect(x + o.x * k - 1, y + o.y * k - 1, 2, 2);
    ctx.fillStyle = "#ffd166";
    ctx.beginPath();
    ctx.arc(x + mx * k, y + my * k, 3, 0, 2 * Math.PI);
    ctx.fill();
  }
}

// The play page's round display, for hunts with a round plan (docs/protocol.md, "Rounds"):
// a banner over the map with the phase and its clock (the lobby's countdown to the start,
// the time left while running, the wait after the results), and the results screen at the
// end of a round: the podium (the best three) and this player's own rank.
//
// Fed by the client's "round" and "results" events; `update()` runs every animation frame
// and counts the clock down between ticks. Hunts without rounds never send either event, so
// nothing here shows for them.

const $ = (id) => document.getElementById(id);

/** "1st", "2nd", "3rd", "4th", ..., "11th", "12th", "13th", "21st". */
export function ordinal(n) {
  const teen = n % 100 >= 11 && n % 100 <= 13;
  const suffix = teen ? "th" : { 1: "st", 2: "nd", 3: "rd" }[n % 10] ?? "th";
  return `${n}${suffix}`;
}

/** Seconds as "m:ss" (rounded up: "0:01" until the very end). */
export function clock(seconds) {
  const s = Math.max(0, Math.ceil(seconds));
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

export class RoundPanel {
  constructor() {
    /** The last ROUND and RESULTS (null until the hunt sends one). */
    this.round = null;
    this.results = null;
    this._dismissed = 0;      // the round whose results screen the player closed
    $("results-close").addEventListener("click", () => {
      this._dismissed = this.results?.round ?? 0;
      $("results").hidden = true;
      $("map").focus();
    });
  }

  /** A new player or hunt: nothing shown until its first ROUND. */
  reset() {
    this.round = null;
    this.results = null;
    this._dismissed = 0;
    $("round-banner").hidden = true;
    $("results").hidden = true;
  }

  onRound(round) {
    this.round = round;
    $("round-banner").hidden = false;
    $("round-banner").dataset.phase = round.phaseName;
    if (round.phaseName === "lobby" || round.phaseName === "running") $("results").hidden = true;
  }

  onResults(results, view, me) {
    this.results = results;
    $("results-title").textContent = `Round ${results.round} results`;
    const places = [[1, "second"], [0, "first"], [2, "third"]];  // drawn 2nd, 1st, 3rd
    $("podium").replaceChildren(...places.map(([i, place]) => {
      const row = results.standings[i];
      const li = document.createElement("li");
      li.className = row ? place : `${place} empty-step`;
      const mine = row && view.isMe(row.slot, row.gen);
      if (mine) li.classList.add("me");
      const who = document.createElement("span");
      who.className = "who";
      who.textContent = !row ? "–" : mine ? `${me} (you)`
        : view.nameOf(row.slot, row.gen) ?? `Player #${row.slot}`;
      const pts = document.createElement("span");
      pts.className = "pts";
      pts.textContent = row ? `${row.score} pts · ${row.found} found` : "";
      const step = document.createElement("span");
      step.className = "step";
      step.textContent = String(i + 1);
      li.append(who, pts, step);
      return li;
    }));
    const mine = $("my-rank");
    if (results.yourRank > 0) {
      mine.innerHTML = "You finished <b></b> of <span></span> with <span></span>.";
      mine.children[0].textContent = ordinal(results.yourRank);
      mine.children[1].textContent = String(results.players);
      mine.children[2].textContent = `${results.yourScore} points ` +
        `(${results.yourFound} treasure${results.yourFound === 1 ? "" : "s"})`;
    } else {
      mine.textContent = `You were not in play when round ${results.round} ended ` +
        `(${results.players} ranked).`;
    }
    if (results.round !== this._dismissed) $("results").hidden = false;
  }

  /** Every frame: the clock, from the phase's end tick and the time since the last TICK. */
  update(view, lastTickMs) {
    const round = this.round;
    if (!round || !view?.params) return;
    const rate = view.params.tickRate;
    const since = Math.min(1, (performance.now() - lastTickMs) * rate / 1000);
    const left = round.phaseEnd ? (round.phaseEnd - Math.max(view.tick, round.tick) - since) / rate
      : 0;
    const of = round.rounds ? ` of ${round.rounds}` : "";
    const last = round.rounds > 0 && round.round >= round.rounds;
    let label;
    let next = "";
    switch (round.phaseName) {
      case "lobby": label = `Round ${round.round}${of} starts in`; break;
      case "running": label = `Round ${round.round}${of} · time left`; break;
      case "results":
        label = last ? "Final results · the hunt ends in" : `Round ${round.round + 1} in`;
        next = last ? `The hunt ends in ${clock(left)}.`
          : `Round ${round.round + 1} opens its lobby in ${clock(left)}.`;
        break;
      default: label = "The hunt is over"; next = "The hunt is over: thanks for playing!";
    }
    const banner = $("round-banner");
    $("round-label").textContent = label;
    $("round-clock").textContent = round.phaseEnd ? clock(left) : "";
    banner.toggleAttribute("data-urgent", round.phaseName === "running" && left <= 10);
    banner.setAttribute("aria-label", `${label} ${clock(left)}`);
    if (next !== $("results-next").textContent) $("results-next").textContent = next;
  }
}

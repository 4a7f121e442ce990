"""The JavaScript client (server/static/hunt.js) in a real Chromium, no game server needed.

- every vector of tests/protocol_vectors.json, the same the Python tests use: the JS
  encoders produce the client vectors' bytes, the JS decoder reads the server vectors'
  bytes to their fields and refuses the invalid ones with their code and close code, so
  the two implementations can never drift apart;
- the JS view state (HuntView) fed with TICKs encoded by the Python server.protocol:
  keyframes, diffs, leaves, names, leaderboard, and a lost diff noticed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from test_browser_support import (
    BLANK_PAGE,
    ROOT,
    capture_errors,
    launched_browser,
    static_server,
)

from server.protocol import (
    DISCOVERY_RECORD,
    LEADER_RECORD,
    LEAVE_RECORD,
    VISIBLE_RECORD,
    NameEntry,
    TickUpdate,
    encode,
)

VECTORS = json.loads((ROOT / "tests" / "protocol_vectors.json").read_text(encoding="utf-8"))
# The JS client sends moves in binary; the JSON text form is for scripts and consoles.
BINARY_VALID = [v for v in VECTORS["valid"] if v["frame"] == "binary"]
SERVER_INVALID = [v for v in VECTORS["invalid"] if v["direction"] == "server_to_client"]

#: Client vectors that an encoder can be asked for: the JS call that must refuse them.
ENCODER_REFUSALS = {
    "hello-name-control-char": 'P.encodeHello({name: "A\\na", hunt: "forest"})',
    "hello-name-empty": 'P.encodeHello({name: "", hunt: "forest"})',
    "hello-ticket-too-long": 'P.encodeHello({name: "A", hunt: "f", ticket: "x".repeat(717)})',
    "hello-ticket-space": 'P.encodeHello({name: "Ada", hunt: "forest", ticket: "abc def"})',
    "hello-ticket-not-ascii": 'P.encodeHello({name: "Ada", hunt: "forest", ticket: "abc\\xe9"})',
    "moves-nan-direction": "P.encodeMoves([{seq: 1, dx: NaN, dy: 0}])",
    "moves-inf-direction": "P.encodeMoves([{seq: 1, dx: 1, dy: -Infinity}])",
    "moves-seq-zero": "P.encodeMoves([{seq: 0, dx: 1, dy: 0}])",
    "moves-seq-2-63": "P.encodeMoves([{seq: 2n ** 63n, dx: 1, dy: 0}])",
    "moves-count-zero": "P.encodeMoves([])",
    "moves-oversized": "P.encodeMoves(Array.from({length: 65}, () => ({seq: 1, dx: 1, dy: 0})))",
}

# Runs in the page: every vector through hunt-protocol.js, results keyed by vector name.
RUN_VECTORS = """async ([vectors, refusals]) => {
  const P = await import('/server/static/hunt.js');
  const hex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, '0')).join('');
  const bytes = (h) => Uint8Array.from(h.match(/../g) ?? [], (x) => parseInt(x, 16));
  const str = (n) => String(n);
  const asFields = (m) => {
    if (m.type === 'welcome') return {
      player_id: str(m.playerId), resume_token: hex(m.resumeToken), tick: str(m.tick),
      ack: str(m.ack), width: m.width, height: m.height, player_speed: m.playerSpeed,
      tick_rate: m.tickRate, discovery_radius: m.discoveryRadius, hint_radius: m.hintRadius,
      view_radius: m.viewRadius, hint_levels: m.hintLevels, spawn_x: m.spawnX,
      spawn_y: m.spawnY, resumed: m.resumed, version: m.version};
    if (m.type === 'refused' || m.type === 'error')
      return {code: m.code, message: m.message, close_code: m.closeCode};
    if (m.type === 'redirect') return {url: m.url, hunt: m.hunt, node: m.node};
    if (m.type === 'round') return {
      round: m.round, phase: m.phase, tick: str(m.tick), phase_start: str(m.phaseStart),
      phase_end: str(m.phaseEnd), rounds: m.rounds, treasures: m.treasures, respawn: m.respawn,
      end: m.end, target_score: str(m.targetScore)};
    if (m.type === 'results') return {
      round: m.round, tick: str(m.tick), players: m.players, your_rank: m.yourRank,
      your_score: str(m.yourScore), your_found: m.yourFound,
      standings: m.standings.map((r) => ({rank: r.rank, slot: r.slot, gen: r.gen,
        found: r.found, score: str(r.score), last_tick: str(r.lastTick)}))};
    return {
      tick: str(m.tick), ack: str(m.ack), x: m.x, y: m.y, score: str(m.score), hint: m.hint,
      visible: m.visible, keyframe: m.keyframe,
      discoveries: m.discoveries.map((d) => ({...d, value: str(d.value), score: str(d.score)})),
      leaderboard: m.leaderboard && m.leaderboard.map((r) => ({...r, score: str(r.score)})),
      leaves: m.leaves, names: m.names};
  };
  const out = {};
  for (const v of vectors.valid) {
    try {
      const f = v.fields;
      if (v.message === 'HELLO') out[v.name] = hex(P.encodeHello(
        {name: f.name, hunt: f.hunt, version: f.version, resumeToken: f.resume_token,
         ticket: f.ticket}));
      else if (v.message === 'MOVES') out[v.name] = hex(P.encodeMoves(
        f.moves.map((m) => ({seq: BigInt(m.seq), dx: m.dx, dy: m.dy}))));
      else if (v.message === 'BYE') out[v.name] = hex(P.encodeBye());
      else {
        // Decode from an offset inside a bigger buffer: views must honour byteOffset.
        const padded = new Uint8Array(v.hex.length / 2 + 3);
        padded.set(bytes(v.hex), 3);
        out[v.name] = asFields(P.decodeServerFrame(padded.subarray(3)));
      }
    } catch (e) { out[v.name] = {threw: String(e)}; }
  }
  for (const v of vectors.invalid) {
    if (v.direction !== 'server_to_client') continue;
    try { out[v.name] = {accepted: asFields(P.decodeServerFrame(bytes(v.hex).buffer))}; }
    catch (e) { out[v.name] = {name: e.name, code: e.code, close_code: e.closeCode,
                               remote: e.remote, message: e.message}; }
  }
  for (const [name, expr] of Object.entries(refusals)) {
    try { out['encode:' + name] = {accepted: hex(eval(expr))}; }
    catch (e) { out['encode:' + name] = {name: e.name, code: e.code, close_code: e.closeCode,
                                         remote: e.remote, message: e.message}; }
  }
  return out;
}"""


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    with launched_browser() as browser, static_server() as url:
        page = browser.new_page()
        errors = capture_errors(page)
        page.goto(url + BLANK_PAGE)
        yield page
        assert not errors, errors


@pytest.fixture(scope="module")
def results(page: Any) -> dict[str, Any]:
    return page.evaluate(RUN_VECTORS, [VECTORS, ENCODER_REFUSALS])


@pytest.mark.parametrize("vector", BINARY_VALID, ids=lambda v: v["name"])
def test_valid_vector(results: dict[str, Any], vector: dict[str, Any]):
    got = results[vector["name"]]
    if vector["direction"] == "client_to_server":
        assert got == vector["hex"], "the JS encoder must produce the vector's bytes"
    else:
        assert got == vector["fields"], "the JS decoder must read the vector's fields"


@pytest.mark.parametrize("vector", SERVER_INVALID, ids=lambda v: v["name"])
def test_invalid_server_frame_is_refused(results: dict[str, Any], vector: dict[str, Any]):
    got = results[vector["name"]]
    assert got.get("name") == "ProtocolError", got
    assert (got["code"], got["close_code"]) == (vector["code"], vector["close_code"]), got
    assert got["remote"] is True


@pytest.mark.parametrize("name", sorted(ENCODER_REFUSALS))
def test_encoder_refuses_what_the_server_would_refuse(results: dict[str, Any], name: str):
    vector = next(v for v in VECTORS["invalid"] if v["name"] == name)
    got = results[f"encode:{name}"]
    assert got.get("name") == "ProtocolError", got
    assert (got["code"], got["close_code"]) == (vector["code"], vector["close_code"]), got
    assert got["remote"] is False, "refusing to encode is this side's fault"


def test_every_vector_is_covered():
    covered = {v["name"] for v in BINARY_VALID + SERVER_INVALID} | set(ENCODER_REFUSALS)
    text_only = {v["name"] for v in VECTORS["valid"] if v["frame"] == "text"}
    # The rest are byte-level faults in client frames that no encoder can produce.
    byte_faults = {v["name"] for v in VECTORS["invalid"]
                   if v["direction"] == "client_to_server" and v["name"] not in ENCODER_REFUSALS}
    assert covered | text_only | byte_faults == {v["name"] for v in
                                                VECTORS["valid"] + VECTORS["invalid"]}


# ------------------------------------------------------------------ the view state

def visible(*rows: tuple[int, int, int, float, float]) -> np.ndarray:
    return np.array(list(rows), VISIBLE_RECORD)


def tick_hex(tick: int, **fields: Any) -> str:
    fields.setdefault("x", 10.0)
    fields.setdefault("y", 20.0)
    base = {"ack": 0, "score": 0, "hint": 0}
    return encode(TickUpdate(tick=tick, **{**base, **fields})).hex()


WELCOME_HEX = next(v["hex"] for v in VECTORS["valid"] if v["name"] == "welcome-join")
APPLY = """async ([welcome, frames]) => {
  const P = await import('/server/static/hunt.js');
  const bytes = (h) => Uint8Array.from(h.match(/../g) ?? [], (x) => parseInt(x, 16));
  const view = new P.HuntView();
  view.welcome(P.decodeServerFrame(bytes(welcome)));
  const states = [];
  for (const frame of frames) {
    const applied = view.apply(P.decodeServerFrame(bytes(frame)));
    states.push({
      applied, tick: view.tick, me: {...view.me},
      players: [...view.players.values()].map((p) => ({...p, name: view.nameOf(p.slot, p.gen)})),
      leaderboard: view.leaderboard.map((r) => ({...r, name: view.nameOf(r.slot, r.gen)})),
      recent: view.recent.length,
      lerp: [...view.players.values()].map((p) => P.lerpPosition(p, 0.5, view.tick)),
    });
  }
  return states;
}"""


def test_view_applies_keyframes_diffs_leaves_names_and_notices_a_lost_diff(page: Any):
    board = np.array([(7, 1, 8), (3, 1, 5)], LEADER_RECORD)
    found = np.array([(0, 12, 7, 1, 8, 8, 40.0, 41.0)], DISCOVERY_RECORD)
    frames = [
        # 0: a diff before any keyframe cannot be applied
        tick_hex(1201, visible=visible((7, 1, 1, 30.0, 30.0))),
        # 1: keyframe: 7 and 9 in view, names, leaderboard
        tick_hex(1201, keyframe=True, visible=visible((7, 1, 1, 30.0, 30.0),
                                                      (9, 2, 1, 50.0, 60.0)),
                 leaderboard=board, names=(NameEntry(3, 1, "Zoë"), NameEntry(7, 1, "Bo"),
                                           NameEntry(9, 2, "Cy"))),
        # 2: 7 moves and finds a treasure, 11 joins the view, I move
        tick_hex(1202, x=12.0, y=20.0, score=0, hint=3,
                 visible=visible((7, 1, 1, 32.0, 30.0), (11, 1, 1, 5.0, 5.0)),
                 discoveries=found, names=(NameEntry(11, 1, "Émile"),)),
        # 3: 9 leaves the hunt (LEAVE of another generation is ignored), 11 leaves the view
        tick_hex(1203, x=14.0, visible=visible((11, 1, 0, 5.0, 5.0)),
                 leaves=np.array([(9, 2), (7, 5)], LEAVE_RECORD)),
        # 4: tick 1205 after 1203: a diff was lost
        tick_hex(1205, visible=visible((7, 1, 1, 99.0, 99.0))),
        # 5: the keyframe after the resume puts everything right
        tick_hex(1210, keyframe=True, x=15.0, score=8,
                 visible=visible((7, 1, 1, 33.0, 31.0))),
    ]
    s = page.evaluate(APPLY, [WELCOME_HEX, frames])
    assert [state["applied"] for state in s] == [False, True, True, True, False, True]
    assert s[0]["tick"] == 1200 and s[0]["players"] == []

    players = {p["slot"]: p for p in s[1]["players"]}
    assert sorted(players) == [7, 9]
    assert players[7]["name"] == "Bo" and players[9]["name"] == "Cy"
    assert [(r["slot"], r["score"], r["name"]) for r in s[1]["leaderboard"]] == [
        (7, 8, "Bo"), (3, 5, "Zoë")]

    players = {p["slot"]: p for p in s[2]["players"]}
    assert sorted(players) == [7, 9, 11]
    assert (players[7]["px"], players[7]["x"], players[7]["t"]) == (30.0, 32.0, 1202)
    assert players[9]["t"] == 1201, "a player not in the diff stands still"
    assert players[11]["name"] == "Émile"
    assert s[2]["me"]["x"] == 12.0 and s[2]["me"]["px"] == 10.0 and s[2]["me"]["hint"] == 3
    assert s[2]["recent"] == 1
    assert [31.0, 30.0] in s[2]["lerp"], "halfway between ticks, 7 is drawn halfway"

    assert sorted(p["slot"] for p in s[3]["players"]) == [7]
    assert s[4]["tick"] == 1203, "a diff after a gap changes nothing"
    assert [(p["slot"], p["x"]) for p in s[5]["players"]] == [(7, 33.0)]
    assert s[5]["me"]["score"] == 8 and s[5]["tick"] == 1210


def test_constants_match_the_vectors_file(page: Any):
    js = page.evaluate("""async () => {
      const P = await import('/server/static/hunt.js');
      return {types: P.MessageType, codes: P.ErrorCode, close: P.CLOSE_CODES,
              redirect: P.CLOSE_REDIRECT, url: P.MAX_URL_BYTES, node: P.MAX_NODE_BYTES};
    }""")
    assert js["types"] == VECTORS["message_types"]
    assert {name: {"code": code, "close_code": js["close"][str(code)]}
            for name, code in js["codes"].items()} == VECTORS["error_codes"]
    assert (js["redirect"], js["url"], js["node"]) == (4010, 256, 64)


# ------------------------------------------------------------------ version 2

RUN_V2 = """async ([streams, invalid]) => {
  const P = await import('/server/static/hunt.js');
  const bytes = (h) => Uint8Array.from(h.match(/../g) ?? [], (x) => parseInt(x, 16));
  const asFields = (m) => ({
    tick: String(m.tick), ack: String(m.ack), x: m.x, y: m.y, score: String(m.score),
    hint: m.hint, visible: m.visible, keyframe: m.keyframe,
    discoveries: m.discoveries.map((d) => ({...d, value: String(d.value),
                                            score: String(d.score)})),
    leaderboard: m.leaderboard && m.leaderboard.map((r) => ({...r, score: String(r.score)})),
    leaves: m.leaves, names: m.names});
  const decoderOf = (s) => new P.TickDecoder({version: 2, width: s.width, height: s.height});
  const out = {};
  for (const s of streams) {
    const ticks = decoderOf(s);
    try { out[s.name] = s.frames.map((f) => asFields(P.decodeServerFrame(bytes(f.hex), ticks))); }
    catch (e) { out[s.name] = {threw: String(e)}; }
  }
  for (const v of invalid) {
    const s = streams.find((x) => x.name === v.stream);
    const ticks = decoderOf(s);
    try {
      for (const f of s.frames.slice(0, v.after)) P.decodeServerFrame(bytes(f.hex), ticks);
      out[v.name] = {accepted: asFields(P.decodeServerFrame(bytes(v.hex), ticks))};
    } catch (e) { out[v.name] = {name: e.name, code: e.code, close_code: e.closeCode,
                                 remote: e.remote, message: e.message}; }
  }
  out.version = P.PROTOCOL_VERSION;
  out.hello = Array.from(P.encodeHello({name: 'Ada', hunt: 'forest'}).slice(0, 2));
  return out;
}"""


@pytest.fixture(scope="module")
def results_v2(page: Any) -> dict[str, Any]:
    return page.evaluate(RUN_V2, [VECTORS["tick_v2"], VECTORS["tick_v2_invalid"]])


@pytest.mark.parametrize("stream", VECTORS["tick_v2"], ids=lambda s: s["name"])
def test_v2_stream_decodes_to_its_fields(results_v2: dict[str, Any], stream: dict[str, Any]):
    assert results_v2[stream["name"]] == [f["fields"] for f in stream["frames"]]


@pytest.mark.parametrize("vector", VECTORS["tick_v2_invalid"], ids=lambda v: v["name"])
def test_v2_invalid_frame_is_refused(results_v2: dict[str, Any], vector: dict[str, Any]):
    got = results_v2[vector["name"]]
    assert got.get("name") == "ProtocolError", got
    assert (got["code"], got["close_code"], got["remote"]) == (
        vector["code"], vector["close_code"], True), got


def test_js_client_speaks_version_2_by_default(results_v2: dict[str, Any]):
    assert results_v2["version"] == 2 and results_v2["hello"] == [0x01, 2]

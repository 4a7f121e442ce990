"""Issue 4: a real server process with real clients, killed with SIGKILL, recovered.

Each round starts ``treasure-hunt serve`` on a data dir, has clients play over
real WebSockets (the first round joins, later rounds resume with the tokens the
server gave), records everything the server told them, then kills the server
with SIGKILL at a random moment. After each restart: the recovered tick is at
least the last tick any client was told about, every client's score is at
least the last score it was told (and every discovery it was told of is in
the state), and the recovered state hash equals an independent replay of the
journal in another process (``treasure-hunt replay``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from server.protocol import (
    MAX_SERVER_FRAME_BYTES,
    Hello,
    Move,
    Moves,
    TickDecoder,
    TickUpdate,
    Welcome,
    decode_server_frame,
    encode,
)

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "server"]
CONFIG = """
[server]
resume_grace = 120.0
[engine]
max_players = 64
max_treasures = 400
[[hunt]]
name = "cave"
width = 120.0
height = 120.0
treasures = 300
discovery_radius = 6.0
hint_radius = 30.0
respawn_delay = 5
player_speed = 60.0
seed = 11
"""
CLIENTS = 4
ROUNDS = 3


class Told:
    """What the server told one client (the things that must survive a crash)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.token: bytes | None = None
        self.player_id = 0
        self.tick = 0
        self.score = 0
        self.seq = 0
        #: (tick, slot, gen, score after) of every discovery the client was told of.
        self.discoveries: list[tuple[int, int, int, int]] = []


def _start(data_dir: Path, config: Path) -> tuple[subprocess.Popen[str], str, dict]:
    proc = subprocess.Popen(
        [*CLI, "serve", "--config", str(config), "--port", "0", "--http-port", "-1",
         "--data-dir", str(data_dir), "--log-format", "json"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    recovered: dict = {}
    other: list[str] = []
    assert proc.stderr is not None
    for _ in range(200):
        line = proc.stderr.readline()
        if not line:
            break
        if not line.startswith("{"):
            other.append(line)
            continue
        event = json.loads(line)
        if event["event"] == "recovered":
            recovered = event
        if event["event"] == "serving":
            return proc, event["ws_url"], recovered
    proc.kill()
    raise AssertionError(f"server did not start: {''.join(other)}{proc.stderr.read()}")


def _stop(proc: subprocess.Popen[str], signum: int) -> int:
    proc.send_signal(signum)
    try:
        return proc.wait(20)
    finally:
        proc.kill()
        if proc.stderr is not None:
            proc.stderr.close()


async def _play(url: str, told: Told, rng: random.Random, stop: trio.Event) -> None:
    hello = Hello(told.name, "cave", resume_token=told.token)
    ws = None
    try:
        async with open_websocket_url(url, max_message_size=MAX_SERVER_FRAME_BYTES) as ws:
            await ws.send_message(encode(hello))
            welcome = decode_server_frame(await ws.get_message())
            assert isinstance(welcome, Welcome), welcome
            if told.token is not None:
                assert welcome.resumed and welcome.player_id == told.player_id
                told.seq = max(told.seq, welcome.ack)
            told.token, told.player_id = welcome.resume_token, welcome.player_id
            ticks = TickDecoder.for_welcome(welcome)  # version 2: compact TICKs
            first = True
            while not stop.is_set():
                update = decode_server_frame(await ws.get_message(), ticks)
                assert isinstance(update, TickUpdate)
                if first and told.tick:
                    # A resume after the crash: nothing this client was told is lost.
                    assert update.keyframe
                    assert update.tick > told.tick, (update.tick, told.tick)
                    assert update.score >= told.score, (told.name, update.score, told.score)
                first = False
                told.tick, told.score = update.tick, update.score
                for d in update.discoveries:
                    told.discoveries.append((update.tick, int(d["slot"]), int(d["gen"]),
                                             int(d["score"])))
                if rng.random() < 0.5:
                    told.seq += 1
                    await ws.send_message(encode(Moves((Move(
                        told.seq, rng.uniform(-1, 1), rng.uniform(-1, 1)),))))
    except (ConnectionClosed, OSError, trio.BrokenResourceError):
        pass  # the server was killed under us: expected
    finally:
        if ws is not None:
            # trio-websocket 0.12 leaves the socket open after an abnormal closure
            # (_abort_web_socket sets the close reason, so aclose returns early).
            await ws._stream.aclose()


async def _round(url: str, clients: list[Told], rng: random.Random, proc: subprocess.Popen,
                 seconds: float) -> None:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        for told in clients:
            nursery.start_soon(_play, url, told, random.Random(rng.random()), stop)
        await trio.sleep(seconds)
        os.kill(proc.pid, signal.SIGKILL)  # at a random moment, mid-tick or not
        stop.set()
        # The clients see the connection drop and return; cancel only as a last resort.
        nursery.cancel_scope.deadline = trio.current_time() + 10


def test_sigkill_rounds_lose_nothing_told(tmp_path: Path) -> None:
    config = tmp_path / "cave.toml"
    config.write_text(CONFIG)
    data_dir = tmp_path / "data"
    rng = random.Random(20261122)
    clients = [Told(f"p{i}") for i in range(CLIENTS)]
    told_discoveries = 0
    for _ in range(ROUNDS):
        proc, url, recovered = _start(data_dir, config)
        try:
            if any(c.tick for c in clients):
                last_told = max(c.tick for c in clients)
                assert recovered, "a restart after a crash must recover"
                assert recovered["tick"] >= last_told, (recovered, last_told)
            trio.run(_round, url, clients, rng, proc, rng.uniform(1.5, 3.0))
        finally:
            _stop(proc, signal.SIGKILL)
        assert all(c.tick > 0 for c in clients), "every client played"
        told_discoveries = sum(len(c.discoveries) for c in clients)
    # A last restart checks the last round too, then an independent replay must agree.
    proc, url, recovered = _start(data_dir, config)
    try:
        assert recovered["tick"] >= max(c.tick for c in clients)
        trio.run(_resume_all, url, clients)
    finally:
        status = _stop(proc, signal.SIGTERM)
    assert status == 0, "SIGTERM shuts the server down cleanly"
    out = tmp_path / "replay.json"
    subprocess.run([*CLI, "replay", str(data_dir), "--until", str(recovered["tick"]),
                    "--verify", "--quiet", "--json", str(out)], check=True, timeout=120,
                   stdout=subprocess.DEVNULL)
    replay = json.loads(out.read_text())
    assert replay["state_hash"] == recovered["state_hash"]
    assert told_discoveries > 0, "the test world is dense enough for discoveries"


async def _resume_all(url: str, clients: list[Told]) -> None:
    """Every client resumes once more: its first keyframe holds all it was told."""
    with trio.fail_after(20):
        for told in clients:
            async with open_websocket_url(url, max_message_size=MAX_SERVER_FRAME_BYTES) as ws:
                await ws.send_message(encode(Hello(told.name, "cave", resume_token=told.token)))
                welcome = decode_server_frame(await ws.get_message())
                assert isinstance(welcome, Welcome) and welcome.resumed
                update = decode_server_frame(await ws.get_message(),
                                             TickDecoder.for_welcome(welcome))
                assert update.keyframe and update.score >= told.score
                mine = [d for d in told.discoveries if d[1] == told.player_id & 0xFFFFFFFF]
                assert all(update.score >= d[3] for d in mine)

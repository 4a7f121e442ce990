"""Resume tokens at rest (issue 11, section 4): only their hashes reach the data dir, files
are the owner's alone, and a data dir written before (plaintext tokens) still recovers.

Real servers in this process on a real data dir; the old format is written by the
journal itself, told to write segment format 1 and given what the server used to pass it
(the tokens themselves), so the bytes are the ones an older server left.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import trio

from server.client import connect
from server.durability import Journal, _format, token_hash
from tickengine import EngineConfig, HuntParams, World

pytestmark = pytest.mark.usefixtures("collect_garbage")

HUNT = {"name": "demo", "width": 500.0, "height": 500.0, "treasures": 10, "seed": 3}
ENGINE = {"max_players": 64, "max_treasures": 64}


async def start(serve, data_dir: Path):
    return await serve(HUNT, engine=ENGINE, data_dir=str(data_dir), http_port=-1,
                       snapshot_every=5)


def every_file(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


async def test_only_hashes_at_rest_owner_only_and_tokens_still_resume(serve, tmp_path) -> None:
    data = tmp_path / "data"
    srv = await start(serve, data)
    async with connect(srv.url, "ann", "demo") as ann:
        token = ann.resume_token
        for _ in range(12):  # past a snapshot, so the token is in one and in the journal
            await ann.next_tick()
    srv.app.shutdown()
    with trio.fail_after(10):
        await srv.app.hub.ticker_done.wait()
    await trio.sleep(0.2)  # the journal closes after the ticker
    files = every_file(data)
    assert any(p.name.startswith("snapshot-") for p in files)
    blobs = b"".join(p.read_bytes() for p in files)
    assert token not in blobs and token.hex().encode() not in blobs
    assert token_hash(token) in blobs or token_hash(token).hex().encode() in blobs
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p

    again = await start(serve, data)
    async with connect(again.url, "ann", "demo", resume_token=token) as back:
        assert back.welcome.resumed and back.player_id == ann.player_id
        assert back.resume_token == token
    with pytest.raises(Exception, match="RESUME_INVALID"):
        async with connect(again.url, "eve", "demo", resume_token=token_hash(token)):
            pass


def write_old_data_dir(data: Path) -> dict[str, bytes]:
    """What an older server left: segment format 1, tokens in plaintext in the journal's
    joins and in the snapshot's meta (without the "tokens" key). Returns name -> token:
    "old_snap" joins before a snapshot (its token is in the snapshot's meta), "old_journal"
    after it (its token is only in the journal)."""
    world = World(EngineConfig(**ENGINE), [HuntParams(**HUNT)])
    tokens = {"old_snap": os.urandom(16), "old_journal": os.urandom(16)}
    players: list[list] = []
    none = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64),
            np.zeros(0, np.float64))
    fmt = _format.SEGMENT_FORMAT
    _format.SEGMENT_FORMAT = 1
    try:
        journal = Journal(data, fsync="off", snapshot_every=4, hash_every=2)
        journal.start(world, {"created_hunts": 0, "players": []})

        def step(joins: list) -> None:  # the server's order: tick, journal, snapshot
            world.tick()
            t = world.tick_number
            journal.append_tick(t, joins=joins, moves=none,
                                state_hash=world.state_hash() if journal.wants_hash(t)
                                else None)
            journal.maybe_snapshot(world, {"created_hunts": 0, "players": list(players)})

        for name in ("old_snap", "old_journal"):
            pid = world.join(0)
            step([(pid, 0, name, tokens[name])])
            players.append([pid, 0, name, tokens[name].hex()])
            for _ in range(4):  # a snapshot after each join
                step([])
        players.pop()  # "old_journal" joined after the last snapshot...
        step([])
        journal.wait_snapshot()
        journal.close()
    finally:
        _format.SEGMENT_FORMAT = fmt
    return tokens


async def test_a_data_dir_with_plaintext_tokens_recovers_and_its_players_resume(
        serve, tmp_path) -> None:
    data = tmp_path / "old"
    tokens = write_old_data_dir(data)
    seg = next(p for p in every_file(data) if p.name.startswith("journal-"))
    assert b'"format": 1' in seg.read_bytes()[:200] and tokens["old_journal"] in seg.read_bytes()
    srv = await start(serve, data)
    assert {s.name for s in srv.hub.sessions.values()} == set(tokens)
    for name, token in tokens.items():
        async with connect(srv.url, name, "demo", resume_token=token) as back:
            assert back.welcome.resumed, name
    # From now on the data dir holds hashes: the next snapshot rewrites the meta.
    async with connect(srv.url, "new", "demo") as new:
        for _ in range(8):
            await new.next_tick()
    newest = max((p for p in every_file(data) if p.name.startswith("snapshot-")),
                 key=lambda p: p.stat().st_mtime)
    assert tokens["old_snap"].hex().encode() not in newest.read_bytes()
    assert token_hash(tokens["old_snap"]).hex().encode() in newest.read_bytes()

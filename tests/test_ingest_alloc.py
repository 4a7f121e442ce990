"""Issue 3: the ingest path keeps no memory per move (measured with tracemalloc).

Masked client frames go through the server's frame parser and into a MoveBatch,
as server/shell/_app.py's read loop does; after warming up, N more frames leave no
more live blocks behind than a few (transient objects are freed at once).
"""

from __future__ import annotations

import struct
import tracemalloc

from server.protocol import MAX_CLIENT_FRAME_BYTES, Move, MoveBatch, Moves, encode
from server.shell._wsframes import OP_BINARY, FrameParser


def _masked(payload: bytes, mask: bytes = b"\x11\x22\x33\x44") -> bytes:
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x80 | OP_BINARY, 0x80 | len(payload)) + mask + body


def _ingest(parser: FrameParser, batch: MoveBatch, frames: list[bytes]) -> None:
    for raw in frames:
        parser.feed(raw)
        msg = parser.next()
        assert msg is not None
        batch.add(msg.payload, 7)
        if batch.room < 64:
            batch.clear()


def test_ingest_keeps_no_memory_per_move() -> None:
    frames = [_masked(encode(Moves((Move(seq, 0.5, -1.0),)))) for seq in range(1, 20_001)]
    parser, batch = FrameParser(MAX_CLIENT_FRAME_BYTES), MoveBatch(4096)
    _ingest(parser, batch, frames[:1000])  # warm-up: caches, free lists
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        _ingest(parser, batch, frames[1000:])
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(s.count_diff for s in after.compare_to(before, "filename")
                if s.count_diff > 0)
    # 19,000 moves: a per-move leak would show thousands of blocks.
    assert grown < 50, f"{grown} blocks kept after 19,000 moves"

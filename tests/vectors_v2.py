"""The version-2 TICK vectors of tests/protocol_vectors.json, generated from server.protocol.

Version-2 TICKs depend on the connection's earlier TICKs, so their vectors are
streams: the hunt's size (from WELCOME), then frames in order, each with the
update it decodes to. ``tick_v2_invalid`` frames are refused after a stream's
first ``after`` frames. tests/test_compact_protocol.py checks that the file holds
exactly what :func:`build` makes; after an intended change of version 2, run

    .venv/bin/python tests/vectors_v2.py

to write the two sections again (the rest of the file is left as it is).
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.protocol import (  # noqa: E402
    DISCOVERY_RECORD,
    LEADER_RECORD,
    PROTOCOL_VERSION,
    VISIBLE_RECORD,
    CompactTickWriter,
    ErrorCode,
    TickDecoder,
    encode_hunt_section,
)
from server.protocol._constants import CLOSE_CODES  # noqa: E402

PATH = ROOT / "tests" / "protocol_vectors.json"
#: 64-bit integers travel as decimal strings (JavaScript numbers stop at 2**53).
BIG = {"tick", "ack", "score", "value"}


def to_json(name: str, value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [{k: to_json(k, row[k].item()) for k in value.dtype.names} for row in value]
    if isinstance(value, tuple):
        return [{"slot": e.slot, "gen": e.gen, "name": e.name} for e in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if name in BIG else int(value)
    return value


def fields_of(update: Any) -> dict[str, Any]:
    names = ("tick", "ack", "x", "y", "score", "hint", "visible", "keyframe", "discoveries",
             "leaderboard", "leaves", "names")
    return {n: to_json(n, getattr(update, n)) for n in names}


def visible(*rows: tuple[int, int, int, float, float]) -> np.ndarray:
    return np.array(list(rows), VISIBLE_RECORD)


def small_hunt() -> dict[str, Any]:
    """A hunt of 1000 x 800: the player (slot 4) and two others; one more joins, one leaves."""
    width, height = 1000.0, 800.0
    index = {4: 0, 7: 1, 9: 2, 12: 3}
    w = CompactTickWriter(index, width, height)

    def section(**kw: Any) -> bytes:
        return encode_hunt_section(index, width, height, **kw)

    everyone = [(0, 4, 1, "Zoë"), (1, 7, 1, "Ann"), (2, 9, 3, None)]
    board = np.array([(9, 3, 12)], LEADER_RECORD)
    found = np.array([(0, 17, 7, 1, 5, 5, 531.25, 72.5)], DISCOVERY_RECORD)
    frames = [
        ("keyframe: 7 and 9 in view, the leaderboard, every player's NAME (9's unknown)",
         w.write(1201, 42, 512.5, 59.25, 0, 2, visible((7, 1, 1, 530.5, 70.0),
                                                       (9, 3, 1, 10.0, 20.0)),
                 section(leaderboard=board, names=everyone), keyframe=True)),
        ("a diff where nothing changed", w.write(1202, 42, 512.5, 59.25, 0, 2, visible())),
        ("the player moved and one move was applied; 7 moved, 9 left the view",
         w.write(1203, 43, 515.0, 59.25, 0, 2, visible((7, 1, 1, 535.0, 70.0),
                                                       (9, 3, 0, 0.0, 0.0)))),
        ("7 found treasure 17; the leaderboard changed; 12 joined and is in view; hint 3",
         w.write(1204, 43, 517.5, 59.25, 0, 3, visible((12, 2, 1, 600.0, 100.0)),
                 section(discoveries=found, leaderboard=np.array([(9, 3, 12), (7, 1, 5)],
                                                                 LEADER_RECORD),
                         names=[(3, 12, 2, "Cy")]))),
        ("9 left the hunt",
         w.write(1205, 43, 517.5, 59.25, 0, 3, visible(),
                 section(leaves=np.array([(9, 3)], [("slot", "<u4"), ("gen", "<u4")])))),
        ("a keyframe after a lost tick: everything again",
         w.write(1210, 44, 520.0, 59.25, 5, 1, visible((12, 2, 1, 601.0, 101.0)),
                 section(leaderboard=np.array([(7, 1, 5)], LEADER_RECORD),
                         names=[(0, 4, 1, "Zoë"), (1, 7, 1, "Ann"), (3, 12, 2, "Cy")]),
                 keyframe=True)),
    ]
    decoder = TickDecoder(2, width, height)
    out = []
    for description, frame in frames:
        out.append({"description": description, "hex": frame.hex(),
                    "fields": fields_of(decoder.decode(frame))})
    return {"name": "tick-v2-small-hunt", "width": width, "height": height, "frames": out}


def _invalid(name: str, after: int, frame: bytes, code: ErrorCode, why: str) -> dict[str, Any]:
    return {"name": name, "stream": "tick-v2-small-hunt", "after": after, "hex": frame.hex(),
            "code": int(code), "close_code": CLOSE_CODES[code], "description": why}


def invalid(stream: dict[str, Any]) -> list[dict[str, Any]]:
    first = bytes.fromhex(stream["frames"][0]["hex"])
    # After the keyframe of tick 1201, a diff's tick byte is 0xb2 (1202 mod 256).
    M, V = ErrorCode.MALFORMED, ErrorCode.INVALID_VALUE
    nan = struct.pack("<dd", math.nan, 0.0)
    return [
        _invalid("tick-v2-diff-first", 0, bytes.fromhex("8300"), M,
                 "a diff before the connection's first keyframe"),
        _invalid("tick-v2-reserved-flag", 1, bytes.fromhex("8380"), M, "flags bit 7 set"),
        _invalid("tick-v2-keyframe-without-ack", 0, bytes.fromhex("831d01") + first[4:], M,
                 "a keyframe without bit 1"),
        _invalid("tick-v2-varint-cut", 1, bytes.fromhex("8302b280"), M,
                 "the ack's varint runs past the end"),
        _invalid("tick-v2-varint-too-long", 1, bytes.fromhex("8302b2") + b"\xff" * 10 + b"\x01",
                 M, "a varint of 11 bytes"),
        _invalid("tick-v2-trailing-byte", 1, bytes.fromhex("8300b200"), M,
                 "a byte after the last part"),
        _invalid("tick-v2-unknown-index", 1, bytes.fromhex("8320b20109") + b"\0" * 4, V,
                 "a VISIBLE record of index 4, which no NAME entry announced"),
        _invalid("tick-v2-hint-too-high", 1, bytes.fromhex("8310b210"), V, "hint 16"),
        _invalid("tick-v2-nan-position", 1, bytes.fromhex("8304b2") + nan, V,
                 "a NaN position"),
        _invalid("tick-v2-empty-hunt-part", 1, bytes.fromhex("8340b200"), M,
                 "a hunt part with no section"),
        _invalid("tick-v2-reserved-section", 1, bytes.fromhex("8340b210"), M,
                 "a hunt part with section bit 4 set"),
        _invalid("tick-v2-name-too-long", 1, bytes.fromhex("8340b2080105050121") + b"a" * 33, V,
                 "a NAME of 33 bytes"),
    ]


def build() -> dict[str, Any]:
    stream = small_hunt()
    return {"tick_v2": [stream], "tick_v2_invalid": invalid(stream)}


def main() -> None:
    vectors = json.loads(PATH.read_text(encoding="utf-8"))
    vectors["protocol_version"] = PROTOCOL_VERSION
    vectors.update(build())
    PATH.write_text(json.dumps(vectors, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()

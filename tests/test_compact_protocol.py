"""Version 2 of the wire protocol (docs/protocol.md, "TICK, version 2"), no sockets.

- the ``tick_v2`` vectors of tests/protocol_vectors.json are exactly what
  tests/vectors_v2.py generates, decode to their fields, and the doc's worked
  example is one of them; the ``tick_v2_invalid`` frames are refused with their codes;
- random streams written by ``CompactTickWriter`` decode to what was written
  (positions to the quantization step); random bytes raise only ProtocolError;
- HELLO and WELCOME carry either version; other versions are BAD_VERSION.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectors_v2 import build, fields_of

from server.protocol import (
    MAX_SEQ,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    VISIBLE_RECORD,
    CompactTickWriter,
    ErrorCode,
    Hello,
    ProtocolError,
    RemoteProtocolError,
    TickDecoder,
    Welcome,
    decode_client_frame,
    decode_server_frame,
    encode,
    encode_hunt_section,
)
from server.protocol._compact import QUANT, dequantize, quantize, unzigzag, zigzag

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "tests" / "protocol_vectors.json").read_text(encoding="utf-8"))
DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
STREAMS = {s["name"]: s for s in VECTORS["tick_v2"]}


def test_the_vectors_are_what_the_generator_makes():
    assert PROTOCOL_VERSION == 2
    assert sorted(SUPPORTED_VERSIONS) == [1, 2]
    assert VECTORS["protocol_version"] == PROTOCOL_VERSION
    assert {k: VECTORS[k] for k in ("tick_v2", "tick_v2_invalid")} == build(), \
        "run .venv/bin/python tests/vectors_v2.py"


@pytest.mark.parametrize("stream", VECTORS["tick_v2"], ids=lambda s: s["name"])
def test_stream_decodes_to_its_fields(stream):
    decoder = TickDecoder(2, stream["width"], stream["height"])
    for k, frame in enumerate(stream["frames"]):
        update = decode_server_frame(bytes.fromhex(frame["hex"]), decoder)
        assert fields_of(update) == frame["fields"], k


@pytest.mark.parametrize("vector", VECTORS["tick_v2_invalid"], ids=lambda v: v["name"])
def test_invalid_frame_is_refused_after_its_prefix(vector):
    stream = STREAMS[vector["stream"]]
    decoder = TickDecoder(2, stream["width"], stream["height"])
    for frame in stream["frames"][:vector["after"]]:
        decoder.decode(bytes.fromhex(frame["hex"]))
    with pytest.raises(RemoteProtocolError) as info:
        decode_server_frame(bytes.fromhex(vector["hex"]), decoder)
    assert (info.value.code, info.value.close_code) == (vector["code"], vector["close_code"])


def test_doc_worked_example_is_a_vector():
    examples = re.findall(r"<!-- vector2: (\S+) (\d+) -->\s*\n```text\n(.*?)```", DOC, re.S)
    assert examples
    for name, k, block in examples:
        assert re.sub(r"\s+", "", block) == STREAMS[name]["frames"][int(k)]["hex"]


def test_doc_names_the_flag_bits_of_the_code():
    from server.protocol import _compact as c

    row = next(line for line in DOC.splitlines() if line.startswith("| 1 | always | u8 | flags"))
    for bit, name in enumerate(("KEYFRAME", "ACK", "POSITION", "SCORE", "HINT", "VIEW",
                                "EVENTS")):
        assert f"bit {bit} {name}" in row and getattr(c, name) == 1 << bit


def test_hello_and_welcome_carry_either_version():
    for version in (1, 2):
        hello = Hello("ann", "forest", version)
        assert decode_client_frame(encode(hello)) == hello
        welcome = Welcome(1, b"t" * 16, 5, 0, 100.0, 100.0, 10.0, 20, 5.0, 50.0, 60.0, 5,
                          1.0, 2.0, version=version)
        assert decode_server_frame(encode(welcome)) == welcome
        assert TickDecoder.for_welcome(welcome).version == version
    assert Hello("ann", "forest").version == 2
    for version in (0, 3, 255):
        with pytest.raises(RemoteProtocolError) as info:
            decode_client_frame(encode(Hello("ann", "forest", version)))
        assert info.value.code == ErrorCode.BAD_VERSION and "[1, 2]" in info.value.message


def test_quantization_and_zigzag():
    assert [zigzag(n) for n in (0, -1, 1, -2, 2**63 - 1, -2**63)] == \
        [0, 1, 2, 3, 2**64 - 2, 2**64 - 1]
    assert all(unzigzag(zigzag(n)) == n for n in (0, -1, 5, -2**63, 2**63 - 1))
    assert quantize(0.0, 1000.0) == 0 and quantize(1000.0, 1000.0) == QUANT
    assert quantize(-3.0, 1000.0) == 0 and quantize(1e9, 1000.0) == QUANT
    for x in np.linspace(0, 777.0, 1001, dtype=np.float32).tolist():
        assert abs(dequantize(quantize(x, 777.0), 777.0) - x) <= 777.0 / 131070 + 1e-9


# ------------------------------------------------------------------ random streams

POS = st.floats(0, 500, width=32)
OTHER = st.tuples(st.integers(0, 39), st.booleans(), POS, POS)
STEP = st.fixed_dictionaries({
    "keyframe": st.booleans(), "ack_step": st.integers(0, 3) | st.integers(0, 2**40),
    "x": st.floats(-1e3, 1e3) | st.just(1.0), "y": st.just(2.0) | st.floats(-1e3, 1e3),
    "score": st.integers(-2**63, 2**63 - 1) | st.just(0), "hint": st.integers(0, 15),
    "view": st.lists(OTHER, max_size=8, unique_by=lambda o: o[0]),
    "board": st.none() | st.lists(st.tuples(st.integers(0, 39), st.integers(-5, 10**12)),
                                  max_size=5),
})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(STEP, min_size=1, max_size=12), st.floats(1.0, 1e7), st.floats(1.0, 1e7))
def test_random_streams_decode_to_what_was_written(steps, width, height):
    index = {100 + i: i for i in range(40)}  # slot 100 + i has index i
    writer = CompactTickWriter(index, width, height)
    decoder = TickDecoder(2, width, height)
    names = [(i, 100 + i, 7, f"p{i}" if i % 3 else None) for i in range(40)]
    ack, tick = 0, 10
    for k, step in enumerate(steps):
        keyframe = step["keyframe"] or k == 0
        ack = min(ack + step["ack_step"], MAX_SEQ)
        tick += 1
        view = np.array([(100 + i, 7, int(seen), x * width / 500, y * height / 500)
                         for i, seen, x, y in step["view"]], VISIBLE_RECORD)
        board = None if step["board"] is None else np.array(
            [(100 + i, 7, s) for i, s in step["board"]],
            [("slot", "<i4"), ("gen", "<u4"), ("score", "<i8")])
        section = encode_hunt_section(index, width, height, leaderboard=board,
                                      names=names if keyframe else ())
        frame = writer.write(tick, ack, step["x"], step["y"], step["score"], step["hint"], view,
                             section, keyframe)
        update = decode_server_frame(frame, decoder)
        assert (update.tick, update.ack, update.x, update.y, update.score, update.hint,
                update.keyframe) == (tick, ack, step["x"], step["y"], step["score"],
                                     step["hint"], keyframe)
        assert update.visible["slot"].tolist() == view["slot"].tolist()
        assert update.visible["flags"].tolist() == view["flags"].tolist()
        seen = view["flags"] == 1
        err = max(width, height) / 131070 * 1.001 + 1e-4 * max(width, height)
        assert np.all(np.abs(update.visible["x"][seen].astype(float)
                             - view["x"][seen].astype(float)) <= err)
        if board is None:
            assert update.leaderboard is None
        else:
            assert update.leaderboard.tobytes() == board.tobytes()
        if keyframe:
            assert len(update.names) == len([n for n in names if n[3]])


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=80))
def test_random_bytes_raise_only_protocol_errors(data):
    stream = VECTORS["tick_v2"][0]
    decoder = TickDecoder(2, stream["width"], stream["height"])
    decoder.decode(bytes.fromhex(stream["frames"][0]["hex"]))
    with contextlib.suppress(ProtocolError):
        decode_server_frame(b"\x83" + data, decoder)

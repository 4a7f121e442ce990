"""Tests of the sans-IO wire protocol (server.protocol), no sockets anywhere.

- the byte-exact vectors of tests/protocol_vectors.json (shared with the JavaScript
  client) against the encoder, the decoders and the layout tables of docs/protocol.md;
- round trips of random valid events (hypothesis);
- fuzz: random and mutated frames into every decoder, where only ProtocolError may escape;
- the server's fast paths: MoveBatch allocates nothing per move, TickMessageWriter
  copies the engine's visible records as they lie;
- one end-to-end run against a real tickengine.World.
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import server.protocol as sp
from server.protocol import (
    DISCOVERY_RECORD,
    LEADER_RECORD,
    LEAVE_RECORD,
    MAX_CLIENT_SEQ,
    MAX_MOVES_PER_FRAME,
    MAX_SEQ,
    MOVE_RECORD,
    RESULT_RECORD,
    TICK_HEADER_BYTES,
    VISIBLE_RECORD,
    Bye,
    ErrorCode,
    ErrorMessage,
    Hello,
    LocalProtocolError,
    MessageType,
    Move,
    MoveBatch,
    Moves,
    NameEntry,
    ProtocolError,
    Redirect,
    Refused,
    RemoteProtocolError,
    Results,
    Round,
    TickMessageWriter,
    TickUpdate,
    Welcome,
    decode_client_frame,
    decode_moves_into,
    decode_server_frame,
    encode,
    encode_hunt_events,
    frame_type,
    tick_message_size,
)

ROOT = Path(__file__).resolve().parent.parent
VECTORS = json.loads((ROOT / "tests" / "protocol_vectors.json").read_text(encoding="utf-8"))
DOC = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")

EVENTS = {"HELLO": Hello, "WELCOME": Welcome, "REFUSED": Refused, "ERROR": ErrorMessage,
          "MOVES": Moves, "BYE": Bye, "TICK": TickUpdate, "REDIRECT": Redirect,
          "ROUND": Round, "RESULTS": Results}
RECORDS = {"visible": VISIBLE_RECORD, "discoveries": DISCOVERY_RECORD,
           "leaderboard": LEADER_RECORD, "leaves": LEAVE_RECORD, "standings": RESULT_RECORD}
#: 64-bit integers travel in the vectors file as decimal strings (JavaScript numbers stop at 2**53).
BIG = {"player_id", "tick", "ack", "score", "seq", "value", "phase_start", "phase_end",
       "target_score", "your_score", "last_tick"}
STRUCT_CODES = {"u8": "B", "u16": "H", "u32": "I", "u64": "Q", "i32": "i", "i64": "q",
                "f32": "f", "f64": "d", "bytes16": "16s"}


# ------------------------------------------------------------------ vector <-> event

def to_json(name: str, value: Any) -> Any:
    """A field of an event as the vectors file writes it."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, np.ndarray):
        return [{k: to_json(k, row[k].item()) for k in value.dtype.names} for row in value]
    if isinstance(value, tuple):
        return [fields_of(item) for item in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value) if name in BIG else int(value)
    return value


def fields_of(event: Any) -> dict[str, Any]:
    return {f.name: to_json(f.name, getattr(event, f.name)) for f in dataclasses.fields(event)}


def from_json(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in BIG:
        return int(value)
    if name == "resume_token":
        return bytes.fromhex(value)
    if name in RECORDS:
        dtype = RECORDS[name]
        rows = [tuple(from_json(k, row[k]) for k in dtype.names) for row in value]
        return np.array(rows, dtype)
    if name == "moves":
        return tuple(Move(**{k: from_json(k, v) for k, v in m.items()}) for m in value)
    if name == "names":
        return tuple(NameEntry(**n) for n in value)
    return value


def event_of(vector: dict[str, Any]) -> Any:
    cls = EVENTS[vector["message"]]
    return cls(**{k: from_json(k, v) for k, v in vector["fields"].items()})


def frame_of(vector: dict[str, Any]) -> bytes | str:
    return vector["text"] if vector["frame"] == "text" else bytes.fromhex(vector["hex"])


def decoder_for(direction: str):
    return decode_client_frame if direction == "client_to_server" else decode_server_frame


VALID = VECTORS["valid"]
INVALID = VECTORS["invalid"]


# ------------------------------------------------------------------ package shape

PUBLIC = {
    "Bye", "CLOSE_CODES", "CompactTickWriter", "TickDecoder", "encode_hunt_section",
    "encode_names", "CLOSE_REDIRECT", "DISCOVERY_RECORD", "ErrorCode", "ErrorMessage",
    "Hello", "HuntEvents", "END_ALL_FOUND", "END_SCORE", "END_TIME", "MAX_RESULT_ROWS",
    "PHASES", "PHASE_LOBBY", "PHASE_OVER", "PHASE_RESULTS", "PHASE_RUNNING", "RESULT_RECORD",
    "Results", "Round", "results_header",
    "LEADER_RECORD", "LEAVE_RECORD", "LocalProtocolError", "MAX_CLIENT_FRAME_BYTES",
    "MAX_CLIENT_SEQ",
    "MAX_HUNT_BYTES", "MAX_JSON_MOVE_CHARS", "MAX_MESSAGE_BYTES", "MAX_MOVES_PER_FRAME",
    "MAX_NAME_BYTES", "MAX_NODE_BYTES", "MAX_SEQ", "MAX_SERVER_FRAME_BYTES", "MAX_TICKET_BYTES",
    "MAX_URL_BYTES",
    "MOVE_RECORD", "MessageType", "Move", "MoveBatch", "Moves", "NOT_FATAL", "NO_EVENTS",
    "NameEntry", "PROTOCOL_VERSION", "ProtocolError", "REFUSAL_CODES", "RESUME_TOKEN_BYTES",
    "Redirect", "Refused", "RemoteProtocolError",
    "SUPPORTED_VERSIONS", "TICK_HEADER_BYTES", "TickMessageWriter", "TickUpdate",
    "VISIBLE_RECORD", "Welcome", "decode_client_frame", "decode_moves_into",
    "decode_server_frame", "encode", "encode_hunt_events", "frame_type", "tick_message_size",
}


def test_public_api_is_exactly_the_documented_one_from_private_modules():
    assert {n for n in vars(sp) if not n.startswith("_")} == PUBLIC
    for name in PUBLIC:
        module = getattr(getattr(sp, name), "__module__", None)
        if module and module.startswith("server.protocol"):
            assert module.split(".")[-1].startswith("_"), (name, module)


def test_import_pulls_no_io_and_no_engine():
    code = ("import sys, server.protocol; bad = {'trio', 'trio_websocket', 'tickengine', 'numba',"
            " 'logging', 'socket', 'asyncio'}; print(sorted(m for m in sys.modules"
            " if m.split('.')[0] in bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_records_match_the_engine_buffers():
    import tickengine

    assert VISIBLE_RECORD == tickengine.VISIBLE_DTYPE
    assert DISCOVERY_RECORD == tickengine.DISCOVERY_DTYPE
    assert LEADER_RECORD == tickengine.LEADER_DTYPE


def test_struct_sizes_are_the_documented_ones():
    from server.protocol import _codec, _rounds, _tick

    sizes = [s.size for s in (_codec.HELLO, _codec.WELCOME, _codec.NOTICE, _codec.MOVES_HEADER,
                              _tick.TICK_HEADER, _tick.NAME_ENTRY, _codec.REDIRECT,
                              _rounds.ROUND, _rounds.RESULTS)]
    assert sizes == [24, 112, 8, 4, TICK_HEADER_BYTES, 9, 8, 48, 40] and TICK_HEADER_BYTES == 64
    assert 4 + MOVE_RECORD.itemsize * MAX_MOVES_PER_FRAME == sp.MAX_CLIENT_FRAME_BYTES


# ------------------------------------------------------------------ the vectors file

def test_vectors_file_describes_itself():
    assert VECTORS["protocol_version"] == sp.PROTOCOL_VERSION
    assert VECTORS["message_types"] == {t.name: int(t) for t in MessageType}
    assert VECTORS["error_codes"] == {
        c.name: {"code": int(c), "close_code": sp.CLOSE_CODES[c]} for c in ErrorCode}
    for name, dtype in {**RECORDS, "move": MOVE_RECORD}.items():
        layout = VECTORS["records"][name]
        assert [tuple(f) for f in layout["fields"]] == [
            (n, dtype.fields[n][0].str, dtype.fields[n][1]) for n in dtype.names]
        assert layout["size"] == dtype.itemsize
    kinds = {v["message"] for v in VALID}
    assert kinds == set(EVENTS), "every message type has a vector"
    names = [v["name"] for v in VALID + INVALID]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("vector", VALID, ids=[v["name"] for v in VALID])
def test_valid_vector_encodes_and_decodes_exactly(vector):
    event = event_of(vector)
    frame = frame_of(vector)
    decoded = decoder_for(vector["direction"])(frame)
    assert decoded == event
    assert fields_of(decoded) == vector["fields"]
    if vector["frame"] == "binary":
        assert encode(event).hex() == vector["hex"]
        assert frame_type(frame) == MessageType[vector["message"]]


@pytest.mark.parametrize("vector", INVALID, ids=[v["name"] for v in INVALID])
def test_invalid_vector_is_refused_with_its_codes(vector):
    with pytest.raises(RemoteProtocolError) as info:
        decoder_for(vector["direction"])(frame_of(vector))
    assert (info.value.code, info.value.close_code) == (vector["code"], vector["close_code"])


# ------------------------------------------------------------------ docs/protocol.md

def doc_tables() -> dict[str, list[tuple[str, str, str, str]]]:
    """Tables marked ``<!-- layout: NAME [NAME...] -->``: rows (offset, size, type, field)."""
    tables = {}
    for match in re.finditer(r"<!-- layout: ([^>]+?) -->\s*\n((?:\|.*\n)+)", DOC):
        rows = []
        for line in match.group(2).splitlines()[2:]:
            cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
            rows.append(tuple(cells[:4]))
        for name in match.group(1).split():
            tables[name] = rows
    return tables


def test_doc_layout_tables_match_the_vectors_byte_for_byte():
    tables = doc_tables()
    checked = set()
    for vector in VALID:
        if vector["frame"] != "binary":
            continue
        frame = bytes.fromhex(vector["hex"])
        rows = tables[vector["message"]]
        expected_offset = 0
        for offset, size, kind, name in rows:
            if not (offset.isdigit() and size.isdigit()):
                break  # the variable part starts
            assert int(offset) == expected_offset, (vector["message"], name)
            code = STRUCT_CODES[kind]
            assert struct.calcsize("<" + code) == int(size), (vector["message"], name)
            (value,) = struct.unpack_from("<" + code, frame, int(offset))
            assert to_json(name, value) == vector["header"][name], (vector["name"], name)
            expected_offset += int(size)
            checked.add((vector["message"], name))
        assert set(vector["header"]) == {n for m, n in checked if m == vector["message"]}


def test_doc_record_tables_match_the_dtypes():
    tables = doc_tables()
    for name, dtype in {**RECORDS, "move": MOVE_RECORD}.items():
        rows = tables[f"record:{name}"]
        assert [r[3] for r in rows] == list(dtype.names)
        for offset, size, kind, field in rows:
            sub, at = dtype.fields[field]
            assert (int(offset), int(size)) == (at, sub.itemsize)
            assert np.dtype("<" + STRUCT_CODES[kind]) == sub


def test_doc_worked_examples_are_the_vectors():
    examples = re.findall(r"<!-- vector: (\S+) -->\s*\n```text\n(.*?)```", DOC, re.S)
    assert len(examples) >= 2
    by_name = {v["name"]: v for v in VALID}
    for name, block in examples:
        assert re.sub(r"\s+", "", block) == by_name[name]["hex"], name


def test_doc_error_table_matches_the_codes():
    section = DOC[DOC.index("<!-- errors -->"):]
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \| (\d+) \|", section, re.M)
    assert {(int(c), n, int(close)) for c, n, close in rows} == {
        (int(c), c.name, sp.CLOSE_CODES[c]) for c in ErrorCode}


def test_doc_names_the_limits():
    for name in ("MAX_NAME_BYTES", "MAX_HUNT_BYTES", "MAX_MOVES_PER_FRAME", "MAX_MESSAGE_BYTES",
                 "MAX_CLIENT_FRAME_BYTES", "MAX_SERVER_FRAME_BYTES", "MAX_JSON_MOVE_CHARS",
                 "MAX_URL_BYTES", "MAX_NODE_BYTES", "MAX_CLIENT_SEQ", "MAX_SEQ",
                 "MAX_TICKET_BYTES"):
        assert re.search(rf"`{name}` *\| *{getattr(sp, name)} *\|", DOC), name


# ------------------------------------------------------------------ strategies

def text_ok(s: str, max_bytes: int) -> bool:
    return s == s.strip() and 1 <= len(s.encode()) <= max_bytes


CHARS = st.characters(categories=("L", "N", "P", "S"), exclude_characters="\x00")
player_names = st.text(CHARS | st.just(" "), min_size=1, max_size=12).filter(
    lambda s: text_ok(s, sp.MAX_NAME_BYTES))
hunt_names = st.text(CHARS | st.just(" "), min_size=1, max_size=40).filter(
    lambda s: text_ok(s, sp.MAX_HUNT_BYTES))
f64 = st.floats(allow_nan=False, allow_infinity=False)
f32 = st.floats(allow_nan=False, allow_infinity=False, width=32)
positive = st.floats(min_value=1e-3, max_value=1e7)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
tokens = st.binary(min_size=16, max_size=16)

tickets = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E),
                  max_size=sp.MAX_TICKET_BYTES)
hellos = st.builds(Hello, player_names, hunt_names, st.just(sp.PROTOCOL_VERSION),
                   st.none() | tokens, tickets)
welcomes = st.builds(Welcome, u64, tokens, u64, st.integers(0, MAX_SEQ), positive, positive,
                     st.floats(0, 1e5), st.integers(1, 240), positive, positive, positive,
                     st.integers(1, 15), f64, f64, st.booleans())
messages = st.text(max_size=60).filter(lambda s: len(s.encode("utf-8", "replace")) <= 256)
close_codes = st.sampled_from([1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011]) | \
    st.integers(3000, 4999)
notices = st.one_of(
    st.builds(ErrorMessage, st.sampled_from(list(ErrorCode)), messages),
    st.builds(ErrorMessage, st.integers(1, 65535), messages, st.just(0) | close_codes),
    st.builds(Refused, st.sampled_from(sorted(sp.REFUSAL_CODES)), messages),
    st.builds(Refused, st.integers(1, 65535), messages, close_codes),
)
url_chars = st.characters(categories=("L", "N", "P", "S"))
urls = st.builds(lambda scheme, rest: scheme + rest, st.sampled_from(["ws://", "wss://"]),
                 st.text(url_chars, min_size=1, max_size=60)).filter(
    lambda u: len(u.encode()) <= sp.MAX_URL_BYTES and u.rstrip("/") not in ("ws:", "wss:"))
node_ids = st.just("") | player_names
redirects = st.builds(Redirect, urls, hunt_names, node_ids)
moves_events = st.builds(
    Moves, st.lists(st.builds(Move, st.integers(1, MAX_CLIENT_SEQ), f32, f32),
                    min_size=1, max_size=MAX_MOVES_PER_FRAME).map(tuple))


def raw_records(dtype: np.dtype, max_rows: int = 6) -> st.SearchStrategy[np.ndarray]:
    """Records from arbitrary bytes (NaN payloads included): they travel as they lie."""
    return st.integers(0, max_rows).flatmap(
        lambda n: st.binary(min_size=n * dtype.itemsize, max_size=n * dtype.itemsize)
    ).map(lambda b: np.frombuffer(b, dtype).copy())


name_entries = st.builds(NameEntry, u32, u32, player_names)
ticks = st.builds(
    TickUpdate, u64, st.integers(0, MAX_SEQ), f64, f64, st.integers(-(2**63), 2**63 - 1),
    st.integers(0, 15), raw_records(VISIBLE_RECORD), st.booleans(),
    raw_records(DISCOVERY_RECORD, 3), st.none() | raw_records(LEADER_RECORD),
    raw_records(LEAVE_RECORD), st.lists(name_entries, max_size=4).map(tuple))


@st.composite
def rounds(draw) -> Round:
    phase = draw(st.integers(1, 4))
    start = draw(st.integers(0, 2**40))
    end = 0 if phase == 4 else draw(st.integers(start + 1, 2**41))
    kind = draw(st.integers(0, 2))
    return Round(draw(st.integers(1, 2**32 - 1)), phase, draw(st.integers(start, 2**42)), start,
                 end, draw(u32), draw(u32), draw(st.booleans()), kind,
                 draw(st.integers(1, 2**62)) if kind == 2 else 0)


@st.composite
def results(draw) -> Results:
    rows = draw(raw_records(RESULT_RECORD, 5))
    players = draw(st.integers(len(rows), 2**32 - 1))
    return Results(draw(st.integers(1, 2**32 - 1)), draw(st.integers(1, 2**62)), players,
                   draw(st.integers(0, players)), draw(st.integers(-(2**63), 2**63 - 1)),
                   draw(u32), rows)


client_events = st.one_of(hellos, moves_events, st.just(Bye()))
server_events = st.one_of(welcomes, notices, ticks, redirects, rounds(), results())


# ------------------------------------------------------------------ round trips

@settings(max_examples=300, deadline=None)
@given(client_events)
def test_client_events_round_trip(event):
    frame = encode(event)
    assert decode_client_frame(frame) == event
    assert decode_client_frame(bytearray(frame)) == event
    assert decode_client_frame(memoryview(frame)) == event


@settings(max_examples=300, deadline=None)
@given(server_events)
def test_server_events_round_trip(event):
    frame = encode(event)
    assert decode_server_frame(frame) == event
    assert encode(decode_server_frame(frame)) == frame


@settings(max_examples=200, deadline=None)
@given(moves_events)
def test_moves_round_trip_through_the_batch_decoder(event):
    n = len(event.moves)
    seqs, dxs, dys, ids = (np.zeros(n + 3, t) for t in (np.int64, np.float64, np.float64,
                                                        np.int64))
    assert decode_moves_into(encode(event), seqs, dxs, dys, 3, ids=ids, player_id=9) == n
    assert [Move(int(s), float(x), float(y)) for s, x, y in zip(seqs[3:], dxs[3:], dys[3:],
                                                               strict=True)] == list(event.moves)
    assert ids[3:].tolist() == [9] * n and ids[:3].tolist() == [0, 0, 0]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, MAX_CLIENT_SEQ), f32, f32)
def test_json_move_decodes_like_the_binary_one(seq, dx, dy):
    text = json.dumps({"seq": seq, "dx": dx, "dy": dy})
    assert decode_client_frame(text) == Moves((Move(seq, dx, dy),))
    batch = MoveBatch(MAX_MOVES_PER_FRAME)
    assert batch.add(text, 5) == 1
    assert [c.tolist() for c in batch.columns()] == [[5], [seq], [dx], [dy]]


# ------------------------------------------------------------------ fuzz

def every_decoder(frame: bytes | str) -> None:
    """Feed a frame to every decoder; each may only succeed or raise a ProtocolError."""
    for decode in (decode_client_frame, decode_server_frame, frame_type):
        try:
            event = decode(frame)
        except ProtocolError:
            continue
        if decode is not frame_type and isinstance(frame, bytes):
            assert encode(event) == frame, "a frame that decodes is the canonical encoding"
    seqs, dxs, dys, ids = np.zeros(70, np.int64), np.zeros(70), np.zeros(70), np.zeros(70, np.int64)
    try:
        n = decode_moves_into(frame, seqs, dxs, dys, 2, ids=ids, player_id=1)
        assert 1 <= n <= MAX_MOVES_PER_FRAME and (seqs[2:2 + n] > 0).all()
    except RemoteProtocolError:
        pass


FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(frame):
    every_decoder(frame)


@FUZZ
@given(st.sampled_from(sorted(int(t) for t in MessageType)), st.binary(max_size=200))
def test_fuzz_random_bodies_behind_a_valid_type_byte(kind, body):
    every_decoder(bytes([kind]) + body)


@FUZZ
@given(st.text(max_size=80) | st.from_regex(r'\{"seq": ?-?\d{1,25}, ?"d[xy]": ?[-\w.e+]{1,12}'
                                             r'(, ?"d[xy]": ?[-\w.e+]{1,12})?\}', fullmatch=True))
def test_fuzz_text_frames(text):
    every_decoder(text)


@st.composite
def mutated_frames(draw) -> bytes:
    vector_frames = [bytes.fromhex(v["hex"]) for v in VALID if v["frame"] == "binary"]
    base = draw(st.sampled_from(vector_frames) | client_events.map(encode)
                | server_events.map(encode))
    frame = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "extend", "insert", "delete", "word"]))
        at = draw(st.integers(0, max(len(frame) - 1, 0)))
        if op == "truncate":
            del frame[at:]
        elif op == "flip" and frame:
            frame[at] ^= draw(st.integers(1, 255))
        elif op == "extend":
            frame += draw(st.binary(min_size=1, max_size=40))
        elif op == "insert":
            frame[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del frame[at:at + draw(st.integers(1, 8))]
        elif op == "word" and len(frame) >= at + 4:  # counts and lengths live in words
            frame[at:at + 4] = draw(st.sampled_from([b"\0\0\0\0", b"\xff\xff\xff\xff",
                                                     b"\x01\0\0\0", b"\0\0\xc0\x7f"]))
    return bytes(frame)


@FUZZ
@given(mutated_frames())
def test_fuzz_mutated_valid_frames(frame):
    every_decoder(frame)


def test_decoders_reject_oversized_frames_with_1009():
    big = bytes([MessageType.MOVES]) + bytes(sp.MAX_CLIENT_FRAME_BYTES)
    for decode in (decode_client_frame, lambda f: MoveBatch().add(f, 1)):
        with pytest.raises(RemoteProtocolError) as info:
            decode(big)
        assert (info.value.code, info.value.close_code) == (ErrorCode.TOO_BIG, 1009)
    with pytest.raises(RemoteProtocolError) as info:
        decode_client_frame('{"seq": 1, "dx": 0, "dy": 0}' + " " * sp.MAX_JSON_MOVE_CHARS)
    assert info.value.close_code == 1009
    with pytest.raises(RemoteProtocolError) as info:
        decode_server_frame(bytes([MessageType.TICK]) + bytes(sp.MAX_SERVER_FRAME_BYTES))
    assert info.value.close_code == 1009


# ------------------------------------------------------------------ errors and events

def test_errors_say_whose_fault_and_which_close_code():
    with pytest.raises(LocalProtocolError) as local:
        Hello("bad\nname", "demo")
    assert (local.value.code, local.value.close_code) == (ErrorCode.BAD_NAME, 4004)
    frame = bytearray(encode(Hello("ok", "demo")))
    frame[24] = ord("\n")
    with pytest.raises(RemoteProtocolError) as remote:
        decode_client_frame(bytes(frame))
    assert (remote.value.code, remote.value.close_code) == (ErrorCode.BAD_NAME, 4004)
    assert remote.value.event_hint == Refused(ErrorCode.BAD_NAME, remote.value.message, 4004)
    error = RemoteProtocolError("x" * 1000, ErrorCode.MALFORMED)
    hint = error.event_hint
    assert isinstance(hint, ErrorMessage) and not isinstance(hint, Refused)
    assert (hint.close_code, len(hint.message)) == (1002, sp.MAX_MESSAGE_BYTES)
    assert LocalProtocolError("oops").close_code == 1011


@pytest.mark.parametrize("make", [
    lambda: Hello("", "demo"), lambda: Hello(" padded", "demo"), lambda: Hello("x" * 33, "demo"),
    lambda: Hello("ok", ""), lambda: Hello("ok", "demo", resume_token=b"short"),
    lambda: Hello("ok", "demo", ticket="a b"), lambda: Hello("ok", "demo", ticket="x" * 717),
    lambda: Hello("ok", "demo", ticket=b"bytes"),
    lambda: Move(0, 0, 0), lambda: Move(2**63, 0, 0), lambda: Move(2**62, 0, 0),
    lambda: Move(1, float("nan"), 0),
    lambda: Move(1, 0, float("inf")), lambda: Move(1, 1e39, 0), lambda: Move(True, 0, 0),
    lambda: Moves(()), lambda: Moves(tuple(Move(i + 1, 0, 0) for i in range(65))),
    lambda: ErrorMessage(12345, "unknown code needs a close code"),
    lambda: ErrorMessage(1, "x", 1005), lambda: Refused(ErrorCode.RATE_LIMITED, "not fatal"),
    lambda: ErrorMessage(1, "é" * 200), lambda: NameEntry(-1, 0, "x"),
    lambda: TickUpdate(1, 0, float("nan"), 0, 0, 0),
    lambda: TickUpdate(1, 0, 0, 0, 0, 16),
    lambda: TickUpdate(1, 0, 0, 0, 0, 0, visible=np.zeros(2, LEAVE_RECORD)),
    lambda: Welcome(1, bytes(16), 0, 0, 0.0, 1, 1, 20, 1, 1, 1, 5, 0, 0),
    lambda: Redirect("", "forest"), lambda: Redirect("http://b:1/", "forest"),
    lambda: Redirect("ws://", "forest"), lambda: Redirect("WS://b:1/", "forest"),
    lambda: Redirect("ws://b:1/a b", "forest"), lambda: Redirect("ws://b:1/\n", "forest"),
    lambda: Redirect("ws://" + "a" * 252, "forest"), lambda: Redirect("ws://b:1/", ""),
    lambda: Redirect("ws://b:1/", "forest", "n" * 65), lambda: Redirect("ws://b:1/", "f", " n"),
    lambda: Redirect(b"ws://b:1/", "forest"),  # type: ignore[arg-type]
])
def test_invalid_events_cannot_be_built(make):
    with pytest.raises(LocalProtocolError):
        make()


def test_redirect_limits_and_its_close_code():
    longest = Redirect("wss://" + "é" * 125, "h" * sp.MAX_HUNT_BYTES, "n" * sp.MAX_NODE_BYTES)
    frame = encode(longest)
    assert len(frame) == 8 + 256 + 256 + 64 and decode_server_frame(frame) == longest
    assert sp.CLOSE_REDIRECT == 4010 and sp.CLOSE_REDIRECT not in set(ErrorCode)
    assert sp.CLOSE_CODES[ErrorCode.HUNT_MOVED] == 4011
    assert ErrorMessage(ErrorCode.HUNT_MOVED, "moved").close_code == 4011
    assert ErrorCode.HUNT_MOVED not in sp.REFUSAL_CODES, "an ERROR, not a REFUSED"
    with pytest.raises(RemoteProtocolError) as info:
        decode_client_frame(frame)  # a client never sends it
    assert info.value.code == ErrorCode.UNKNOWN_TYPE


def test_every_redirect_fault_has_a_vector():
    faults = {v["name"] for v in INVALID if v["name"].startswith("redirect-")}
    assert {"redirect-empty-url", "redirect-http-url", "redirect-url-too-long",
            "redirect-url-bad-utf8", "redirect-truncated"} <= faults


def test_move_directions_are_rounded_to_the_wire_float32():
    move = Move(1, 0.1, -1)
    assert move.dx == float(np.float32(0.1)) and move.dy == -1.0
    assert decode_client_frame(encode(Moves((move,)))).moves == (move,)


def test_welcome_from_hunt_params():
    import tickengine

    p = tickengine.HuntParams(width=2000, tick_rate=30, hint_levels=7)
    w = Welcome.from_params(p, player_id=5, resume_token=bytes(16), tick=3, spawn_x=1.5,
                            spawn_y=2)
    assert (w.width, w.tick_rate, w.hint_levels, w.view_radius) == (2000.0, 30, 7, p.view_radius)
    assert decode_server_frame(encode(w)) == w


# ------------------------------------------------------------------ move ingest

def test_move_batch_collects_frames_of_many_players():
    batch = MoveBatch(128)
    assert batch.add(encode(Moves((Move(1, 1, 0), Move(2, 0, 1)))), 7) == 2
    assert batch.add('{"seq": 5, "dx": -0.5, "dy": 0}', 8) == 1
    ids, seqs, dx, dy = batch.columns()
    assert ids.tolist() == [7, 7, 8] and seqs.tolist() == [1, 2, 5]
    assert dx.tolist() == [1, 0, -0.5] and dy.tolist() == [0, 1, 0]
    assert batch.room == 125
    batch.clear()
    assert batch.count == 0 and batch.columns()[0].size == 0


def test_move_batch_refuses_bad_frames_without_counting_them():
    batch = MoveBatch(64)
    good = encode(Moves((Move(1, 0.5, 0.5),)))
    batch.add(good, 1)
    nan = good[:12] + struct.pack("<f", float("nan")) + good[16:]
    for frame, code in [(nan, ErrorCode.INVALID_VALUE), (good[:-1], ErrorCode.MALFORMED),
                        (b"", ErrorCode.MALFORMED),
                        (encode(Bye()), ErrorCode.UNEXPECTED), (b"\x7f", ErrorCode.UNKNOWN_TYPE),
                        ('{"seq": 0, "dx": 0, "dy": 0}', ErrorCode.INVALID_VALUE)]:
        with pytest.raises(RemoteProtocolError) as info:
            batch.add(frame, 2)
        assert info.value.code == code
    assert batch.count == 1 and batch.columns()[0].tolist() == [1]


def test_decode_moves_into_is_told_off_for_misuse():
    frame = encode(Moves((Move(1, 0, 0), Move(2, 0, 0))))
    seqs, dxs, dys = np.zeros(3, np.int64), np.zeros(3), np.zeros(3)
    with pytest.raises(LocalProtocolError):
        decode_moves_into(frame, seqs, dxs, dys, 2)  # no room for 2 at row 2
    with pytest.raises(LocalProtocolError):
        decode_moves_into(frame, seqs.astype(np.uint64), dxs, dys)
    with pytest.raises(LocalProtocolError):
        decode_moves_into(12345, seqs, dxs, dys)  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError):
        MoveBatch(MAX_MOVES_PER_FRAME - 1)


def test_move_ingest_allocates_nothing_per_move():
    frames, seq = [], 1
    while seq <= 10_000:
        n = min(MAX_MOVES_PER_FRAME, 10_001 - seq)
        frames.append(encode(Moves(tuple(Move(seq + i, 0.5, -0.25) for i in range(n)))))
        seq += n
    singles = [encode(Moves((Move(s, 1.0, 0.0),))) for s in range(1, 2001)]
    batch = MoveBatch(12_000)
    batch.add(frames[0], 1)  # warm up lazy imports and caches
    batch.clear()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for i, frame in enumerate(frames):
            batch.add(frame, i)
        for frame in singles:
            batch.add(frame, 3)
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert batch.count == 12_000
    assert after - before < 1024, "nothing is kept per move"
    assert peak - before < 4096, "no transient allocation grows with the number of moves"


# ------------------------------------------------------------------ tick writer

def visible_slice(n: int = 10) -> np.ndarray:
    records = np.zeros(n + 4, VISIBLE_RECORD)
    records["slot"] = np.arange(n + 4) * 3
    records["gen"] = 1
    records["flags"] = np.arange(n + 4) % 2
    records["x"] = np.linspace(0, 100, n + 4)
    records["y"] = np.float32(np.nan)
    return records[2:2 + n]


def test_tick_writer_copies_visible_records_as_they_lie():
    visible = visible_slice()
    writer = TickMessageWriter(capacity=16)
    events = encode_hunt_events(
        discoveries=np.zeros(1, DISCOVERY_RECORD), leaderboard=np.zeros(3, LEADER_RECORD),
        leaves=np.array([(4, 2)], LEAVE_RECORD), names=[(4, 3, "Zoë"), NameEntry(5, 1, "Bo")])
    frame = writer.write(100, 7, 1.25, -0.0, -3, 4, visible, events, keyframe=True)
    assert isinstance(frame, memoryview)
    assert len(frame) == tick_message_size(len(visible), events)
    section = bytes(frame[TICK_HEADER_BYTES:])
    assert section[:visible.nbytes] == visible.tobytes()
    assert section[visible.nbytes:] == events.data
    decoded = decode_server_frame(bytes(frame))
    assert decoded.visible.tobytes() == visible.tobytes() and decoded.keyframe
    assert (decoded.tick, decoded.ack, decoded.x, decoded.score, decoded.hint) == (100, 7, 1.25,
                                                                                  -3, 4)
    assert len(decoded.leaderboard) == 3 and decoded.names[0] == NameEntry(4, 3, "Zoë")


def test_tick_writer_reuses_and_grows_its_buffer():
    writer = TickMessageWriter(capacity=128)
    small = writer.write(1, 0, 0, 0, 0, 0, visible_slice(2))
    kept = bytes(small)
    big = writer.write(2, 0, 0, 0, 0, 0, visible_slice(50))  # grows: `small` stays intact
    assert bytes(small) == kept and len(big) == 64 + 50 * 16
    again = writer.write(3, 0, 0, 0, 0, 0, visible_slice(1))
    assert decode_server_frame(bytes(again)).tick == 3
    empty = writer.write(4, 0, 0, 0, 0, 0, visible_slice(0))
    assert len(empty) == 64 and decode_server_frame(bytes(empty)).leaderboard is None


def test_tick_writer_is_told_off_for_misuse():
    writer = TickMessageWriter()
    for bad in (dict(visible=np.zeros(2, LEAVE_RECORD)), dict(visible=visible_slice(6)[::2]),
                dict(hint=16), dict(x=float("inf")), dict(ack=-1), dict(tick=-1),
                dict(score=2**63)):
        args = dict(tick=1, ack=0, x=0.0, y=0.0, score=0, hint=0, visible=visible_slice(2))
        with pytest.raises(LocalProtocolError):
            writer.write(**{**args, **bad})


def test_hunt_events_take_the_engine_membership_records():
    import tickengine

    members = np.zeros(3, tickengine.MEMBERSHIP_DTYPE)
    members["kind"] = [tickengine.JOINED, tickengine.LEFT, tickengine.LEFT]
    members["slot"], members["gen"] = [1, 2, 3], [1, 70_000, 2]
    events = encode_hunt_events(leaves=members[members["kind"] == tickengine.LEFT])
    assert events.leaves == 2 and events.leaders is None
    tick = decode_server_frame(bytes(TickMessageWriter().write(1, 0, 0, 0, 0, 0,
                                                                visible_slice(0), events)))
    assert tick.leaves.tolist() == [(2, 70_000), (3, 2)]
    with pytest.raises(LocalProtocolError):
        encode_hunt_events(leaves=np.zeros(1, [("a", "<u4")]))


# ------------------------------------------------------------------ end to end with the engine

def test_clients_rebuild_the_engines_view_from_tick_messages():
    """A server loop in miniature: moves in through MoveBatch, TICKs out through the writer;
    each client applies docs/protocol.md's rules and must see what the engine sees."""
    import tickengine as te

    world = te.World(te.EngineConfig(max_players=64, max_treasures=64, max_hunts=2))
    hunt = world.add_hunt(te.HuntParams(width=300, height=300, treasures=20, view_radius=80,
                                        player_speed=400, max_players=40, seed=3))
    rng = np.random.default_rng(1)
    players: dict[int, int] = {}  # player id -> next seq
    views: dict[int, dict[int, tuple[int, float, float]]] = {}  # player id -> slot -> (gen, x, y)
    fresh: set[int] = set()
    names = {}
    batch, moves, writer = MoveBatch(256), world.new_move_buffer(), TickMessageWriter(256)
    for step in range(40):
        if step % 4 == 0 and len(players) < 30:
            for _ in range(3):
                pid = world.join(hunt)
                players[pid], views[pid] = 1, {}
                fresh.add(pid)
                names[pid] = f"p{pid & 0xFFFFFFFF}"
        if step % 7 == 6:
            gone = sorted(players)[int(rng.integers(len(players)))]
            world.leave(gone)
            del players[gone], views[gone]
            fresh.discard(gone)
        for pid in players:
            dx, dy = rng.uniform(-1, 1, 2)
            batch.add(encode(Moves((Move(players[pid], dx, dy),))), pid)
            players[pid] += 1
        moves.put_many(*batch.columns())
        batch.clear()
        result = world.tick(moves)
        m = result.memberships
        joined = m[(m["kind"] == te.JOINED) & (m["hunt"] == hunt)]
        shared = encode_hunt_events(
            discoveries=result.discoveries[result.discoveries["hunt"] == hunt],
            leaderboard=world.leaderboard(hunt) if hunt in result.leaderboard_changed else None,
            leaves=m[(m["kind"] == te.LEFT) & (m["hunt"] == hunt)],
            names=[(int(r["slot"]), int(r["gen"]), names[te.make_player_id(int(r["slot"]),
                                                                           int(r["gen"]))])
                   for r in joined])
        order = sorted(players)
        observers = np.array([p & 0xFFFFFFFF for p in order], np.int64)
        keyframe = np.array([p in fresh for p in order], np.uint8)
        vis = world.visibility(observers, keyframe)
        for i, pid in enumerate(order):
            info = world.player(pid)
            frame = bytes(writer.write(result.tick, info.last_seq, info.x, info.y, info.score,
                                       info.hint, vis.of(i), shared, keyframe=pid in fresh))
            update = decode_server_frame(frame)
            assert update.visible.tobytes() == vis.of(i).tobytes()
            assert update.ack == players[pid] - 1 and update.x == info.x
            view = views[pid]
            if update.keyframe:
                view.clear()
            for r in update.visible:
                if r["flags"] & te.VIS_IN_VIEW:
                    view[int(r["slot"])] = (int(r["gen"]), float(r["x"]), float(r["y"]))
                else:
                    view.pop(int(r["slot"]), None)
            for r in update.leaves:
                if view.get(int(r["slot"]), (-1,))[0] == int(r["gen"]) & 0xFFFF:
                    del view[int(r["slot"])]
        fresh.clear()
        truth = world.visibility(observers, np.ones(len(order), np.uint8))
        for i, pid in enumerate(order):
            expect = {int(r["slot"]): (int(r["gen"]), float(r["x"]), float(r["y"]))
                      for r in truth.of(i)}
            assert views[pid] == expect, (step, pid)


def test_a_signalling_nan_direction_is_refused_quietly():
    # Two moves (the array path), the second's dx a float32 signalling NaN (0x7f801000).
    record = struct.pack("<qff", 1, 0.0, 0.0)
    nan = struct.pack("<q", 2) + bytes.fromhex("00 10 80 7f") + struct.pack("<f", 0.0)
    frame = bytes([MessageType.MOVES, 0]) + struct.pack("<H", 2) + record + nan
    seqs, dxs, dys = np.zeros(4, np.int64), np.zeros(4), np.zeros(4)
    with pytest.raises(RemoteProtocolError) as info:
        decode_moves_into(frame, seqs, dxs, dys)
    assert info.value.code == ErrorCode.INVALID_VALUE

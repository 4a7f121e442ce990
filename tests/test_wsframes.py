"""server.shell._wsframes: the sans-IO WebSocket frame parser and writer, no sockets.

Client frames come from wsproto's client side (an independent implementation of
RFC 6455) where it can produce them, and are built by hand for what it refuses
to send (bad frames). Server frames are checked by feeding them to wsproto.
"""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType
from wsproto.connection import Connection as WsConnection
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from server.shell import _wsframes as wf

LIMIT = 1028


def client_frame(payload: bytes, opcode: int = wf.OP_BINARY, *, fin: bool = True,
                 rsv: int = 0, mask: bytes | None = None, masked: bool = True,
                 length_form: int | None = None) -> bytes:
    """One client frame built by hand. ``length_form``: 7, 16 or 64 (the encoding of the
    length; default the shortest)."""
    n = len(payload)
    form = length_form or (7 if n < 126 else 16 if n < 65536 else 64)
    first = (0x80 if fin else 0) | rsv << 4 | opcode
    bit = 0x80 if masked else 0
    if form == 7:
        head = bytes((first, bit | n))
    elif form == 16:
        head = bytes((first, bit | 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, bit | 127)) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    mask = mask if mask is not None else os.urandom(4)
    return head + mask + wf.unmask(payload, mask)


def wsproto_client_bytes(*events) -> bytes:
    """Bytes wsproto's client sends for ``events`` after an (assumed) handshake."""
    conn = WsConnection(ConnectionType.CLIENT)
    return b"".join(conn.send(e) for e in events)


def parse_all(data: bytes, limit: int = LIMIT) -> list[wf.Message]:
    p = wf.FrameParser(limit)
    p.feed(data)
    out = []
    while (m := p.next()) is not None:
        out.append(m)
    return out


# ---------------------------------------------------------------------- masking


@given(st.binary(max_size=300), st.binary(min_size=4, max_size=4))
def test_unmask_is_the_rfc_xor(payload: bytes, mask: bytes) -> None:
    expected = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert wf.unmask(payload, mask) == expected
    assert wf.unmask(expected, mask) == payload


@settings(max_examples=50)
@given(st.lists(st.binary(max_size=1028), min_size=1, max_size=8), st.integers(1, 64))
def test_wsproto_client_messages_parse_whatever_the_chunking(payloads, chunk) -> None:
    data = wsproto_client_bytes(*(BytesMessage(p) for p in payloads))
    p = wf.FrameParser(LIMIT)
    got = []
    for i in range(0, len(data), chunk):
        p.feed(data[i:i + chunk])
        while (m := p.next()) is not None:
            got.append(m)
    assert [(m.opcode, m.payload) for m in got] == [(wf.OP_BINARY, x) for x in payloads]
    assert p.buffered == 0


def test_text_ping_and_close_from_wsproto() -> None:
    data = wsproto_client_bytes(TextMessage('{"seq": 1, "dx": 0, "dy": 1}'), Ping(b"hi"),
                                CloseConnection(1000, "bye"))
    text, ping, close = parse_all(data)
    assert (text.opcode, text.payload) == (wf.OP_TEXT, b'{"seq": 1, "dx": 0, "dy": 1}')
    assert (ping.opcode, ping.payload) == (wf.OP_PING, b"hi")
    assert (close.opcode, close.close_code, close.reason) == (wf.OP_CLOSE, 1000, "bye")


def test_the_three_length_forms() -> None:
    for n, form in ((125, 7), (126, 16), (1000, 16)):
        payload = os.urandom(n)
        (m,) = parse_all(client_frame(payload, length_form=form))
        assert m.payload == payload
    # A non-minimal length form is still a valid frame (RFC 6455 only asks for minimal).
    (m,) = parse_all(client_frame(b"abc", length_form=64))
    assert m.payload == b"abc"


def test_an_empty_binary_message() -> None:
    (m,) = parse_all(client_frame(b""))
    assert (m.opcode, m.payload) == (wf.OP_BINARY, b"")


# ---------------------------------------------------------------------- fragmentation


def test_a_fragmented_message_with_a_control_frame_in_between() -> None:
    data = (client_frame(b"hel", wf.OP_TEXT, fin=False)
            + client_frame(b"", wf.OP_PING)
            + client_frame(b"lo ", wf.OP_CONTINUATION, fin=False)
            + client_frame("wörld".encode(), wf.OP_CONTINUATION))
    ping, text = parse_all(data)
    assert ping.opcode == wf.OP_PING
    assert (text.opcode, text.payload) == (wf.OP_TEXT, "hello wörld".encode())


def test_a_character_split_across_fragments_is_valid_utf8() -> None:
    raw = "é".encode()
    data = (client_frame(raw[:1], wf.OP_TEXT, fin=False)
            + client_frame(raw[1:], wf.OP_CONTINUATION))
    (m,) = parse_all(data)
    assert m.payload == raw


@pytest.mark.parametrize(("data", "close_code", "words"), [
    pytest.param(client_frame(b"x", wf.OP_CONTINUATION), 1002, "continuation",
                 id="continuation-first"),
    pytest.param(client_frame(b"a", fin=False) + client_frame(b"b"), 1002, "inside",
                 id="new-message-inside-fragmented"),
    pytest.param(client_frame(b"a", wf.OP_PING, fin=False), 1002, "control",
                 id="fragmented-ping"),
    pytest.param(client_frame(bytes(126), wf.OP_PING), 1002, "125", id="long-ping"),
    pytest.param(client_frame(b"x", rsv=4), 1002, "RSV", id="rsv1"),
    pytest.param(client_frame(b"x", rsv=1), 1002, "RSV", id="rsv3"),
    pytest.param(client_frame(b"x", masked=False), 1002, "masked", id="unmasked"),
    pytest.param(client_frame(b"x", 0x3), 1002, "opcode", id="reserved-data-opcode"),
    pytest.param(client_frame(b"x", 0xB), 1002, "opcode", id="reserved-control-opcode"),
    pytest.param(client_frame(b"\xff\xfe", wf.OP_TEXT), 1007, "UTF-8", id="text-not-utf8"),
    pytest.param(client_frame(b"\x03", wf.OP_CLOSE), 1002, "1-byte", id="close-1-byte"),
    pytest.param(client_frame(struct.pack("!H", 1005), wf.OP_CLOSE), 1002, "1005",
                 id="close-1005"),
    pytest.param(client_frame(struct.pack("!H", 999), wf.OP_CLOSE), 1002, "999",
                 id="close-999"),
    pytest.param(client_frame(struct.pack("!H", 1000) + b"\xc3", wf.OP_CLOSE), 1007,
                 "UTF-8", id="close-reason-not-utf8"),
])
def test_protocol_violations_name_their_close_code(data, close_code, words) -> None:
    with pytest.raises(wf.FrameError) as err:
        parse_all(data)
    assert err.value.close_code == close_code
    assert words.lower() in err.value.message.lower()


# ---------------------------------------------------------------------- limits


def test_a_message_over_the_limit_is_refused_from_its_header() -> None:
    p = wf.FrameParser(LIMIT)
    frame = client_frame(bytes(LIMIT + 1))
    p.feed(frame[:8])  # the header (2 + 2 length + 4 mask) and nothing of the payload
    with pytest.raises(wf.FrameError) as err:
        p.next()
    assert err.value.close_code == 1009
    (m,) = parse_all(client_frame(bytes(LIMIT)))
    assert len(m.payload) == LIMIT


def test_a_huge_64_bit_length_is_refused_before_any_payload() -> None:
    p = wf.FrameParser(LIMIT)
    p.feed(bytes((0x82, 0xFF)) + struct.pack("!Q", 2**62) + os.urandom(4))
    with pytest.raises(wf.FrameError) as err:
        p.next()
    assert err.value.close_code == 1009


def test_fragments_count_towards_the_limit_together() -> None:
    half = LIMIT // 2 + 1
    data = client_frame(bytes(half), fin=False) + client_frame(bytes(half), wf.OP_CONTINUATION)
    with pytest.raises(wf.FrameError) as err:
        parse_all(data)
    assert err.value.close_code == 1009


def test_control_frames_do_not_count_against_the_message_limit() -> None:
    data = (client_frame(bytes(LIMIT - 10), fin=False) + client_frame(bytes(100), wf.OP_PING)
            + client_frame(bytes(10), wf.OP_CONTINUATION))
    ping, msg = parse_all(data)
    assert len(ping.payload) == 100 and len(msg.payload) == LIMIT


def test_incomplete_input_waits_for_more_bytes() -> None:
    frame = client_frame(os.urandom(300))
    p = wf.FrameParser(LIMIT)
    for i in range(len(frame) - 1):
        p.feed(frame[i:i + 1])
        assert p.next() is None
    p.feed(frame[-1:])
    assert p.next() is not None and p.next() is None


# ---------------------------------------------------------------------- server frames


@pytest.mark.parametrize("n", [0, 1, 125, 126, 65535, 65536, 70000])
def test_server_frames_are_what_a_client_reads(n: int) -> None:
    payload = os.urandom(n)
    frame = wf.frame(payload)
    assert len(frame) == wf.header_size(n) + n
    assert frame[:wf.header_size(n)] == wf.frame_header(n)
    client = WsConnection(ConnectionType.CLIENT)
    client.receive_data(frame)
    got = b"".join(e.data for e in client.events() if isinstance(e, BytesMessage))
    assert got == payload


def test_close_frames_carry_the_code_and_a_reason_cut_at_a_character() -> None:
    client = WsConnection(ConnectionType.CLIENT)
    reason = "é" * 100  # 200 bytes: cut to fit 125, never inside a character
    client.receive_data(wf.close_frame(4008, reason))
    (event,) = list(client.events())
    assert isinstance(event, CloseConnection) and event.code == 4008
    assert reason.startswith(event.reason) and len(event.reason.encode()) <= 123
    assert wf.close_frame(1000) == bytes((0x88, 2)) + struct.pack("!H", 1000)


def test_a_pong_frame_from_the_server() -> None:
    client = WsConnection(ConnectionType.CLIENT)
    client.receive_data(wf.frame(b"abc", wf.OP_PONG))
    (event,) = list(client.events())
    assert event.payload == b"abc"


# ------------------------------------------------------------------ budgets

class FakeClock:
    """Seconds the test sets by hand: budgets are token buckets over the caller's clock."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def budgeted(clock: FakeClock, *, fragments: int = 16, control: float = 10.0,
             rate: float = 65536.0) -> wf.FrameParser:
    p = wf.FrameParser(LIMIT)
    p.set_budgets(max_fragments=fragments, control_per_second=control,
                  bytes_per_second=rate, clock=clock)
    return p


def drain(p: wf.FrameParser) -> list[wf.Message]:
    out = []
    while (m := p.next()) is not None:
        out.append(m)
    return out


def test_empty_continuations_count_as_fragments() -> None:
    """An endless run of empty continuation frames is refused at the cap (1009), before
    its parts pile up; a message of exactly the cap's fragments is fine."""
    p = budgeted(FakeClock(), fragments=4)
    whole = [client_frame(b"a", fin=False), client_frame(b"", wf.OP_CONTINUATION, fin=False),
             client_frame(b"", wf.OP_CONTINUATION, fin=False),
             client_frame(b"b", wf.OP_CONTINUATION)]
    p.feed(b"".join(whole))
    assert [m.payload for m in drain(p)] == [b"ab"]
    p.feed(client_frame(b"a", fin=False)
           + client_frame(b"", wf.OP_CONTINUATION, fin=False) * 10)
    with pytest.raises(wf.FrameError) as err:
        drain(p)
    assert err.value.close_code == 1009 and err.value.error == "TOO_BIG"
    assert p.exceeded == "fragments" and "4 fragments" in err.value.message


def test_control_frames_over_their_budget_close_with_1008() -> None:
    """A burst of one second's worth of pings passes; the next within that second is over
    budget (OVER_BUDGET, 1008), and stays so; time refills the bucket."""
    clock = FakeClock()
    p = budgeted(clock, control=10)
    p.feed(client_frame(b"", wf.OP_PING) * 10)
    assert len(drain(p)) == 10
    clock.now += 0.5  # five more
    p.feed(client_frame(b"", wf.OP_PING) * 5)
    assert len(drain(p)) == 5
    p.feed(client_frame(b"", wf.OP_PING))
    with pytest.raises(wf.FrameError) as err:
        drain(p)
    assert (err.value.close_code, err.value.error, p.exceeded) == (
        1008, "OVER_BUDGET", "control_frames")
    with pytest.raises(wf.FrameError):
        p.next()


def test_raw_bytes_over_their_budget_close_with_1008() -> None:
    """Bytes are counted as they arrive, whatever they hold: past the budget (a second's
    worth, at least four largest messages) the next parse raises."""
    clock = FakeClock()
    p = budgeted(clock, rate=8192)
    frame = client_frame(b"m" * 1000)
    for _ in range(8):
        p.feed(frame)
    assert len(drain(p)) == 8
    clock.now += 0.25  # 2,048 bytes more are allowed
    p.feed(frame + frame)
    assert len(drain(p)) == 2
    p.feed(frame)
    with pytest.raises(wf.FrameError) as err:
        drain(p)
    assert (err.value.close_code, p.exceeded) == (1008, "bytes")
    assert "8192 bytes per second" in err.value.message


def test_no_budgets_without_set_budgets() -> None:
    p = wf.FrameParser(LIMIT)
    p.feed(client_frame(b"", wf.OP_PING) * 1000)
    assert len(drain(p)) == 1000 and p.exceeded == ""

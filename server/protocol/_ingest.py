"""The server's move ingest path: MOVES frames decoded straight into preallocated columns.

No Python object is created per move: a frame becomes one ``np.frombuffer``
view, copied column by column into the caller's arrays and checked with a few
reductions. The columns match ``tickengine.MoveBuffer.put_many`` (int64 ids and
seqs, float64 directions).
"""

from __future__ import annotations

import struct
from math import isfinite

import numpy as np

from ._codec import Frame, byte_view, decode_move_json, moves_records
from ._constants import MAX_CLIENT_FRAME_BYTES, MAX_CLIENT_SEQ, MAX_MOVES_PER_FRAME, ErrorCode
from ._errors import LocalProtocolError, RemoteProtocolError

_INT64 = np.dtype(np.int64)
#: A MOVES frame of one move, the usual case: header and record in one unpack.
_ONE_MOVE = struct.Struct("<BBHqff")
_SEQ_ERROR = ("a move's seq must be in [1, 2**62 - 1] (the seqs above are the server's); "
              "a client at the top joins again as a new player")


def decode_moves_into(frame: Frame | str, seqs: np.ndarray, dxs: np.ndarray, dys: np.ndarray,
                      start: int = 0, *, ids: np.ndarray | None = None,
                      player_id: int = 0) -> int:
    """Decode one MOVES frame (binary, or the JSON text form) into ``[start, start + n)``.

    Returns n, the number of moves. ``seqs`` must be int64 (a seq >= 2**63 then
    reads negative and is refused), ``dxs``/``dys`` floating; if ``ids`` is
    given, ``player_id`` is written beside each move. Raises
    :class:`RemoteProtocolError` for a bad frame (the rows from ``start`` on may
    then hold garbage; nothing before ``start`` is touched) and
    :class:`LocalProtocolError` if the arrays are of the wrong type or too short.
    """
    if seqs.dtype != _INT64 or dxs.dtype.kind != "f" or dys.dtype.kind != "f":
        raise LocalProtocolError("decode_moves_into needs int64 seqs and float dxs, dys")
    if type(frame) is bytes and len(frame) == _ONE_MOVE.size and frame[:4] == b"\x02\x00\x01\x00":
        # One move: scalar stores instead of array views (several times cheaper).
        _, _, _, seq, dx, dy = _ONE_MOVE.unpack(frame)
        if seq <= 0 or seq > MAX_CLIENT_SEQ:
            raise RemoteProtocolError(_SEQ_ERROR, ErrorCode.INVALID_VALUE)
        if not (isfinite(dx) and isfinite(dy)):
            raise RemoteProtocolError("a move's direction is not finite", ErrorCode.INVALID_VALUE)
        end = _check_room(start, 1, seqs, dxs, dys, ids)
        seqs[start], dxs[start], dys[start] = seq, dx, dy
    elif isinstance(frame, str):
        move = decode_move_json(frame)
        end = _check_room(start, 1, seqs, dxs, dys, ids)
        seqs[start], dxs[start], dys[start] = move.seq, move.dx, move.dy
    else:
        if type(frame) is not bytes:
            frame = byte_view(frame)
        if len(frame) > MAX_CLIENT_FRAME_BYTES:
            raise RemoteProtocolError(f"MOVES frame of {len(frame)} bytes exceeds the limit of "
                                      f"{MAX_CLIENT_FRAME_BYTES}", ErrorCode.TOO_BIG)
        records = moves_records(frame)
        end = _check_room(start, len(records), seqs, dxs, dys, ids)
        s, x, y = seqs[start:end], dxs[start:end], dys[start:end]
        s[:] = records["seq"]
        # A signalling NaN sets the FPU's invalid flag when widened; it is refused below,
        # so the warning NumPy would raise for it says nothing.
        with np.errstate(invalid="ignore"):
            x[:] = records["dx"]
            y[:] = records["dy"]
        # argmin/argmax find NaN too, and cost a fraction of min/max on small arrays.
        if s[s.argmin()] <= 0 or s[s.argmax()] > MAX_CLIENT_SEQ:
            raise RemoteProtocolError(_SEQ_ERROR, ErrorCode.INVALID_VALUE)
        if not (isfinite(x[x.argmin()]) and isfinite(x[x.argmax()])
                and isfinite(y[y.argmin()]) and isfinite(y[y.argmax()])):
            raise RemoteProtocolError("a move's direction is not finite", ErrorCode.INVALID_VALUE)
    if ids is not None and end - start == 1:  # the usual frame: a scalar store is much cheaper
        ids[start] = player_id
    elif ids is not None:
        ids[start:end] = player_id
    return end - start


def _check_room(start: int, n: int, seqs: np.ndarray, dxs: np.ndarray, dys: np.ndarray,
                ids: np.ndarray | None) -> int:
    end = start + n
    room = min(len(seqs), len(dxs), len(dys), end if ids is None else len(ids))
    if start < 0 or end > room:
        raise LocalProtocolError(f"no room for {n} moves at row {start}")
    return end


class MoveBatch:
    """Preallocated columns that collect the moves of many frames between two ticks.

    ``batch.add(frame, player_id)`` per received frame; at tick time
    ``move_buffer.put_many(*batch.columns())`` then ``batch.clear()``. Flush
    early when :attr:`room` drops below :data:`MAX_MOVES_PER_FRAME`.
    """

    def __init__(self, capacity: int = 65536) -> None:
        if capacity < MAX_MOVES_PER_FRAME:
            raise LocalProtocolError(f"a MoveBatch holds at least {MAX_MOVES_PER_FRAME} moves")
        self.ids = np.zeros(capacity, np.int64)
        self.seqs = np.zeros(capacity, np.int64)
        self.dx = np.zeros(capacity, np.float64)
        self.dy = np.zeros(capacity, np.float64)
        self.count = 0

    @property
    def room(self) -> int:
        return self.seqs.shape[0] - self.count

    def add(self, frame: Frame | str, player_id: int) -> int:
        """Decode one MOVES frame of ``player_id``; returns the number of moves added."""
        n = decode_moves_into(frame, self.seqs, self.dx, self.dy, self.count, ids=self.ids,
                              player_id=player_id)
        self.count += n
        return n

    def columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Views ``(ids, seqs, dx, dy)`` of the moves collected so far."""
        n = self.count
        return self.ids[:n], self.seqs[:n], self.dx[:n], self.dy[:n]

    def clear(self) -> None:
        self.count = 0

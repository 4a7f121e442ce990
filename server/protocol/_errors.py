"""Protocol errors: whose fault it is, the error code, and the WebSocket close code to send."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ._constants import CLOSE_CODES, MAX_MESSAGE_BYTES, REFUSAL_CODES, ErrorCode

if TYPE_CHECKING:
    from ._messages import ErrorMessage, Refused


class ProtocolError(Exception):
    """Base class of every error this package raises on purpose.

    ``code`` is an :class:`ErrorCode` (or an unknown code from the peer),
    ``close_code`` the WebSocket close code that goes with it (0: not fatal),
    ``message`` a human-readable explanation.
    """

    default_code = ErrorCode.MALFORMED

    def __init__(self, message: str, code: int | None = None, close_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = self.default_code if code is None else code
        self.close_code = CLOSE_CODES.get(self.code, 1011) if close_code is None else close_code

    @property
    def event_hint(self) -> Refused | ErrorMessage:
        """What to send the peer before closing: REFUSED for a refused hello, ERROR otherwise."""
        from ._messages import ErrorMessage, Refused

        text = self.message.encode("utf-8", "replace")[:MAX_MESSAGE_BYTES].decode("utf-8", "ignore")
        cls = Refused if self.code in REFUSAL_CODES else ErrorMessage
        return cls(self.code, text, self.close_code)


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids (raised by the decoders).

    Send :attr:`event_hint`, then close the WebSocket with :attr:`close_code`.
    """


class LocalProtocolError(ProtocolError):
    """We misused the protocol: an event built with invalid fields, a buffer too small.

    A bug on this side; its default code is :attr:`ErrorCode.INTERNAL` (close 1011).
    """

    default_code = ErrorCode.INTERNAL


def malformed(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, ErrorCode.MALFORMED)


@contextmanager
def remote_errors() -> Iterator[None]:
    """Building an event from a peer's fields: its invalid values are the peer's fault."""
    try:
        yield
    except LocalProtocolError as exc:
        raise RemoteProtocolError(exc.message, exc.code, exc.close_code) from None


def utf8(raw: bytes | memoryview, what: str, code: int = ErrorCode.MALFORMED) -> str:
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteProtocolError(f"{what} is not valid UTF-8", code) from None

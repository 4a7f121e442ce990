"""A bare WebSocket client for tests that speak the protocol frame by frame."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from trio_websocket import WebSocketConnection, open_websocket_url

from server.protocol import MAX_SERVER_FRAME_BYTES


@asynccontextmanager
async def raw_ws(url: str) -> AsyncIterator[WebSocketConnection]:
    """A bare trio-websocket connection (and its socket closed afterwards: see server.client)."""
    ws = None
    try:
        async with open_websocket_url(url, max_message_size=MAX_SERVER_FRAME_BYTES) as ws:
            yield ws
    finally:
        if ws is not None:
            await ws._stream.aclose()

"""Rate limits per IP address: one token bucket per address, in a bounded dict.

Used for new WebSocket connections, HELLOs and HTTP requests. The dict cannot
grow without bound under a spray of addresses: past ``max_addresses`` entries,
the buckets that have refilled (they would start full again anyway) are
forgotten. Times are Trio's clock, in seconds.
"""

from __future__ import annotations

import trio

from ._wsframes import Bucket


class AddressRates:
    """``rate`` tokens per second per address, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, max_addresses: int = 4096) -> None:
        self.rate = rate
        self.burst = burst
        self.max_addresses = max_addresses
        self.buckets: dict[str, Bucket] = {}

    def allow(self, address: str) -> bool:
        """Take one token from ``address``'s bucket; False when it is empty."""
        now = trio.current_time()
        bucket = self.buckets.get(address)
        if bucket is None:
            if len(self.buckets) >= self.max_addresses:
                for key, b in list(self.buckets.items()):
                    if b.level + (now - b.t) * b.rate >= self.burst:
                        del self.buckets[key]
            bucket = self.buckets[address] = Bucket(self.rate, self.burst, now)
        return bucket.take(1, now)

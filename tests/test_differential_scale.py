"""The engine against the reference at full scale: 200,100 players, one and two threads.

The comparison itself is tests/differential_scale.py (its docstring says exactly
what is compared, and which engine paths the sizes take); it runs in a
subprocess with ``NUMBA_NUM_THREADS=2`` so that a two-thread run exists on any
machine, and prints what it saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("differential_scale.py")


def test_engine_matches_reference_at_200k_players_on_one_and_two_threads() -> None:
    env = {**os.environ, "NUMBA_NUM_THREADS": "2"}
    out = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["player_rows"] >= 200_000
    for what in ("discoveries", "joins", "leaves", "boards", "respawns", "moves_kept",
                 "visibility_records"):
        assert seen[what] > 100, seen

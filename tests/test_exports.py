"""The public API: re-exported from private modules, and free of I/O libraries."""

from __future__ import annotations

import subprocess
import sys

import tickengine

PUBLIC = {
    "BOT_POLICIES", "Bots", "CapacityError", "ConfigError", "DISCOVERY_DTYPE", "EngineConfig",
    "HUNTER",
    "HuntFullError", "HuntParams", "JOINED", "LEADER_DTYPE", "LEFT", "MEMBERSHIP_DTYPE",
    "MoveBuffer", "PHASES", "PlayerInfo", "RANDOM", "SnapshotError", "StalePlayerError",
    "TickEngineError", "TickResult", "UnknownHuntError", "VISIBLE_DTYPE", "VIS_IN_VIEW",
    "Visibility", "WarmUpReport", "World", "WorldConfig", "load_config", "make_player_id",
    "parse_config", "warm_up", "RoundPlan", "RoundSpec",
    "RESULT_DTYPE", "ROUND_END_DTYPE", "RoundError", "RoundState",
}


def test_public_names_are_exactly_the_documented_ones() -> None:
    names = {n for n in vars(tickengine) if not n.startswith("_")}
    names -= {"reference"}  # the oracle submodule, once imported
    assert names == PUBLIC


def test_public_objects_live_in_private_modules() -> None:
    for name in PUBLIC:
        obj = getattr(tickengine, name)
        module = getattr(obj, "__module__", None)
        if module is not None and module.startswith("tickengine"):
            assert module.split(".")[1].startswith("_"), (name, module)


def test_reference_module_exports_the_oracle() -> None:
    from tickengine import reference

    assert {"ReferenceWorld", "RefPlayer", "RefTreasure", "RefTickResult"} <= set(vars(reference))


def test_import_tickengine_pulls_in_no_io_libraries() -> None:
    # (numba itself imports stdlib logging and socket; what matters is that the core
    # never reaches for the server's libraries.)
    code = (
        "import sys, tickengine, tickengine.reference\n"
        "bad = [m for m in ('trio', 'trio_websocket', 'structlog', 'server', 'rich', "
        "'matplotlib', 'prometheus_client', 'coredis') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

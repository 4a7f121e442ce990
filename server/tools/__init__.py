"""The command-line tools: ``treasure-hunt serve``, ``simulate``, ``replay``, ``bots``
and ``events`` (server/cli.py dispatches to them)."""

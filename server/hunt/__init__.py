"""A hunt: where it runs, and the hub that ticks it.

``_placement`` (the placement interface and each hunt's supervision), ``_local``
(a single server: every hunt here), ``_node`` (a scale-out node: hunts placed by
leases in Redis); ``_hub`` (one World, its tick and its players) composes three
stages the data flows through one way: ``_sessions`` (join, resume, leave, moves
in; the types it hands on are in ``_players``), ``_pipeline`` (the worker thread's
tick: engine, journal, visibility, frames; the thread is ``_worker``'s) and
``_broadcast`` (claims, writes, WELCOMEs, outboxes, evictions, accounting);
``_tails`` and ``_tickframes`` build each client's TICK frame.
"""

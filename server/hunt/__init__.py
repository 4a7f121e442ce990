"""A hunt: where it runs, and the hub that ticks it.

``_placement`` (the placement interface and each hunt's supervision), ``_local``
(a single server: every hunt here), ``_node`` (a scale-out node: hunts placed by
leases in Redis); ``_hub`` (one World, its tick and its players) made of
``_sessions`` (join, resume, leave, moves in), ``_pipeline`` (the worker thread's
tick: engine, journal, visibility, frames, writes) and ``_broadcast`` (WELCOMEs,
outboxes, evictions, accounting); ``_tails`` and ``_tickframes`` build each
client's TICK frame.
"""

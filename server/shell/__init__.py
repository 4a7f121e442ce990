"""The network shell: listeners, connections, HTTP, start-up and shutdown.

``_app`` (the server: ports, one task per connection, HTTP routes, the life cycle),
``_conn`` (one WebSocket connection and its ordered outbound queue), ``_poller``
(one task reading every playing client's moves), ``_wsframes`` (WebSocket frames,
sans-IO), ``_http`` (the HTTP port), ``_ratelimit`` (per-address token buckets),
``_watch`` and ``_stats`` (what two routes answer).
It routes each HELLO to the hub the placement names (server/hunt/).
"""

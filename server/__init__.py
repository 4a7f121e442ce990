"""server: the Trio shell around tickengine (sockets, timers, logging, metrics) and the CLI."""

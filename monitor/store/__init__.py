"""The embedded SQLite store: canary results, hourly rollups, state history, retention and migrations.
Imports only the canary's results, ``monitor.config`` and ``monitor.errors``: it knows nothing of reports."""

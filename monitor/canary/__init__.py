"""The path of one canary: its target and clients (fleet, auth, transport), the probe that sends it, the
classifier that names its failure, the result it becomes, and what it costs. Imports only
``monitor.config`` and ``monitor.errors``: the canary knows nothing of the daemon, store or reports."""

"""The long-running job: the service (start, reload, stop), the scheduler that runs canaries on time, the
health state machine, the result writer, and the HTTP server with its views. Imports the canary path,
the store, reports and notify; never telemetry, app or cli (they are handed in)."""

"""What the monitor reads from Azure itself, apart from the canary path: platform metrics per deployment
(Azure Monitor) and the control plane (ARM: discovery, inventory, drift, retirement, quota). Imports
``monitor.config``, the canary's auth and ``monitor.errors``; never the daemon, store or reports."""

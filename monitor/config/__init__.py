"""The configuration: checks.yaml -> frozen, validated models whose errors name file, line and key path;
durations, secrets, schedules and the YAML source they are read from. Imports only ``monitor.errors``.

The public surface is re-exported here: ``from monitor.config import Config, load``."""

from .load import default_path, load, loads
from .models import (
    DEFAULT_PROMPT,
    DEFAULT_SCOPE,
    MAX_DURATION,
    Acs,
    Auth,
    Budget,
    CheckSettings,
    Config,
    Deployment,
    Discovery,
    Email,
    EntraAuth,
    Override,
    Reports,
    Resource,
    Server,
    Smtp,
    Store,
    Telemetry,
    Weekly,
)
from .secrets import Secret

__all__ = [
    "DEFAULT_PROMPT", "DEFAULT_SCOPE", "MAX_DURATION", "Acs", "Auth", "Budget", "CheckSettings", "Config",
    "Deployment", "Discovery", "Email", "EntraAuth", "Override", "Reports", "Resource", "Secret", "Server",
    "Smtp", "Store", "Telemetry", "Weekly", "default_path", "load", "loads",
]

"""checks.yaml -> a frozen, validated Config. Every error names file, line and key path."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from monitor.errors import ConfigError, ConfigProblem

from .models import Config
from .problems import allowed_keys, problems
from .rules import rules
from .yamlsource import Document, load_document


def default_path() -> str:
    return os.environ.get("FOUNDRY_MONITOR_CONFIG", "checks.yaml")


def load(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Config:
    """Read and validate a config file; raise ConfigError listing every problem found."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(name, None, "", "no such file (pass --config PATH or set "
                                         "FOUNDRY_MONITOR_CONFIG)")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ConfigError([ConfigProblem(name, None, "", f"cannot read: {why}")]) from None
    return loads(text, name, env)


def loads(text: str, file: str = "checks.yaml", env: Mapping[str, str] | None = None) -> Config:
    doc = load_document(text, file, env)
    if not isinstance(doc.data, dict):
        raise ConfigError([doc.problem((), "expected a mapping with a `resources` key at the top")])
    data = _drop_empty_env(doc)
    if "source" in data:  # set by the loader, not a key a user may write (it would be silently replaced)
        allowed = ", ".join(allowed_keys(Config, ()))
        raise ConfigError([doc.problem(("source",), f"unknown key; allowed here: {allowed}")])
    try:
        cfg = Config.model_validate({**data, "source": file})
    except ValidationError as exc:
        raise ConfigError(problems(doc, exc, Config)) from None
    found = list(rules(cfg, doc))
    if found:
        raise ConfigError(found)
    return cfg


def _drop_empty_env(doc: Document) -> Any:
    """A key whose value came from an unset ``${VAR:-}`` is treated as absent (so `resource` or
    `base_url` can each come from an env var that may be unset)."""
    data = doc.data
    for path in sorted(doc.empty_vars, key=len, reverse=True):
        parent: Any = data
        for part in path[:-1]:
            parent = parent[part]
        if isinstance(parent, dict) and parent.get(path[-1]) == "":
            del parent[path[-1]]
    return data


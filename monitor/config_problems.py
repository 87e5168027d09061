"""What is wrong with a checks.yaml, in words: pydantic's ValidationErrors and the rules that span several
keys, each turned into a ConfigProblem naming file, line and key path.

The models stay in ``config``; this module is handed the root model (``problems``, ``allowed_keys``) or a
validated Config (``rules``), so it never imports ``config`` at run time.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from .errors import ConfigProblem
from .secrets import Secret
from .yamlsource import Document
from .yamlsource import Path as KeyPath

if TYPE_CHECKING:
    from .config import Config, Deployment, Resource


class Unreadable(ValueError):
    """A validator's message that quotes parts of the value; ``brief`` quotes only the whole value, which
    the loader replaces by the text as written (for a value that came from a ${VAR})."""

    def __init__(self, message: str, brief: str) -> None:
        super().__init__(message)
        self.brief = brief


# --- pydantic's errors ---------------------------------------------------------------------------------


def problems(doc: Document, exc: ValidationError, root: type[BaseModel]) -> list[ConfigProblem]:
    """Each of ``exc``'s errors, found validating ``doc`` against the model ``root``, in words."""
    secret = _secret_keys(root)
    out = []
    for err in exc.errors(include_url=False):
        loc = _key_path(doc.data, err["loc"])
        got = err.get("input")
        shown = _shown(got, doc, loc, err["type"], root, secret)
        message = _message(err, loc, shown, root, from_env=loc in doc.written)
        if isinstance(got, str) and got:  # a validator's own message quotes the value as it was read
            message = message.replace(f'"{got}"', shown)
        out.append(doc.problem(loc, message))
    return out


_INTERNAL = re.compile(r"(function-(before|after|wrap|plain)|nullable)\[")


def _key_path(data: Any, loc: tuple[int | str, ...]) -> KeyPath:
    """pydantic's error location without its internal steps (``function-after[...]``); a key the user
    wrote is kept even when it looks like one of them."""
    out: list[str | int] = []
    for part in loc:
        written = (isinstance(data, dict) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data))
        if not written and isinstance(part, str) and _INTERNAL.match(part):
            continue
        out.append(part)
        data = data[part] if written else None
    return tuple(out)


def _message(err: Any, loc: KeyPath, shown: str, root: type[BaseModel], from_env: bool) -> str:
    kind, got = err["type"], err.get("input")
    if kind == "extra_forbidden":
        allowed = allowed_keys(root, loc[:-1])
        near = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean `{near[0]}`?" if near else f"; allowed here: {', '.join(allowed)}"
        return f"unknown key{hint}"
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        error = err.get("ctx", {}).get("error")
        if from_env and isinstance(error, Unreadable):
            return error.brief
        return str(err["msg"]).removeprefix("Value error, ")
    simple = {
        "int_parsing": "expected a whole number", "int_type": "expected a whole number",
        "int_from_float": "expected a whole number", "float_parsing": "expected a number",
        "float_type": "expected a number", "bool_parsing": "expected true or false",
        "bool_type": "expected true or false", "string_type": "expected text",
        "model_type": "expected a mapping of keys", "model_attributes_type": "expected a mapping of keys",
        "list_type": "expected a list (lines starting with -)", "dict_type": "expected a mapping of keys",
    }
    if kind in simple:
        return f"{simple[kind]}, got {shown}"
    if kind == "literal_error":
        return f"expected {err['ctx']['expected']}, got {shown}"
    if kind == "too_short" and isinstance(got, list):
        return "needs at least one entry"
    if kind == "string_too_short":
        return "must not be empty"
    return f"{err['msg'][0].lower()}{err['msg'][1:]}, got {shown}"


_MAPPING_EXPECTED = frozenset({"model_type", "model_attributes_type", "dict_type"})
_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-)?\}")  # ${VAR} or ${VAR:-}: no literal default


def _shown(got: Any, doc: Document, loc: KeyPath, kind: str, root: type[BaseModel],
           secret: frozenset[str]) -> str:
    """The offending value as an error may show it. Text is shown as written (a ${VAR} stays a reference),
    except at a secret key, and except where a mapping was expected: a block written on one line (`auth:
    api_key=...`) would be printed, so only text made of this mapping's key names and ${VAR}s is shown."""
    if not isinstance(got, str):
        return named(got)
    text = doc.as_written(loc, got)
    if any(part in secret for part in loc) or (
            kind in _MAPPING_EXPECTED and not _only_key_names(text, loc, root)):
        return "a string"
    return f'"{text}"'


def named(got: Any) -> str:
    """A value that is not text, as an error (or a validator's own message) shows it: a number or
    true/false as given; anything else by its kind only (a list or mapping may hold an expanded ${VAR})."""
    if got is None or isinstance(got, bool | int | float):
        return repr(got)
    if isinstance(got, dict):
        return "a mapping"
    if isinstance(got, list):
        return "a list"
    return f"a {type(got).__name__}"


def _only_key_names(text: str, loc: KeyPath, root: type[BaseModel]) -> bool:
    allowed = allowed_keys(root, loc)
    return all(w in allowed or _REFERENCE.fullmatch(w) for w in re.split(r"[\s:=]+", text.strip()))


def allowed_keys(root: type[BaseModel], loc: KeyPath) -> list[str]:
    """The keys a user may write at ``loc`` in a document validated against ``root``."""
    model: Any = root
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _model_of(field.annotation)
    return [k for k in getattr(model, "model_fields", {}) if k != "source"]


def _model_of(tp: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in get_args(tp):
        found = _model_of(arg)
        if found is not None:
            return found
    return None if get_origin(tp) is None else None


def _secret_keys(model: Any) -> frozenset[str]:
    """The names of every Secret field in ``model`` and the models under it (for Config: api_key,
    bearer_token, password, connection_string)."""

    def holds_secret(tp: Any) -> bool:
        return tp is Secret or any(holds_secret(arg) for arg in get_args(tp))

    out: set[str] = set()
    for name, field in model.model_fields.items():
        if holds_secret(field.annotation):
            out.add(name)
        sub = _model_of(field.annotation)
        if sub is not None and sub is not model:
            out |= _secret_keys(sub)
    return frozenset(out)


# --- rules across keys ---------------------------------------------------------------------------------


_RESOURCE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?")


def rules(cfg: Config, doc: Document) -> Iterator[ConfigProblem]:
    """Checks that span several keys; each problem points at the key to change."""
    yield from _email_rules(cfg, doc)
    seen_resources: dict[str, int] = {}
    said: set[KeyPath] = set()  # a bad `defaults` pair is reported once, not once per deployment
    for i, res in enumerate(cfg.resources):
        at: KeyPath = ("resources", i)
        res_name = doc.as_written((*at, "name"), res.name)  # as written: never a ${VAR}'s value
        if res.name in seen_resources:
            first = seen_resources[res.name]
            msg = f'duplicate resource name "{res_name}" (also resources[{first}])'
            yield doc.problem((*at, "name"), msg)
        seen_resources.setdefault(res.name, i)
        yield from _endpoint_rules(res, doc, at)
        if res.auth is None or (res.auth.api_key is None) == (res.auth.entra is None):
            both = res.auth is not None and res.auth.api_key is not None
            why = "set only one of" if both else "set exactly one of"
            from_env = doc.empty_vars.get((*at, "auth", "api_key"))
            env_note = f" ({from_env} is empty)" if from_env else ""
            yield doc.problem((*at, "auth"), f"{why} api_key or entra{env_note}")
        elif res.auth.api_key is not None and not res.auth.api_key.reveal().strip():
            yield doc.problem((*at, "auth", "api_key"), "must not be empty")
        seen: dict[str, int] = {}
        for j, dep in enumerate(res.deployments):
            dat: KeyPath = (*at, "deployments", j)
            if dep.name in seen:
                dep_name = doc.as_written((*dat, "name"), dep.name)
                yield doc.problem((*dat, "name"), f'duplicate deployment name "{dep_name}" in resource '
                                                  f'"{res_name}" (also deployments[{seen[dep.name]}])')
            seen.setdefault(dep.name, j)
            s = dep.settings(cfg.defaults)
            if s.interval < s.timeout:
                where = _interval_key(dep, dat, doc)
                if where not in said:
                    said.add(where)
                    yield doc.problem(where, f"interval ({s.interval:g}s) is shorter than the timeout "
                                             f"({s.timeout:g}s); a canary could overlap the next one")


def _email_rules(cfg: Config, doc: Document) -> Iterator[ConfigProblem]:
    e = cfg.email
    if e.acs is not None and (e.acs.connection_string is None) == (e.acs.endpoint is None):
        yield doc.problem(("email", "acs"), "set exactly one of connection_string or endpoint")
    if not cfg.reports.weekly.enabled:
        return
    weekly: KeyPath = ("reports", "weekly")
    if not cfg.reports.weekly.recipients:
        yield doc.problem((*weekly, "recipients"), "the weekly report is enabled but has no recipients")
    if not e.sender:
        yield doc.problem(("email", "sender"), "the weekly report is enabled: set the sender address")
    if (e.smtp is None) == (e.acs is None):
        yield doc.problem(("email",), "the weekly report is enabled: configure exactly one of smtp or acs")


def _interval_key(dep: Deployment, at: KeyPath, doc: Document) -> KeyPath:
    """The key to change when interval < timeout: the one written closest to the deployment."""
    if dep.interval is not None:
        return (*at, "interval")
    if dep.timeout is not None:
        return (*at, "timeout")
    if ("defaults", "timeout") in doc.lines and ("defaults", "interval") not in doc.lines:
        return ("defaults", "timeout")
    return ("defaults", "interval")


def _endpoint_rules(res: Resource, doc: Document, at: KeyPath) -> Iterator[ConfigProblem]:
    if res.resource is not None and res.base_url is not None:
        yield doc.problem((*at, "base_url"), "resource and base_url are mutually exclusive; keep one")
    elif res.resource is None and res.base_url is None:
        endpoint_keys = (("resource",), ("base_url",))
        names = [v for k, v in doc.empty_vars.items() if k[:2] == at and k[2:] in endpoint_keys]
        note = f" ({' and '.join(names)} {'are' if len(names) > 1 else 'is'} empty or unset)" if names else ""
        yield doc.problem(at, f"set exactly one of resource or base_url{note}")
    elif res.resource is not None and not _RESOURCE_NAME.fullmatch(res.resource):
        yield doc.problem(
            (*at, "resource"),
            "expected an Azure resource name like my-foundry (letters, digits, hyphens), "
            f'got "{doc.as_written((*at, "resource"), res.resource)}"; put a URL under base_url',
        )
    elif res.base_url is not None and not re.match(r"https?://[^/\s]+", res.base_url):
        yield doc.problem(
            (*at, "base_url"),
            "expected a URL like https://NAME.services.ai.azure.com/anthropic/, "
            f'got "{doc.as_written((*at, "base_url"), res.base_url)}"',
        )

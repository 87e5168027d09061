"""What is wrong with a checks.yaml, in words: pydantic's ValidationErrors and the rules that span several
keys, each turned into a ConfigProblem naming file, line and key path.

It is handed the root model (``problems``, ``allowed_keys``), so it imports no model: the models import it
(``named``, ``Unreadable``) and the rules across keys live in ``rules``.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from monitor.errors import ConfigProblem

from .secrets import Secret
from .yamlsource import Document
from .yamlsource import Path as KeyPath


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

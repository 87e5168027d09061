"""checks.yaml -> a frozen, validated Config. Every error names file, line and key path."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from .durations import format_duration, parse_duration
from .errors import ConfigError, ConfigProblem
from .secrets import Secret
from .yamlsource import Document, load_document
from .yamlsource import Path as KeyPath

DEFAULT_SCOPE = "https://cognitiveservices.azure.com/.default"
DEFAULT_PROMPT = "Reply with the single word OK."


# Ten years: far above any sane interval or retention (the longest default is 400d), and far below what
# would overflow downstream: timedelta (999999999 days), a datetime a duration from now (year 9999),
# threading/socket timeouts (about 292 years), APScheduler's IntervalTrigger, loop.call_later.
MAX_DURATION = 3650 * 86400.0


def _duration(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, str):
        raise ValueError(f"expected a duration like 30s or 5m, got {_named(v)}")
    return parse_duration(v)


def _in_range(v: float) -> float:
    if v <= 0:
        raise ValueError("must be longer than 0s")
    if not v <= MAX_DURATION:  # `not <=`: also catches inf (a number of digits too long for a float)
        raise ValueError(f"must be at most {format_duration(MAX_DURATION)}")
    return v


Duration = Annotated[float, BeforeValidator(_duration), AfterValidator(_in_range)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class Budget(_Model):
    monthly_usd: float | None = Field(default=None, gt=0)


class CheckSettings(_Model):
    """The `defaults` section: how each deployment is probed and judged."""

    interval: Duration = 60.0
    timeout: Duration = 30.0
    stream: bool = True
    max_tokens: int = Field(default=1, ge=1, le=4096)
    prompt: str = Field(default=DEFAULT_PROMPT, min_length=1, max_length=4000)
    confirm: int = Field(default=1, ge=0, le=10)
    confirm_interval: Duration = 5.0
    failure_threshold: int = Field(default=3, ge=1, le=100)
    success_threshold: int = Field(default=2, ge=1, le=100)
    latency_slo: Duration = 10.0
    ttft_slo: Duration | None = None


_SETTING_KEYS = tuple(CheckSettings.model_fields)


class Deployment(_Model):
    name: str = Field(min_length=1)
    model: str | None = None
    budget: Budget | None = None
    interval: Duration | None = None
    timeout: Duration | None = None
    stream: bool | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    prompt: str | None = Field(default=None, min_length=1, max_length=4000)
    confirm: int | None = Field(default=None, ge=0, le=10)
    confirm_interval: Duration | None = None
    failure_threshold: int | None = Field(default=None, ge=1, le=100)
    success_threshold: int | None = Field(default=None, ge=1, le=100)
    latency_slo: Duration | None = None
    ttft_slo: Duration | None = None

    @property
    def model_id(self) -> str:
        return self.model or self.name

    def settings(self, defaults: CheckSettings) -> CheckSettings:
        """The effective settings: this deployment's overrides on top of ``defaults``."""
        over = {k: getattr(self, k) for k in _SETTING_KEYS if getattr(self, k) is not None}
        return defaults.model_copy(update=over) if over else defaults


class EntraAuth(_Model):
    scope: str = DEFAULT_SCOPE
    client_id: str | None = None


class Auth(_Model):
    api_key: Secret | None = None
    entra: EntraAuth | None = None

    @property
    def mode(self) -> str:
        return "entra" if self.entra is not None else "api_key"


def _entra(v: Any) -> Any:
    return {} if v is None or v is True else v


class _AuthIn(Auth):
    entra: Annotated[EntraAuth | None, BeforeValidator(_entra)] = None


class Resource(_Model):
    name: str = Field(min_length=1)
    resource: str | None = None
    base_url: str | None = None
    location: str | None = None
    auth: _AuthIn | None = None
    api_key_header: Literal["x-api-key", "api-key"] = "x-api-key"
    budget: Budget | None = None
    deployments: list[Deployment] = Field(min_length=1)

    @property
    def endpoint(self) -> str:
        """Base URL ending in a slash, as the SDK builds it."""
        if self.base_url:
            return self.base_url.rstrip("/") + "/"
        return f"https://{self.resource}.services.ai.azure.com/anthropic/"

    @property
    def messages_url(self) -> str:
        return self.endpoint + "v1/messages"


class Telemetry(_Model):
    connection_string: Secret | None = None  # else $APPLICATIONINSIGHTS_CONNECTION_STRING
    credential: Literal["none", "managed_identity", "default"] = "none"  # Entra auth for ingestion
    client_id: str | None = None  # user-assigned managed identity for ingestion
    service_name: str = "foundry-monitor"
    location: str | None = None
    export_interval: Duration = 60.0
    offline_storage: bool = True  # <data_dir>/telemetry keeps what an ingestion outage would lose


class Store(_Model):
    path: str | None = None
    raw_retention: Duration = 35 * 86400.0
    rollup_retention: Duration = 400 * 86400.0


class Server(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=9464, ge=0, le=65535)
    debug_endpoints: bool = True
    bearer_token: Secret | None = None


class _Unreadable(ValueError):
    """A validator's message that quotes parts of the value; ``brief`` quotes only the whole value, which
    the loader replaces by the text as written (for a value that came from a ${VAR})."""

    def __init__(self, message: str, brief: str) -> None:
        super().__init__(message)
        self.brief = brief


def _schedule(text: str) -> str:
    from .notify.schedule import check

    try:
        return check(text)
    except ValueError as exc:  # APScheduler's reason quotes the offending field
        raise _Unreadable(str(exc), f'cannot read schedule "{text}"; write a weekday and a time like '
                                    '"mon 08:00", or five crontab fields like "0 8 * * mon"') from None


class Weekly(_Model):
    enabled: bool = False
    schedule: Annotated[str, AfterValidator(_schedule)] = "mon 08:00"  # or crontab "0 8 * * mon"
    recipients: list[str] = Field(default_factory=list)
    grace: Duration = 24 * 3600.0  # a send missed while the daemon was down is made up within this time


def _zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f'unknown time zone "{name}"; use an IANA name such as Europe/Berlin') from None
    return name


TimeZone = Annotated[str, AfterValidator(_zone)]


class Reports(_Model):
    timezone: TimeZone = "UTC"
    days: int = Field(default=30, ge=1, le=400)
    slo_target: float = Field(default=99.9, gt=0, le=100)
    workspace_id: str | None = None  # Log Analytics workspace (GUID); else $FOUNDRY_MONITOR_WORKSPACE_ID
    credential: Literal["default", "managed_identity"] = "default"  # Entra identity for the query API
    client_id: str | None = None  # a user-assigned managed identity
    endpoint: str | None = None  # the query API, if not https://api.loganalytics.io (sovereign clouds)
    weekly: Weekly = Weekly()


class Smtp(_Model):
    host: str = "localhost"
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: Secret | None = None
    ca_file: str | None = None  # a private CA for the server's certificate
    timeout: Duration = 30.0


class Acs(_Model):
    """Azure Communication Services Email: a connection string, or an endpoint with Entra ID."""

    connection_string: Secret | None = None
    endpoint: str | None = None
    credential: Literal["managed_identity", "default"] = "default"
    client_id: str | None = None


class Email(_Model):
    sender: str | None = None
    smtp: Smtp | None = None
    acs: Acs | None = None


class Config(_Model):
    data_dir: str = "./data"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    defaults: CheckSettings = CheckSettings()
    resources: list[Resource] = Field(min_length=1)
    telemetry: Telemetry = Telemetry()
    store: Store = Store()
    server: Server = Server()
    reports: Reports = Reports()
    email: Email = Email()
    source: str = Field(default="checks.yaml", exclude=True)

    def targets(self) -> Iterator[tuple[Resource, Deployment, CheckSettings]]:
        for res in self.resources:
            for dep in res.deployments:
                yield res, dep, dep.settings(self.defaults)


# --- loading -----------------------------------------------------------------------------------------


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
        allowed = ", ".join(_allowed_keys(()))
        raise ConfigError([doc.problem(("source",), f"unknown key; allowed here: {allowed}")])
    try:
        cfg = Config.model_validate({**data, "source": file})
    except ValidationError as exc:
        raise ConfigError(_problems(doc, exc)) from None
    problems = list(_rules(cfg, doc))
    if problems:
        raise ConfigError(problems)
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


def _problems(doc: Document, exc: ValidationError) -> list[ConfigProblem]:
    out = []
    for err in exc.errors(include_url=False):
        loc = _key_path(doc.data, err["loc"])
        got = err.get("input")
        shown = _shown(got, doc, loc, err["type"])
        message = _message(err, loc, shown, from_env=loc in doc.written)
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


def _message(err: Any, loc: KeyPath, shown: str, from_env: bool) -> str:
    kind, got = err["type"], err.get("input")
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        near = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean `{near[0]}`?" if near else f"; allowed here: {', '.join(allowed)}"
        return f"unknown key{hint}"
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        error = err.get("ctx", {}).get("error")
        if from_env and isinstance(error, _Unreadable):
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


def _shown(got: Any, doc: Document, loc: KeyPath, kind: str) -> str:
    """The offending value as an error may show it. Text is shown as written (a ${VAR} stays a reference),
    except at a secret key, and except where a mapping was expected: a block written on one line (`auth:
    api_key=...`) would be printed, so only text made of this mapping's key names and ${VAR}s is shown."""
    if not isinstance(got, str):
        return _named(got)
    text = doc.as_written(loc, got)
    if any(part in _SECRET_KEYS for part in loc) or (
            kind in _MAPPING_EXPECTED and not _only_key_names(text, loc)):
        return "a string"
    return f'"{text}"'


def _named(got: Any) -> str:
    """A value that is not text: a number or true/false as given; anything else by its kind only (a list
    or mapping may hold an expanded ${VAR})."""
    if got is None or isinstance(got, bool | int | float):
        return repr(got)
    if isinstance(got, dict):
        return "a mapping"
    if isinstance(got, list):
        return "a list"
    return f"a {type(got).__name__}"


def _only_key_names(text: str, loc: KeyPath) -> bool:
    allowed = _allowed_keys(loc)
    return all(w in allowed or _REFERENCE.fullmatch(w) for w in re.split(r"[\s:=]+", text.strip()))


def _allowed_keys(loc: KeyPath) -> list[str]:
    model: Any = Config
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
    """The names of every Secret field in ``model`` and the models under it."""

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


_SECRET_KEYS = _secret_keys(Config)  # api_key, bearer_token, password, connection_string


_RESOURCE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?")


def _rules(cfg: Config, doc: Document) -> Iterator[ConfigProblem]:
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

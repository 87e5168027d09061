"""The config loader: every invalid file gets one exact, line-numbered message; valid files load."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitor import config
from monitor.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CHECKS_YAML = ROOT / "checks.yaml"
DATA = Path(__file__).resolve().parent / "data" / "config"
FIXTURES = sorted(DATA.glob("invalid-*.yaml"))

FAKE_KEY = "sk-fake-DO-NOT-PRINT-1234"
# Every fixture is loaded with exactly this environment, never the machine's.
FIXTURE_ENV = {"ANTHROPIC_FOUNDRY_API_KEY": FAKE_KEY}
SDK_ENV = {"ANTHROPIC_FOUNDRY_RESOURCE": "my-foundry", "ANTHROPIC_FOUNDRY_API_KEY": FAKE_KEY}

MINIMAL = """\
resources:
  - name: main
    resource: my-foundry
    auth:
      api_key: sk-test
    deployments:
      - name: claude-haiku-4-5
"""


def expected_message(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    match = re.fullmatch(r"# expect: (.+)", first)
    assert match, f"{path.name}: the first line must be `# expect: <message>`"
    return match.group(1)


def load_error(text: str, env: dict[str, str], file: str = "checks.yaml") -> str:
    with pytest.raises(ConfigError) as info:
        config.loads(text, file, env)
    return str(info.value)


# --- invalid files --------------------------------------------------------------------------------


def test_there_is_one_fixture_per_mistake_for_at_least_fourteen_mistakes() -> None:
    assert len(FIXTURES) >= 14
    messages = [expected_message(p) for p in FIXTURES]
    assert len(set(messages)) == len(messages)


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem.removeprefix("invalid-") for p in FIXTURES])
def test_invalid_config_is_reported_with_its_exact_message(path: Path) -> None:
    expected = expected_message(path)
    assert expected.startswith(f"{path.name}:"), "the message must start with the file name"
    with pytest.raises(ConfigError) as info:
        config.load(path, env=FIXTURE_ENV)
    # config.load names the file as it was given (here an absolute path); the fixture shows its name.
    assert str(info.value) == str(path) + expected.removeprefix(path.name)
    assert len(info.value.problems) == 1, "each fixture holds exactly one mistake"
    assert FAKE_KEY not in str(info.value)


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem.removeprefix("invalid-") for p in FIXTURES])
def test_invalid_config_message_points_at_a_line_inside_the_file(path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(path, env=FIXTURE_ENV)
    line = info.value.problems[0].line
    n_lines = len(path.read_text(encoding="utf-8").splitlines())
    assert line is not None and 1 <= line <= n_lines


def test_missing_file_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        config.load(missing, env={})
    assert str(info.value) == f"{missing}: no such file (pass --config PATH or set FOUNDRY_MONITOR_CONFIG)"


def test_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(MINIMAL.replace("main", "m\xe4in").encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        config.load(bad, env={})
    assert str(info.value) == f"{bad}: cannot read: not UTF-8 text"


def test_a_mistake_in_the_defaults_is_reported_once_not_once_per_deployment() -> None:
    text = CHECKS_YAML.read_text(encoding="utf-8").replace("interval: 60s", "interval: 10s")
    message = load_error(text, SDK_ENV)
    assert message.count("interval (10s) is shorter than the timeout (30s)") == 1
    assert ": defaults.interval: " in message


def test_several_mistakes_are_all_reported_one_per_line() -> None:
    text = MINIMAL.replace("      - name: claude-haiku-4-5\n",
                           "      - name: claude-haiku-4-5\n        interval: fast\n        stream: maybe\n")
    assert load_error(text, {}).splitlines() == [
        'checks.yaml:8: resources[0].deployments[0].interval: expected a duration like 30s or 5m, got "fast"',
        'checks.yaml:9: resources[0].deployments[0].stream: expected true or false, got "maybe"',
    ]


def test_a_misindented_resource_does_not_print_its_api_key_in_the_error() -> None:
    text = CHECKS_YAML.read_text(encoding="utf-8").replace("  - name: default", "    name: default")
    message = load_error(text, SDK_ENV)
    assert "resources: expected a list (lines starting with -), got a mapping" in message
    assert FAKE_KEY not in message


@pytest.mark.parametrize("key", ["function-", "function-after[x]", "nullable["])
def test_an_unknown_key_that_looks_like_a_pydantic_location_step_is_still_reported(key: str) -> None:
    message = load_error(MINIMAL + f"        {key}: 1\n", {})
    where = f"checks.yaml:8: resources[0].deployments[0].{key}"
    assert message.startswith(f"{where}: unknown key; allowed here: name, model, ")


@pytest.mark.parametrize("depth", [60, 3000])
def test_deeply_nested_yaml_is_a_config_error_not_a_crash(depth: int) -> None:
    message = load_error("a: " + "[" * depth + "]" * depth + "\n", {})
    assert "nested" in message


def test_a_control_character_is_reported_with_its_line() -> None:
    assert load_error(MINIMAL + "data_dir: a\x00b\n", {}) == (
        "checks.yaml:8: invalid YAML: unacceptable character #x0000: special characters are not allowed"
    )


# --- the shipped checks.yaml ------------------------------------------------------------------------


def test_shipped_checks_yaml_loads_with_the_sdk_resource_and_key_variables() -> None:
    cfg = config.load(CHECKS_YAML, env=SDK_ENV)
    (res,) = cfg.resources
    assert res.endpoint == "https://my-foundry.services.ai.azure.com/anthropic/"
    assert res.base_url is None
    assert res.auth is not None and res.auth.mode == "api_key"
    assert res.auth.api_key is not None and res.auth.api_key.reveal() == FAKE_KEY
    assert [d.name for d in res.deployments] == [
        "claude-opus-4-5", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1",
    ]
    assert cfg.source == str(CHECKS_YAML)
    assert FAKE_KEY not in repr(cfg) and FAKE_KEY not in str(cfg.model_dump())


def test_shipped_checks_yaml_loads_with_the_sdk_base_url_variable_instead() -> None:
    env = {"ANTHROPIC_FOUNDRY_BASE_URL": "https://gw.example.com/anthropic",
           "ANTHROPIC_FOUNDRY_API_KEY": FAKE_KEY}
    (res,) = config.load(CHECKS_YAML, env=env).resources
    assert res.resource is None
    assert res.endpoint == "https://gw.example.com/anthropic/"
    assert res.messages_url == "https://gw.example.com/anthropic/v1/messages"


def test_shipped_checks_yaml_without_the_api_key_names_the_variable_and_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        config.load(CHECKS_YAML, env={"ANTHROPIC_FOUNDRY_RESOURCE": "my-foundry"})
    (problem,) = info.value.problems
    assert problem.path == "resources[0].auth.api_key"
    assert problem.message.startswith("environment variable ANTHROPIC_FOUNDRY_API_KEY is not set")


def test_shipped_checks_yaml_with_no_variables_set_names_the_api_key_variable() -> None:
    with pytest.raises(ConfigError) as info:
        config.load(CHECKS_YAML, env={})
    assert "ANTHROPIC_FOUNDRY_API_KEY" in str(info.value)


def test_shipped_checks_yaml_without_resource_or_base_url_names_both_variables() -> None:
    with pytest.raises(ConfigError) as info:
        config.load(CHECKS_YAML, env={"ANTHROPIC_FOUNDRY_API_KEY": FAKE_KEY})
    (problem,) = info.value.problems
    assert problem.path == "resources[0]"
    assert problem.message == ("set exactly one of resource or base_url (ANTHROPIC_FOUNDRY_RESOURCE and "
                               "ANTHROPIC_FOUNDRY_BASE_URL are empty or unset)")


def test_shipped_checks_yaml_with_both_resource_and_base_url_is_an_error() -> None:
    env = {**SDK_ENV, "ANTHROPIC_FOUNDRY_BASE_URL": "https://gw.example.com/anthropic/"}
    with pytest.raises(ConfigError) as info:
        config.load(CHECKS_YAML, env=env)
    (problem,) = info.value.problems
    assert problem.message == "resource and base_url are mutually exclusive; keep one"


# --- variables and secrets ------------------------------------------------------------------------


def _data_dir(value: str, env: dict[str, str]) -> str:
    return config.loads(MINIMAL + f"data_dir: {value}\n", "checks.yaml", env).data_dir


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${DIR:-/var/lib/fm}", {}, "/var/lib/fm"),
        ("${DIR:-/var/lib/fm}", {"DIR": "/srv/fm"}, "/srv/fm"),
        ("${DIR:-/var/lib/fm}", {"DIR": ""}, "/var/lib/fm"),
        ("${DIR}", {"DIR": "/srv/fm"}, "/srv/fm"),
        ("/data/${SUB}/x", {"SUB": "a"}, "/data/a/x"),
        ("'$${DIR}'", {"DIR": "/srv/fm"}, "${DIR}"),
    ],
)
def test_environment_variables_are_expanded(value: str, env: dict[str, str], expected: str) -> None:
    assert _data_dir(value, env) == expected


def test_the_machine_environment_is_not_used_when_an_env_mapping_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FM_TEST_DIR", "/from/the/machine")
    assert _data_dir("${FM_TEST_DIR:-/default}", {}) == "/default"


def _api_key(env: dict[str, str]) -> str:
    text = MINIMAL.replace("api_key: sk-test", "api_key: ${MY_KEY}")
    auth = config.loads(text, "checks.yaml", env).resources[0].auth
    assert auth is not None and auth.api_key is not None
    return auth.api_key.reveal()


def test_a_secret_can_come_from_a_file_named_by_var_file(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text(FAKE_KEY + "\n", encoding="utf-8")
    assert _api_key({"MY_KEY_FILE": str(secret)}) == FAKE_KEY


def test_the_variable_itself_wins_over_var_file(tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("from-file", encoding="utf-8")
    assert _api_key({"MY_KEY": "from-env", "MY_KEY_FILE": str(secret)}) == "from-env"


def test_an_unreadable_var_file_names_the_variable_file_and_key(tmp_path: Path) -> None:
    missing = tmp_path / "absent"
    text = MINIMAL.replace("api_key: sk-test", "api_key: ${MY_KEY}")
    assert load_error(text, {"MY_KEY_FILE": str(missing)}) == (
        f"checks.yaml:5: resources[0].auth.api_key: cannot read MY_KEY_FILE ({missing}): "
        "No such file or directory"
    )


def test_an_api_key_is_masked_when_printed() -> None:
    text = MINIMAL.replace("api_key: sk-test", f"api_key: {FAKE_KEY}")
    auth = config.loads(text, "checks.yaml", {}).resources[0].auth
    assert auth is not None and auth.api_key is not None
    assert FAKE_KEY not in f"{auth!r} {auth} {auth.api_key}"


# --- durations and defaults -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1d", 86400.0), ("1m30s", 90.0)],
)
def test_durations_parse_to_seconds(text: str, seconds: float) -> None:
    cfg = config.loads(f"defaults:\n  interval: {text}\n  timeout: 100ms\n" + MINIMAL, "checks.yaml", {})
    assert cfg.defaults.interval == seconds


@pytest.mark.parametrize("text", ["fast", "30", "5 minutes", "-5s", "0s", "5M5"])
def test_bad_durations_are_rejected_with_the_expected_form(text: str) -> None:
    message = load_error(f"defaults:\n  latency_slo: {text}\n" + MINIMAL, {})
    assert message.startswith("checks.yaml:2: defaults.latency_slo: ")
    assert "expected a duration like 30s or 5m" in message or "must be longer than 0s" in message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("defaults:\n  interval: 99999999999d\n", "checks.yaml:2: defaults.interval"),  # past timedelta
        ("defaults:\n  timeout: 3651d\n", "checks.yaml:2: defaults.timeout"),
        ("defaults:\n  latency_slo: 1" + "0" * 400 + "d\n", "checks.yaml:2: defaults.latency_slo"),  # inf
        ("store:\n  rollup_retention: 5000d\n", "checks.yaml:2: store.rollup_retention"),
        ("reports:\n  weekly:\n    grace: 87600000h\n", "checks.yaml:3: reports.weekly.grace"),
    ],
    ids=["past-timedelta", "one-day-over", "past-float", "retention", "hours"],
)
def test_a_duration_too_long_to_schedule_is_rejected_with_the_limit(text: str, where: str) -> None:
    assert load_error(text + MINIMAL, {}) == f"{where}: must be at most 3650d"


def test_a_deployment_interval_too_long_names_the_deployment_key() -> None:
    message = load_error(MINIMAL + "        interval: 10000d\n", {})
    assert message == "checks.yaml:8: resources[0].deployments[0].interval: must be at most 3650d"


def test_the_longest_duration_allowed_is_ten_years() -> None:
    text = "defaults:\n  interval: 3650d\nstore:\n  rollup_retention: 3650d\n" + MINIMAL
    cfg = config.loads(text, "checks.yaml", {})
    assert cfg.defaults.interval == cfg.store.rollup_retention == config.MAX_DURATION == 3650 * 86400.0


@pytest.mark.parametrize(
    ("value", "kind"),
    [("\n    - ${MY_KEY}", "a list"), ("\n    every: ${MY_KEY}", "a mapping"), ("[30s]", "a list"),
     ("2024-01-01", "a date")],
    ids=["list", "mapping", "flow-list", "date"],
)
def test_a_duration_given_as_a_list_or_mapping_names_its_kind_not_its_content(value: str, kind: str) -> None:
    message = load_error(f"defaults:\n  interval: {value}\n" + MINIMAL, {"MY_KEY": FAKE_KEY})
    assert message == f"checks.yaml:2: defaults.interval: expected a duration like 30s or 5m, got {kind}"


def test_defaults_are_as_documented() -> None:
    cfg = config.loads(MINIMAL, "checks.yaml", {})
    d = cfg.defaults
    assert (d.interval, d.timeout, d.stream, d.max_tokens) == (60.0, 30.0, True, 1)
    assert (d.failure_threshold, d.success_threshold) == (3, 2)
    (res,) = cfg.resources
    assert res.api_key_header == "x-api-key"
    assert cfg.server.port == 9464


def test_deployment_model_defaults_to_its_name() -> None:
    text = MINIMAL + "      - name: opus-prod\n        model: claude-opus-4-5\n"
    deps = config.loads(text, "checks.yaml", {}).resources[0].deployments
    assert [(d.name, d.model_id) for d in deps] == [
        ("claude-haiku-4-5", "claude-haiku-4-5"), ("opus-prod", "claude-opus-4-5"),
    ]


def test_a_deployment_overrides_only_the_defaults_it_names() -> None:
    text = "defaults:\n  interval: 2m\n" + MINIMAL + "        interval: 5m\n        stream: false\n"
    cfg = config.loads(text, "checks.yaml", {})
    ((_, _, s),) = list(cfg.targets())
    assert (s.interval, s.stream, s.timeout, s.max_tokens) == (300.0, False, 30.0, 1)


@pytest.mark.parametrize("entra", ["entra:", "entra: {}", "entra: true"])
def test_entra_auth_uses_the_cognitive_services_scope_by_default(entra: str) -> None:
    text = MINIMAL.replace("api_key: sk-test", entra)
    auth = config.loads(text, "checks.yaml", {}).resources[0].auth
    assert auth is not None and auth.entra is not None and auth.mode == "entra"
    assert auth.entra.scope == "https://cognitiveservices.azure.com/.default"
    assert auth.entra.client_id is None


def test_api_key_header_may_be_api_key() -> None:
    text = MINIMAL.replace("    auth:", "    api_key_header: api-key\n    auth:")
    assert config.loads(text, "checks.yaml", {}).resources[0].api_key_header == "api-key"


# --- never anything but Config or ConfigError --------------------------------------------------------

CONFIG_WORDS = [
    "resources", "defaults", "name", "resource", "base_url", "auth", "api_key", "entra", "scope",
    "client_id", "deployments", "model", "interval", "timeout", "stream", "max_tokens", "server", "port",
    "telemetry", "store", "reports", "email", "smtp", "weekly", "budget", "<<", "source",
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["30s", "500ms", "5m", "fast", "${X}", "${X:-}", "$${X}", "https://x/", "my-foundry"]),
)
keys = st.one_of(st.sampled_from(CONFIG_WORDS), st.text(max_size=10), st.integers(-3, 3), st.booleans())
documents = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)
envs = st.sampled_from([{}, SDK_ENV, {"ANTHROPIC_FOUNDRY_API_KEY": "", "X": "1"}])


def _loads_or_config_error(text: str, env: dict[str, str]) -> None:
    try:
        cfg = config.loads(text, "checks.yaml", env)
    except ConfigError as exc:
        assert exc.problems and all(p.file == "checks.yaml" and p.message for p in exc.problems)
        assert str(exc).startswith("checks.yaml")
        assert FAKE_KEY not in str(exc)
    else:
        assert isinstance(cfg, config.Config)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents, env=envs)
def test_random_yaml_documents_load_or_raise_config_error(doc: Any, env: dict[str, str]) -> None:
    _loads_or_config_error(yaml.safe_dump(doc, allow_unicode=True), env)


CHECKS_LINES = CHECKS_YAML.read_text(encoding="utf-8").splitlines(keepends=True)


@st.composite
def mutated_checks_yaml(draw: st.DrawFn) -> str:
    lines = list(CHECKS_LINES)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "indent", "dedent", "replace"]))
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, line)
        elif op == "swap" and len(line) > 2:
            j = draw(st.integers(0, len(line) - 2))
            lines[i] = line[:j] + line[j + 1] + line[j] + line[j + 2:]
        elif op == "insert":
            j = draw(st.integers(0, len(line)))
            lines[i] = line[:j] + draw(st.text(max_size=8)) + line[j:]
        elif op == "indent":
            lines[i] = " " * draw(st.integers(1, 4)) + line
        elif op == "dedent":
            lines[i] = line[draw(st.integers(1, 4)):] if line.startswith(" ") else line
        elif op == "replace":
            lines[i] = line.replace(":", draw(st.sampled_from(["", " :", ": [", ": {", ": -", ":\t"])), 1)
        if not lines:
            lines = [""]
    return "".join(lines)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=mutated_checks_yaml(), env=envs)
def test_mutations_of_checks_yaml_load_or_raise_config_error(text: str, env: dict[str, str]) -> None:
    _loads_or_config_error(text, env)


def test_unmutated_checks_yaml_is_the_starting_point_of_the_mutations() -> None:
    assert isinstance(config.loads("".join(CHECKS_LINES), "checks.yaml", SDK_ENV), config.Config)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("  interval: ${MY_KEY}", 'defaults.interval: expected a duration like 30s or 5m, got "${MY_KEY}"'),
        ("  max_tokens: x${MY_KEY}", 'defaults.max_tokens: expected a whole number, got "x${MY_KEY}"'),
    ],
)
def test_an_error_shows_the_variable_as_written_not_its_value(line: str, expected: str) -> None:
    message = load_error(f"defaults:\n{line}\n" + MINIMAL, {"MY_KEY": FAKE_KEY})
    assert message == f"checks.yaml:2: {expected}"


TWO_RESOURCES = MINIMAL + MINIMAL.removeprefix("resources:\n").replace("name: main", "name: ${B}")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (MINIMAL.replace("resource: my-foundry", "resource: ${MY_KEY}.example"),
         "checks.yaml:3: resources[0].resource: expected an Azure resource name like my-foundry (letters, "
         'digits, hyphens), got "${MY_KEY}.example"; put a URL under base_url'),
        (MINIMAL.replace("resource: my-foundry", "base_url: x${MY_KEY}"),
         "checks.yaml:3: resources[0].base_url: expected a URL like "
         'https://NAME.services.ai.azure.com/anthropic/, got "x${MY_KEY}"'),
        (TWO_RESOURCES.replace("name: main", "name: ${MY_KEY}"),
         'checks.yaml:8: resources[1].name: duplicate resource name "${B}" (also resources[0])'),
        (MINIMAL.replace("name: main", "name: ${MY_KEY:-main}").replace(
            "- name: claude-haiku-4-5", "- name: ${MY_KEY}\n      - name: ${MY_KEY}"),
         'checks.yaml:8: resources[0].deployments[1].name: duplicate deployment name "${MY_KEY}" in resource '
         '"${MY_KEY:-main}" (also deployments[0])'),
    ],
    ids=["resource", "base_url", "duplicate-resource", "duplicate-deployment"],
)
def test_a_cross_key_error_shows_the_variable_as_written_not_its_value(text: str, expected: str) -> None:
    assert load_error(text, {"MY_KEY": FAKE_KEY, "B": FAKE_KEY}) == expected


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("    auth: api_key sk-live-1234", "resources[0].auth: expected a mapping of keys, got a string"),
        ("    auth: api_key=sk-live-1234", "resources[0].auth: expected a mapping of keys, got a string"),
        ("    auth: sk-live-1234", "resources[0].auth: expected a mapping of keys, got a string"),
        ("    auth: entra", 'resources[0].auth: expected a mapping of keys, got "entra"'),
        ("    auth: api_key=${MY_KEY}",
         'resources[0].auth: expected a mapping of keys, got "api_key=${MY_KEY}"'),
        ("    auth: ${MY_KEY:-sk-live-1234}", "resources[0].auth: expected a mapping of keys, got a string"),
    ],
    ids=["missing-colon", "key-equals-value", "bare-key", "key-name-only", "key-name-and-variable",
         "variable-with-a-literal-default"],
)
def test_text_where_a_mapping_was_expected_is_shown_only_if_it_holds_no_value(
    block: str, expected: str
) -> None:
    """One-line text for a block may be the block's content (a key); it is shown only when it is made of the
    block's key names and ${VAR} references, as with a missing colon after `api_key`."""
    text = MINIMAL.replace("    auth:\n      api_key: sk-test", block)
    message = load_error(text, {"MY_KEY": FAKE_KEY})
    assert message == f"checks.yaml:4: {expected}"
    assert "sk-live" not in message and FAKE_KEY not in message


@pytest.mark.parametrize(("section", "expected"), [
    ("email:\n  smtp: password=hunter22", "email.smtp: expected a mapping of keys, got a string"),
    ("server: bearer_token hunter22", "server: expected a mapping of keys, got a string"),
    ("telemetry: InstrumentationKey=hunter22", "telemetry: expected a mapping of keys, got a string"),
    ("server:\n  bearer_token: 22222222", "server.bearer_token: expected a string"),  # YAML read a number
    ("email:\n  smtp:\n    password: [hunter22]", "email.smtp.password: expected a string"),
])
def test_a_secret_written_in_the_wrong_shape_is_not_printed(section: str, expected: str) -> None:
    message = load_error(MINIMAL + section + "\n", {})
    assert message.endswith(f": {expected}")
    assert "hunter22" not in message and "22222222" not in message

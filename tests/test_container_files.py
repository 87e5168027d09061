"""The container and deployment files, checked without a container engine or Azure (scripts/container-smoke
builds and runs the image for real): the Dockerfile's instructions and what its CMD and HEALTHCHECK ask of the
real CLI, the build context (.dockerignore), compose.yaml and every file it mounts, the Prometheus config
(promtool), the compose demo (config, emulator scenario, the monitor's config choice), and
deploy/azure/main.bicep: syntax (tree-sitter-bicep), the alerts module and its parameters, roles, probes,
secrets, the checks.yaml it generates (loaded by the real config loader) and the parameters example."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import tree_sitter_bicep
import yaml
from tree_sitter import Language, Node, Parser

from monitor import config as config_mod
from monitor.cli import build_parser
from monitor.emulator.scenario import load as load_scenario

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "compose.yaml"
COMPOSE_DIR = ROOT / "deploy" / "compose"
PROMETHEUS = COMPOSE_DIR / "prometheus.yml"
DEMO_CONFIG = COMPOSE_DIR / "demo-checks.yaml"
SCENARIO = COMPOSE_DIR / "emulator-scenario.yaml"
AZURE = ROOT / "deploy" / "azure"
MAIN_BICEP = AZURE / "main.bicep"
ALERTS_BICEP = AZURE / "alerts.bicep"
MAIN_PARAMETERS = AZURE / "main.parameters.example.json"
DATA_DIR = "/var/lib/foundry-monitor"
CONFIG_PATH = "/etc/foundry-monitor/checks.yaml"
PORT = 9464

# Roles main.bicep must assign (built-in role definition ids, the same in every tenant).
ROLE_IDS = {
    "Cognitive Services User": "a97b65f3-24c7-4388-baec-2e87135dc908",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
    "Log Analytics Reader": "73c42c96-874c-492b-b04d-ab87d138a893",
    "Key Vault Secrets User": "4633458b-17de-408a-b874-0445c86b69e6",
    "Reader": "acdd72a7-3385-48ef-bd42-f606fba81ae7",  # discovery reads the control plane
}


# --- Dockerfile ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int
    stage: int  # index of the FROM it belongs to; -1 before the first FROM

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
        return value


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions, continuation lines joined; comment lines (also inside a continuation) dropped."""
    out: list[Instruction] = []
    stage = -1
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1])
            continue
        buffer.append(stripped)
        keyword, _, args = " ".join(buffer).partition(" ")
        buffer = []
        if keyword.upper() == "FROM":
            stage += 1
        out.append(Instruction(keyword.upper(), args.strip(), start, stage))
    assert not buffer, "the Dockerfile ends inside a continuation"
    return out


@cache
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [i for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the final stage, found {len(found)}"
    return found[0]


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for i in instructions:
        if i.keyword == "ENV":
            for key, value in re.findall(r'(\w+)=("[^"]*"|\S+)', i.args):
                env[key] = value.strip('"')
    return env


def test_dockerfile_parser_reads_continuations_and_skips_comments() -> None:
    parsed = parse_dockerfile("ARG A=1\n# c\nFROM x AS b\nRUN a \\\n  # inside\n  && b\nFROM y\nUSER 1\n")
    assert [(i.keyword, i.args, i.stage) for i in parsed] == [
        ("ARG", "A=1", -1), ("FROM", "x AS b", 0), ("RUN", "a  && b", 0), ("FROM", "y", 1), ("USER", "1", 1),
    ]


def test_base_image_is_a_build_argument_with_an_official_slim_default() -> None:
    instructions = dockerfile()
    head = [i for i in instructions if i.stage == -1 and i.keyword == "ARG"]
    assert any(i.args == "BASE_IMAGE=python:3.11-slim-bookworm" for i in head), \
        "ARG BASE_IMAGE=python:3.11-slim-bookworm must come before the first FROM"
    froms = [i.args.split()[0] for i in instructions if i.keyword == "FROM"]
    assert len(froms) >= 2, "a multi-stage build: a build stage and a runtime stage"
    assert all(f == "${BASE_IMAGE}" for f in froms), f"every stage starts from ${{BASE_IMAGE}}: {froms}"


def test_final_stage_copies_the_venv_from_the_build_stage() -> None:
    instructions = dockerfile()
    build = next(i for i in instructions if i.keyword == "FROM")
    alias = build.args.split()[-1]
    assert " AS " in build.args.upper(), "the build stage is named"
    final = final_stage(instructions)
    copies = [i.args for i in final if i.keyword == "COPY" and i.args.startswith(f"--from={alias} ")]
    assert copies, f"the final stage copies the venv from the {alias} stage"
    build_text = " ".join(i.args for i in instructions if i.stage == build.stage and i.keyword == "RUN")
    assert "pip wheel" in build_text and "venv" in build_text, "the build stage builds a wheel into a venv"
    final_runs = " ".join(i.args for i in final if i.keyword == "RUN")
    assert "pip install" not in final_runs and "gcc" not in final_runs, "nothing is built in the final stage"


def test_final_stage_runs_as_an_unprivileged_user() -> None:
    user = only(final_stage(dockerfile()), "USER").args
    name = user.split(":")[0]
    assert name not in ("", "root", "0"), f"USER {user} is root"


def test_entrypoint_cmd_and_healthcheck_are_real_commands_of_the_cli() -> None:
    final = final_stage(dockerfile())
    assert only(final, "ENTRYPOINT").exec_form() == ["foundry-monitor"]
    cmd = only(final, "CMD").exec_form()
    assert cmd[:3] == ["run", "--config", CONFIG_PATH]
    args = build_parser().parse_args(cmd)  # exits (SystemExit) on an option the CLI does not have
    assert (args.host, args.port, args.log_format, args.config) == ("0.0.0.0", PORT, "json", CONFIG_PATH)
    health = only(final, "HEALTHCHECK").args
    match = re.search(r"\bCMD\s+(\[.*\])\s*$", health)
    assert match, f"HEALTHCHECK in exec form: {health}"
    probe = json.loads(match.group(1))
    assert probe[:2] == ["foundry-monitor", "health"]
    parsed = build_parser().parse_args(probe[1:])
    assert urlsplit(parsed.url).port == PORT, "the HEALTHCHECK asks the port the CMD listens on"


def test_signals_data_volume_port_and_environment() -> None:
    final = final_stage(dockerfile())
    assert only(final, "STOPSIGNAL").args == "SIGTERM"
    assert DATA_DIR in only(final, "VOLUME").args
    assert only(final, "EXPOSE").args.split() == [str(PORT)]
    env = env_of(final)
    assert env.get("FOUNDRY_MONITOR_DATA_DIR") == DATA_DIR
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert "fonts-dejavu-core" in " ".join(i.args for i in final if i.keyword == "RUN")


# --- the build context --------------------------------------------------------------------------------------


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, regex) per line of .dockerignore, in Docker's syntax (*, ?, **, leading !)."""
    out = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        for part in re.split(r"(\*\*/?|\*|\?)", pattern):
            if part in ("**", "**/"):
                regex += "(?:.*/)?" if part == "**/" else ".*"
            elif part == "*":
                regex += "[^/]*"
            elif part == "?":
                regex += "[^/]"
            else:
                regex += re.escape(part)
        out.append((exception, re.compile(regex + "(?:/.*)?")))
    return out


def in_context(path: str) -> bool:
    """Whether the build context holds `path` (the last matching line wins, as in Docker)."""
    included = True
    for exception, regex in dockerignore_patterns():
        if regex.fullmatch(path):
            included = exception
    return included


def test_dockerignore_keeps_the_context_to_what_the_image_needs() -> None:
    for path in ("pyproject.toml", "README.md", "checks.yaml", "monitor/cli.py", "monitor/reports/kql/x.kql"):
        assert in_context(path), f"{path} is needed by the Dockerfile but left out of the context"
    for path in (".venv/bin/python", ".git/HEAD", "tests/node_modules/a/b.js", "test-artifacts/page.png",
                 "data/results.sqlite3", ".cache/container/storage/overlay/x", ".mypy_cache/x.json",
                 "monitor/__pycache__/cli.cpython-311.pyc", "tests/test_config.py", "Dockerfile"):
        assert not in_context(path), f"{path} would be sent to the builder"


def test_every_copy_source_exists_and_is_in_the_context() -> None:
    for i in dockerfile():
        if i.keyword != "COPY" or i.args.startswith("--from="):
            continue
        *sources, _ = i.args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"line {i.line}: COPY {source}: no such file"
            assert in_context(source), f"line {i.line}: COPY {source} is excluded by .dockerignore"


# --- compose.yaml -------------------------------------------------------------------------------------------

# The service keys of the compose specification (compose-spec/compose-go schema): a typo is an error there.
SERVICE_KEYS = set("""
    annotations attach build blkio_config cap_add cap_drop cgroup cgroup_parent command configs
    container_name cpu_count cpu_percent cpu_shares cpu_quota cpu_period cpu_rt_period
    cpu_rt_runtime cpus cpuset credential_spec depends_on deploy develop device_cgroup_rules devices
    dns dns_opt dns_search domainname entrypoint env_file environment expose extends external_links
    extra_hosts gpus group_add healthcheck hostname image init ipc isolation labels links logging
    mac_address mem_limit mem_reservation mem_swappiness memswap_limit network_mode networks
    oom_kill_disable oom_score_adj pid pids_limit platform ports privileged profiles pull_policy
    read_only restart runtime scale security_opt shm_size secrets sysctls stdin_open
    stop_grace_period stop_signal storage_opt tmpfs tty ulimits user uts userns_mode volumes
    volumes_from working_dir
""".split())
TOP_LEVEL_KEYS = set("version name include services networks volumes secrets configs models".split())


@cache
def compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def services() -> dict[str, dict[str, Any]]:
    found = compose()["services"]
    assert isinstance(found, dict)
    return found


def mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(source, target, mode) of every short-syntax volume entry."""
    out = []
    for entry in service.get("volumes", []):
        assert isinstance(entry, str), f"use the short volume syntax: {entry}"
        source, target, *mode = entry.split(":")
        out.append((source, target, mode[0] if mode else "rw"))
    return out


def test_compose_uses_only_keys_of_the_compose_specification() -> None:
    extra = {k for k in compose() if not k.startswith("x-")} - TOP_LEVEL_KEYS
    assert not extra, f"unknown top-level keys: {extra}"
    for name, service in services().items():
        unknown = set(service) - SERVICE_KEYS
        assert not unknown, f"service {name}: unknown keys {unknown}"


def test_compose_services_profiles_and_references() -> None:
    found = services()
    assert {"foundry-monitor", "prometheus", "grafana", "emulator"} <= set(found)
    assert found["emulator"].get("profiles") == ["demo"], "the emulator is the demo profile's"
    assert all("profiles" not in s for n, s in found.items() if n != "emulator")
    declared_volumes = set(compose().get("volumes") or {})
    for name, service in found.items():
        for dependency in service.get("depends_on", []):
            assert dependency in found, f"{name} depends on an undefined service {dependency}"
        for source, _target, _ in mounts(service):
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in declared_volumes, f"{name} uses volume {source}, not declared at the top"
        build = service.get("build")
        if build:
            assert (ROOT / build["context"] / "Dockerfile").exists()
    assert found["emulator"]["image"] == found["foundry-monitor"]["image"], "the emulator runs the same image"


def test_compose_monitor_config_volume_and_port() -> None:
    monitor = services()["foundry-monitor"]
    by_target = {target: (source, mode) for source, target, mode in mounts(monitor)}
    assert by_target[CONFIG_PATH] == ("./checks.yaml", "ro"), "the config is mounted read-only"
    assert by_target["/etc/foundry-monitor/demo-checks.yaml"] == ("./deploy/compose/demo-checks.yaml", "ro")
    source, _ = by_target[DATA_DIR]
    assert not source.startswith("."), "the data dir is a named volume"
    assert any(str(p).endswith(f":{PORT}:{PORT}") or str(p) == f"{PORT}:{PORT}" for p in monitor["ports"])


def run_monitor_command(tmp_path: Path, emulator_resolves: bool) -> dict[str, Any]:
    """The monitor service's entrypoint and command, as compose runs them, with stand-ins for getent and
    foundry-monitor: what would the daemon be started with?"""
    monitor = services()["foundry-monitor"]
    entrypoint, command = monitor["entrypoint"], monitor["command"]
    assert entrypoint == ["/bin/sh", "-c"] and len(command) == 1
    script = command[0].replace("$$", "$")  # compose's escape for a literal $
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    answer = "true" if emulator_resolves else "false"
    (bin_dir / "getent").write_text(f'#!/bin/sh\n[ "$2" = emulator ] && {answer}\n')
    report = ('import json, os, sys; print(json.dumps({"argv": sys.argv[1:], '
              '"data_dir": os.environ.get("FOUNDRY_MONITOR_DATA_DIR")}))')
    (bin_dir / "foundry-monitor").write_text(f"#!/bin/sh\nexec {sys.executable} -c '{report}' \"$@\"\n")
    for stub in bin_dir.iterdir():
        stub.chmod(0o755)
    done = subprocess.run([*entrypoint, script], capture_output=True, text=True, timeout=30, check=False,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "FOUNDRY_MONITOR_DATA_DIR": DATA_DIR})
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("demo", [False, True])
def test_compose_monitor_watches_the_emulator_only_in_the_demo_profile(tmp_path: Path, demo: bool) -> None:
    started = run_monitor_command(tmp_path, emulator_resolves=demo)
    args = build_parser().parse_args(started["argv"])
    assert (args.host, args.port, args.log_format) == ("0.0.0.0", PORT, "json")
    if demo:
        assert args.config == "/etc/foundry-monitor/demo-checks.yaml"
        assert started["data_dir"] == f"{DATA_DIR}/demo", "demo results stay apart from real ones"
    else:
        assert args.config == CONFIG_PATH
        assert started["data_dir"] == DATA_DIR


def test_compose_grafana_mounts_what_the_provisioning_expects() -> None:
    grafana = services()["grafana"]
    by_source = {source: (target, mode) for source, target, mode in mounts(grafana)}
    assert by_source["./grafana/provisioning"] == ("/etc/grafana/provisioning", "ro")
    dashboards_target, _ = by_source["./grafana/dashboards"]
    provider = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/foundry-monitor.yaml").read_text())
    assert dashboards_target == provider["providers"][0]["options"]["path"]
    datasources = yaml.safe_load((ROOT / "grafana/provisioning/datasources/foundry-monitor.yaml").read_text())
    prometheus = next(d for d in datasources["datasources"] if d["type"] == "prometheus")
    url = urlsplit(prometheus["url"])
    assert url.hostname in services(), f"the Grafana data source points at {url.hostname}: no such service"
    assert f"{url.port}:{url.port}" in " ".join(map(str, services()[url.hostname]["ports"]))


@cache
def prometheus_config() -> dict[str, Any]:
    document = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def test_prometheus_scrapes_the_monitor_service_at_the_grafana_interval() -> None:
    mounted = [source for source, _, _ in mounts(services()["prometheus"])]
    assert "./deploy/compose/prometheus.yml" in mounted
    targets = [t for job in prometheus_config()["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]]
    assert f"foundry-monitor:{PORT}" in targets
    for target in targets:
        assert target.split(":")[0] in services(), f"{target} is not a compose service"
    datasources = yaml.safe_load((ROOT / "grafana/provisioning/datasources/foundry-monitor.yaml").read_text())
    source = next(d for d in datasources["datasources"] if d["type"] == "prometheus")
    assert prometheus_config()["global"]["scrape_interval"] == source["jsonData"]["timeInterval"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian: prometheus)")
def test_prometheus_config_passes_promtool() -> None:
    done = subprocess.run(["promtool", "check", "config", str(PROMETHEUS)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_demo_config_points_at_the_emulator_service_with_its_key() -> None:
    cfg = config_mod.load(DEMO_CONFIG, env={})
    scenario = load_scenario(str(SCENARIO))
    emulator = services()["emulator"]
    command = emulator["command"]
    port = int(command[command.index("--port") + 1])
    assert command[command.index("--host") + 1] == "0.0.0.0", "the monitor reaches the emulator from outside"
    (resource,) = cfg.resources
    endpoint = urlsplit(resource.endpoint)
    assert (endpoint.hostname, endpoint.port) == ("emulator", port)
    assert resource.auth is not None and resource.auth.api_key is not None
    assert resource.auth.api_key.reveal() == scenario.api_key
    on_emulator = {d.name for d in scenario.deployments}
    probed = {d.name for d in resource.deployments}
    assert on_emulator <= probed, f"deployments of the scenario not probed: {on_emulator - probed}"
    mounted = {target for _, target, _ in mounts(emulator)}
    assert command[command.index("--scenario") + 1] in mounted


# --- deploy/azure/main.bicep --------------------------------------------------------------------------------

BICEP = Parser(Language(tree_sitter_bicep.language()))


def text(node: Node) -> str:
    return (node.text or b"").decode("utf-8")


def syntax_errors(root: Node) -> list[str]:
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            line, column = node.start_point
            found.append(f"{line + 1}:{column + 1}: {node.type} {text(node)[:40]!r}")
        stack.extend(node.children)
    return sorted(found)


def literal(node: Node) -> Any:
    """A literal's value (strings without interpolation, numbers, booleans, arrays); else its source text."""
    if node.type == "string":
        raw = text(node)
        if raw.startswith("'''"):
            body = raw[3:-3]
            return body[1:] if body.startswith("\n") else body  # Bicep drops the newline after the first '''
        if not any(c.type == "interpolation" for c in node.named_children):
            return raw[1:-1].replace("\\'", "'").replace("\\n", "\n").replace("\\\\", "\\")
    if node.type == "number":
        return int(text(node))
    if node.type == "boolean":
        return text(node) == "true"
    if node.type == "array":
        return [literal(c) for c in node.named_children]
    return text(node)


@dataclass
class Param:
    type: str
    has_default: bool
    allowed: list[Any] | None


@dataclass
class Bicep:
    root: Node
    params: dict[str, Param]
    variables: dict[str, Node]
    modules: dict[str, tuple[str, Node]]  # symbol -> (path, body)
    resources: dict[str, tuple[str, Node]]  # symbol -> (type@version, body)


def read_bicep(path: Path) -> Bicep:
    root = BICEP.parse(path.read_bytes()).root_node
    found = Bicep(root, {}, {}, {}, {})
    allowed: list[Any] | None = None
    for node in root.named_children:
        if node.type == "decorators":
            for decorator in node.named_children:
                call = decorator.named_children[0]
                if text(call.named_children[0]) == "allowed":
                    allowed = literal(call.named_children[1].named_children[0])
            continue
        kids = node.named_children
        if node.type == "parameter_declaration":
            found.params[text(kids[0])] = Param(text(kids[1]), len(kids) > 2, allowed)
        elif node.type == "variable_declaration":
            found.variables[text(kids[0])] = kids[1]
        elif node.type == "module_declaration":
            found.modules[text(kids[0])] = (literal(kids[1]), kids[-1])
        elif node.type == "resource_declaration":
            found.resources[text(kids[0])] = (literal(kids[1]), kids[-1])
        allowed = None
    return found


@cache
def main_bicep() -> Bicep:
    return read_bicep(MAIN_BICEP)


def object_properties(node: Node) -> dict[str, Node]:
    """The properties of an object node (or of the object in a conditional `if (...) {...}` body)."""
    if node.type == "if_statement":
        node = node.named_children[-1]
    assert node.type == "object", node.type
    out = {}
    for prop in node.named_children:
        if prop.type == "object_property":
            key = prop.named_children[0]
            out[literal(key) if key.type == "string" else text(key)] = prop.named_children[-1]
    return out


def test_main_bicep_parses_without_errors() -> None:
    assert main_bicep().root.type == "infrastructure"
    assert syntax_errors(main_bicep().root) == []


def test_syntax_check_catches_a_broken_template() -> None:
    source = MAIN_BICEP.read_text(encoding="utf-8")
    broken = source.replace("resource apps 'Microsoft.App", "resource apps = 'M", 1)
    assert syntax_errors(BICEP.parse(broken.encode()).root_node), "the check would miss a syntax error"


def test_main_bicep_uses_the_alerts_module_with_its_parameters() -> None:
    modules = {path: body for path, body in main_bicep().modules.values()}
    assert "./alerts.bicep" in modules, "module alerts './alerts.bicep' is missing"
    passed = set(object_properties(object_properties(modules["./alerts.bicep"])["params"]))
    declared = read_bicep(ALERTS_BICEP).params
    assert passed <= set(declared), f"not parameters of alerts.bicep: {passed - set(declared)}"
    required = {name for name, p in declared.items() if not p.has_default}
    assert required <= passed, f"alerts.bicep needs {required - passed}"


def resources_of_type(prefix: str) -> dict[str, Node]:
    return {symbol: body for symbol, (kind, body) in main_bicep().resources.items()
            if isinstance(kind, str) and kind.startswith(prefix)}


def test_main_bicep_has_the_environment_workspace_insights_and_identity() -> None:
    for kind in ("Microsoft.App/managedEnvironments@", "Microsoft.App/containerApps@",
                 "Microsoft.OperationalInsights/workspaces@", "Microsoft.Insights/components@",
                 "Microsoft.ManagedIdentity/userAssignedIdentities@"):
        assert resources_of_type(kind), f"no {kind} resource"


def test_main_bicep_assigns_the_roles_the_monitor_needs() -> None:
    assignments = resources_of_type("Microsoft.Authorization/roleAssignments@").values()
    assigned = " ".join(text(body) for body in assignments)
    properties = main_bicep().variables["roles"].named_children
    role_ids = {text(p.named_children[0]): literal(p.named_children[-1]) for p in properties}
    for role, guid in ROLE_IDS.items():
        symbol = next((name for name, value in role_ids.items() if value == guid), None)
        assert symbol, f"{role} ({guid}) is not among the role ids"
        assert f"roles.{symbol}" in assigned, f"no role assignment uses {role}"
    principals = assigned.count("identity.properties.principalId")
    assert principals >= len(ROLE_IDS), "every role goes to the identity"


def container_app() -> str:
    (body,) = resources_of_type("Microsoft.App/containerApps@").values()
    return text(body)


def test_container_app_probes_env_secrets_and_args() -> None:
    app = container_app()
    for probe, path in (("Liveness", "/healthz"), ("Readiness", "/readyz"), ("Startup", "/healthz")):
        found = re.search(rf"type: '{probe}'\s+httpGet: {{\s+path: '{path}'", app)
        assert found, f"no {probe} probe on {path}"
    variables = " ".join(text(v) for v in main_bicep().variables.values())
    for name in ("APPLICATIONINSIGHTS_CONNECTION_STRING", "AZURE_CLIENT_ID", "ANTHROPIC_FOUNDRY_API_KEY",
                 "SMTP_PASSWORD"):
        assert f"name: '{name}'" in variables, f"the app gets no {name}"
    assert "appInsights.properties.ConnectionString" in variables
    assert variables.count("keyVaultUrl:") >= 2, "the API key and the SMTP password come from Key Vault"
    for name in ("FOUNDRY_MONITOR_SHARD", "FOUNDRY_MONITOR_LOCATION", "FOUNDRY_MONITOR_WEEKLY_EMAIL"):
        assert f"name: '{name}'" in app
    args_node = re.search(r"args: \[(.*?)\]", app, re.S)
    assert args_node, "the container's args"
    args = [a.strip("'") for a in args_node.group(1).split()]
    args = [str(PORT) if a == "string(port)" else a for a in args]
    parsed = build_parser().parse_args(args)
    assert (parsed.config, parsed.host, parsed.port) == (CONFIG_PATH, "0.0.0.0", PORT)
    assert parsed.log_format == "json"
    assert "mountPath: '/etc/foundry-monitor'" in app and f"mountPath: '{DATA_DIR}'" in app


def generated_config(auth_mode: str, *, weekly: bool, email: bool) -> str:
    """The checks.yaml main.bicep makes, with its replace() steps done here for sample parameters."""
    v: dict[str, str] = {name: literal(node) for name, node in main_bicep().variables.items()
                         if text(node).startswith("'''")}
    config = v["configTemplate"]
    bicep_text = MAIN_BICEP.read_text(encoding="utf-8")
    for token in set(re.findall(r"__[A-Z]+__", config + v["weeklyBlock"])):
        assert re.search(rf"replace\([^)]*'{token}'", bicep_text), f"{token} is never replaced"
    deployments = "\n".join(f'      - name: "{d}"' for d in ("claude-opus-4-5", "claude-haiku-4-5"))
    blocks = {
        "__INTERVAL__": "60s",
        "__RESOURCE__": "my-foundry",
        "__AUTH__": v["entraAuthBlock"] if auth_mode == "entra" else v["apiKeyAuthBlock"],
        "__DEPLOYMENTS__": deployments,
        "__WEEKLY__": v["weeklyBlock"].replace("__RECIPIENTS__", '["team@example.com"]') if weekly else "",
        "__EMAIL__": v["emailBlock"] if email else "",
    }
    for token, value in blocks.items():
        config = config.replace(token, value)
    return config


APP_ENV = {  # what every app gets (main.bicep sharedEnv and the per-app variables)
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-000000000000",
    "AZURE_CLIENT_ID": "11111111-1111-1111-1111-111111111111",
    "FOUNDRY_MONITOR_WORKSPACE_ID": "22222222-2222-2222-2222-222222222222",
    "FOUNDRY_MONITOR_LOCATION": "swedencentral",
    "FOUNDRY_MONITOR_SHARD": "0/1",
    "FOUNDRY_MONITOR_WEEKLY_EMAIL": "true",  # the first region's apps
}


@pytest.mark.parametrize(("auth_mode", "weekly", "email"), [("entra", False, False), ("apiKey", True, True)])
def test_generated_checks_yaml_loads_in_the_app(auth_mode: str, weekly: bool, email: bool) -> None:
    env = dict(APP_ENV)
    if auth_mode == "apiKey":
        env["ANTHROPIC_FOUNDRY_API_KEY"] = "key"
    if email:
        env |= {"FOUNDRY_MONITOR_EMAIL_SENDER": "m@example.com", "SMTP_HOST": "smtp.example.com",
                "SMTP_PORT": "587", "SMTP_USERNAME": "monitor", "SMTP_PASSWORD": "pw"}
    text = generated_config(auth_mode, weekly=weekly, email=email)
    cfg = config_mod.loads(text, "generated", env=env)
    (resource,) = cfg.resources
    assert resource.endpoint == "https://my-foundry.services.ai.azure.com/anthropic/"
    assert [d.name for d in resource.deployments] == ["claude-opus-4-5", "claude-haiku-4-5"]
    assert resource.auth is not None
    if auth_mode == "entra":
        assert resource.auth.entra is not None and resource.auth.entra.client_id == env["AZURE_CLIENT_ID"]
    else:
        assert resource.auth.api_key is not None and resource.auth.api_key.reveal() == "key"
    assert (cfg.telemetry.credential, cfg.telemetry.client_id) == ("managed_identity", env["AZURE_CLIENT_ID"])
    assert cfg.reports.credential == "managed_identity"
    assert cfg.reports.workspace_id == env["FOUNDRY_MONITOR_WORKSPACE_ID"]
    assert cfg.data_dir == DATA_DIR
    assert cfg.reports.weekly.enabled is weekly
    if weekly:  # the other regions' apps do not send it
        env["FOUNDRY_MONITOR_WEEKLY_EMAIL"] = "false"
        other = config_mod.loads(text, "generated", env=env)
        assert other.reports.weekly.enabled is False
    assert (cfg.email.smtp is not None) is email
    if email:
        assert cfg.email.smtp is not None and cfg.email.smtp.port == 587


def test_parameters_example_names_only_declared_parameters() -> None:
    document = json.loads(MAIN_PARAMETERS.read_text(encoding="utf-8"))
    assert document["$schema"].endswith("/deploymentParameters.json#")
    given = document["parameters"]
    declared = main_bicep().params
    assert set(given) <= set(declared), f"not declared in main.bicep: {sorted(set(given) - set(declared))}"
    required = {name for name, p in declared.items() if not p.has_default}
    assert required <= set(given), f"required but missing: {sorted(required - set(given))}"
    types = {"string": str, "int": int, "bool": bool, "array": list, "object": dict}
    for name, entry in given.items():
        assert set(entry) == {"value"}, name
        expected = declared[name].type
        assert isinstance(entry["value"], types[expected]), f"{name}: expected {expected}"
        allowed = declared[name].allowed
        assert allowed is None or entry["value"] in allowed, f"{name}: not one of {allowed}"

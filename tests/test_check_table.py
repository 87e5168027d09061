"""`foundry-monitor check` against the emulator: the text table names each row's resource, and a
deployment that does not exist gets "did you mean ...?" when its resource has one of a close name."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from monitor.canary.suggest import close_name
from monitor.cli import main
from monitor.emulator.runner import EmulatorServer

KEY = "sk-emu-table-DO-NOT-PRINT-4417"
WRONG_KEY = "sk-wrong-table-DO-NOT-PRINT-0922"


@pytest.fixture(scope="module")
def emu() -> Iterator[EmulatorServer]:
    with EmulatorServer(scenario={"api_key": KEY, "deployments": [
            {"name": "claude-haiku-4-5", "model": "claude-haiku-4-5-20251001"},
            {"name": "claude-sonnet-4-5", "model": "claude-sonnet-4-5-20250929"},
            {"name": "claude-opus-4-5", "model": "claude-opus-4-5-20251101"}]}) as server:
        yield server


def check(tmp: Path, resources: str, fmt: str) -> tuple[int, str]:
    path = tmp / "checks.yaml"
    path.write_text(f"data_dir: {json.dumps(str(tmp / 'data'))}\n"
                    f"defaults: {{interval: 10s, timeout: 5s, confirm: 0}}\nresources:\n{resources}")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = main(["check", "--config", str(path), "--format", fmt])
    return rc, out.getvalue()


def resource(name: str, emu: EmulatorServer, key: str, deployments: list[str]) -> str:
    deps = "".join(f"      - {{name: {d}}}\n" for d in deployments)
    return (f"  - name: {name}\n    base_url: {emu.base_url}\n    auth: {{api_key: {key}}}\n"
            f"    deployments:\n{deps}")


def test_the_check_table_tells_two_resources_with_the_same_deployment_apart(emu: EmulatorServer,
                                                                           tmp_path: Path) -> None:
    text = (resource("east", emu, KEY, ["claude-haiku-4-5"])
            + resource("west", emu, WRONG_KEY, ["claude-haiku-4-5"]))
    rc, out = check(tmp_path, text, "text")
    lines = out.splitlines()
    assert rc == 1 and lines[0].split()[:3] == ["RESOURCE", "DEPLOYMENT", "KIND"]
    rows = {tuple(line.split()[:3]) for line in lines[1:] if line.split()[1:2] == ["claude-haiku-4-5"]}
    assert rows == {("east", "claude-haiku-4-5", "ok"), ("west", "claude-haiku-4-5", "invalid_api_key")}
    assert KEY not in out and WRONG_KEY not in out


# the deployment probed, its resource's other deployments in the config -> the suggestion (None: none)
SUGGESTIONS: list[tuple[str, list[str], str | None]] = [
    ("claude-haku-4-5", ["claude-haiku-4-5"], "claude-haiku-4-5"),  # one letter missing
    ("claude-sonnet-4-6", ["claude-sonnet-4-5", "claude-haiku-4-5"], "claude-sonnet-4-5"),  # one changed
    ("claude-opus-4-5x", ["claude-opus-4-5", "claude-haiku-4-5"], "claude-opus-4-5"),  # one extra
    ("retired-sonnet", ["claude-sonnet-4-5"], None),  # nothing close: the usual hint only
    ("claude-haiku-4-5-old", [], None),  # no other deployment on the resource
]


@pytest.fixture(scope="module")
def suggestion_round(emu: EmulatorServer, tmp_path_factory: pytest.TempPathFactory,
                     ) -> dict[str, dict[str, Any]]:
    text = "".join(resource(f"r{i}", emu, KEY, [name, *siblings])
                   for i, (name, siblings, _) in enumerate(SUGGESTIONS))
    # a close name on *another* resource is not a suggestion: that resource has its own deployments
    text += resource("lonely", emu, KEY, ["claude-haiku-4-6"])
    _, out = check(tmp_path_factory.mktemp("suggest"), text, "json")
    return {f"{r['resource']}/{r['deployment']}": r for r in json.loads(out)}


@pytest.mark.parametrize("i", range(len(SUGGESTIONS)), ids=[s[0] for s in SUGGESTIONS])
def test_deployment_not_found_suggests_a_close_name_of_the_same_resource(
        suggestion_round: dict[str, dict[str, Any]], i: int) -> None:
    name, siblings, expected = SUGGESTIONS[i]
    row = suggestion_round[f"r{i}/{name}"]
    assert row["kind"] == "deployment_not_found"  # the kind is the classifier's, unchanged
    assert "deployment name" in row["hint"]  # the usual hint is still there
    if expected is None:
        assert "Did you mean" not in row["hint"]
    else:
        assert row["hint"].startswith(f'Did you mean "{expected}"?')
    for sibling in siblings:
        if sibling in ("claude-haiku-4-5", "claude-sonnet-4-5", "claude-opus-4-5"):
            assert suggestion_round[f"r{i}/{sibling}"]["kind"] == "ok"


def test_a_close_name_on_another_resource_is_not_suggested(
        suggestion_round: dict[str, dict[str, Any]]) -> None:
    row = suggestion_round["lonely/claude-haiku-4-6"]
    assert row["kind"] == "deployment_not_found" and "Did you mean" not in row["hint"]


def test_the_text_table_shows_the_suggestion_under_the_row(emu: EmulatorServer, tmp_path: Path) -> None:
    _, out = check(tmp_path, resource("east", emu, KEY, ["claude-haiku-4-5", "claude-haku-4-5"]), "text")
    assert '    hint: Did you mean "claude-haiku-4-5"?' in out


def test_a_name_is_never_its_own_suggestion() -> None:
    assert close_name("claude-haiku-4-5", ["claude-haiku-4-5"]) is None


def test_check_of_an_unknown_deployment_name_suggests_the_close_one(emu: EmulatorServer,
                                                                    tmp_path: Path) -> None:
    path = tmp_path / "checks.yaml"
    path.write_text(f"data_dir: {json.dumps(str(tmp_path / 'data'))}\nresources:\n"
                    + resource("east", emu, KEY, ["claude-haiku-4-5", "claude-opus-4-5"]))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        rc = main(["check", "--config", str(path), "--deployment", "claude-haiku-45"])
    assert rc == 2
    assert out.getvalue() == (f"error: no deployment named claude-haiku-45 in {path} (did you mean "
                              '"claude-haiku-4-5"? known: claude-haiku-4-5, claude-opus-4-5)\n')

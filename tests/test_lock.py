"""requirements.lock (what the image installs, pip --require-hashes) matches pyproject.toml: every runtime
dependency is pinned, directly, at a version its range allows; nothing is pinned directly that pyproject.toml
no longer asks for; every pin carries hashes. Offline: it reads the two files and nothing else."""

from __future__ import annotations

import platform
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
DIRECT = "foundry-monitor (pyproject.toml)"  # how uv marks a dependency that pyproject.toml asks for
FIX = "requirements.lock does not match pyproject.toml: run scripts/lock (and commit requirements.lock)"


@dataclass
class Pin:
    requirement: Requirement
    line: int
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)

    @property
    def version(self) -> Version:
        (spec,) = self.requirement.specifier
        return Version(spec.version)


def parse_lock(text: str) -> list[Pin]:
    """The entries of a hashed requirements file as uv and pip-compile write it: `name==version [; marker]`
    and a backslash, then `--hash=...` lines, then `# via` with one source on the same line or one per line
    after it."""
    pins: list[Pin] = []
    in_via = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if not raw[0].isspace() and not line.startswith(("#", "-")):
            pins.append(Pin(Requirement(line.removesuffix("\\").strip()), number))
            in_via = False
        elif not pins:
            continue
        elif line.startswith("--hash="):
            pins[-1].hashes.append(line.removeprefix("--hash=").removesuffix("\\").strip())
        elif line.startswith("# via"):
            rest = line.removeprefix("# via").strip()
            pins[-1].via += [rest] if rest else []
            in_via = not rest
        elif in_via and line.startswith("#   "):
            pins[-1].via.append(line.removeprefix("#").strip())
        else:
            in_via = False
    return pins


def project_dependencies(path: Path = PYPROJECT) -> dict[str, Requirement]:
    deps = tomllib.loads(path.read_text())["project"]["dependencies"]
    return {canonicalize_name(r.name): r for r in map(Requirement, deps)}


def mismatches(pins: list[Pin], wanted: dict[str, Requirement]) -> list[str]:
    """What disagrees between the lock's pins and pyproject.toml's dependencies, in words."""
    problems: list[str] = []
    by_name: dict[str, list[Pin]] = {}
    for pin in pins:
        by_name.setdefault(pin.name, []).append(pin)
        if len(pin.requirement.specifier) != 1 or next(iter(pin.requirement.specifier)).operator != "==":
            problems.append(f"line {pin.line}: {pin.requirement} is not pinned with ==")
        elif not pin.hashes:
            problems.append(f"line {pin.line}: {pin.requirement} has no --hash")
    for name, req in sorted(wanted.items()):
        found = by_name.get(name, [])
        if not found:
            problems.append(f"{req} (pyproject.toml) is not in the lock")
            continue
        if not any(DIRECT in p.via for p in found):
            problems.append(f"{name} is in the lock, but not as a dependency of {DIRECT}")
        for pin in found:
            if pin.hashes and not req.specifier.contains(pin.version, prereleases=True):
                problems.append(f"line {pin.line}: {name}=={pin.version} is outside pyproject.toml's "
                                f"range {req.specifier}")
    for name, found in sorted(by_name.items()):
        if name not in wanted and any(DIRECT in p.via for p in found):
            problems.append(f"{name} is pinned as a dependency of {DIRECT}, which no longer lists it")
    return problems


def test_the_lock_pins_exactly_what_pyproject_toml_asks_for() -> None:
    assert LOCK.exists(), f"there is no requirements.lock. {FIX}"
    pins = parse_lock(LOCK.read_text())
    problems = mismatches(pins, project_dependencies())
    assert not problems, FIX + ":\n  " + "\n  ".join(problems)


# The image's Python (Debian bookworm's 3.11.2, or python:3.11-slim) and this machine's, on both arches.
TARGETS = [{"python_version": "3.11", "python_full_version": full, "platform_machine": machine,
            "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython"}
           for full in ("3.11.2", platform.python_version()) for machine in ("x86_64", "aarch64")]


@pytest.mark.parametrize("target", TARGETS,
                         ids=lambda t: f"{t['python_full_version']}-{t['platform_machine']}")
def test_the_lock_installs_one_version_of_every_dependency_on_the_images_python(
        target: dict[str, str]) -> None:
    applies = [p for p in parse_lock(LOCK.read_text())
               if p.requirement.marker is None or p.requirement.marker.evaluate(target)]
    names = [p.name for p in applies]
    assert sorted(set(project_dependencies()) - set(names)) == [], FIX
    assert sorted({n for n in names if names.count(n) > 1}) == [], "two pins of one package apply"


def test_the_lock_was_made_by_scripts_lock_for_every_platform_with_hashes() -> None:
    header = LOCK.read_text().split("\n\n", 1)[0]
    assert "scripts/lock" in header, "requirements.lock should be regenerated with scripts/lock"
    assert "pyproject.toml" in header
    script = (ROOT / "scripts" / "lock").read_text()
    for flag in ("uv\" pip compile pyproject.toml", "--universal", "--python-version 3.11",
                 "--generate-hashes", "--output-file requirements.lock"):
        assert flag in script, flag


def test_the_image_installs_the_dependencies_from_the_lock_with_hashes_and_the_package_without() -> None:
    docker = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    assert re.search(r"COPY [^\n]*requirements\.lock", docker)
    assert re.search(r"pip install [^\n]*--require-hashes [^\n]*-r requirements\.lock", docker)
    for install in re.findall(r"pip install [^\n&]*", docker):
        assert "--require-hashes" in install or "--no-deps" in install, f"unlocked install: {install}"
    assert "requirements.lock" in (ROOT / ".dockerignore").read_text()


# --- the check itself ------------------------------------------------------------------------------------

SAMPLE = """\
# This file was autogenerated by uv via the following command:
#    scripts/lock
httpx==0.28.1 \\
    --hash=sha256:aa \\
    --hash=sha256:bb
    # via
    #   foundry-monitor (pyproject.toml)
    #   anthropic
idna==3.10 \\
    --hash=sha256:cc
    # via httpx
pywin32==311 ; sys_platform == 'win32' \\
    --hash=sha256:dd
    # via foundry-monitor (pyproject.toml)
"""


def test_the_lock_parser_reads_pins_hashes_markers_and_both_forms_of_via() -> None:
    pins = parse_lock(SAMPLE)
    assert [(p.name, str(p.version), p.hashes, p.via) for p in pins] == [
        ("httpx", "0.28.1", ["sha256:aa", "sha256:bb"], [DIRECT, "anthropic"]),
        ("idna", "3.10", ["sha256:cc"], ["httpx"]),
        ("pywin32", "311", ["sha256:dd"], [DIRECT]),
    ]
    assert str(pins[2].requirement.marker) == 'sys_platform == "win32"'


@pytest.mark.parametrize(("pyproject", "problem"), [
    (["httpx>=0.27,<1", "pywin32", "pyyaml>=6"], "pyyaml>=6 (pyproject.toml) is not in the lock"),
    (["httpx>=0.29,<1", "pywin32"], "httpx==0.28.1 is outside pyproject.toml's range <1,>=0.29"),
    (["httpx>=0.27", "pywin32", "idna"], "idna is in the lock, but not as a dependency of"),
    (["httpx>=0.27"], "pywin32 is pinned as a dependency of foundry-monitor (pyproject.toml), which no"),
])
def test_a_lock_that_pyproject_toml_has_moved_away_from_is_reported(pyproject: list[str],
                                                                     problem: str) -> None:
    wanted = {canonicalize_name(r.name): r for r in map(Requirement, pyproject)}
    found = mismatches(parse_lock(SAMPLE), wanted)
    assert any(problem in p for p in found), found


def test_a_pin_without_a_hash_is_reported() -> None:
    found = mismatches(parse_lock("httpx==0.28.1\n    # via foundry-monitor (pyproject.toml)\n"),
                       {"httpx": Requirement("httpx")})
    assert found == ["line 1: httpx==0.28.1 has no --hash"]

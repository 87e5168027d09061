"""The package's architecture holds: a folder per concern, and imports point down the layers.

Each concern (a folder under monitor/, or a top-level module) has a rank. A module may import from its
own concern, or from a concern of a strictly lower rank: the canary path knows nothing of the daemon, the
store nothing of reports, the daemon nothing of telemetry or the wiring. Imports under TYPE_CHECKING and
inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "monitor"

# lowest first; concerns of one rank may not import each other
RANKS: dict[str, int] = {
    "__init__": 0, "errors": 0,           # the version and the exception tree
    "config": 1,                          # checks.yaml -> models
    "canary": 2, "emulator": 2,           # one canary's path; the Foundry stand-in (apart from it)
    "azure": 3, "logs": 3,                # Azure's own view; the log line of a canary and events
    "ingestion": 3,                       # what a config costs: Azure Monitor bytes, canary tokens
    "store": 4,                           # SQLite: results, rollups, states
    "reports": 5,                         # Report from a source, rendered
    "notify": 6,                          # the weekly email
    "daemon": 7,                          # the long-running job
    "telemetry": 8,                       # OpenTelemetry, fed by the daemon's results and transitions
    "app": 9, "demo": 9,                  # wiring; the emulator and daemon run together
    "cli": 10,                            # the commands
    "__main__": 11,                       # `python -m monitor` and `python -m monitor.emulator`
}


def concern_of(module: str) -> str:
    """``monitor.canary.probe`` -> ``canary``; ``monitor`` -> ``__init__``; any ``__main__`` is an entry
    point, above everything."""
    parts = module.split(".")
    if parts[-1] == "__main__":
        return "__main__"
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """Every module of the package that ``path`` imports, with the line of the import."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == root.name]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != root.name:
                continue
            for alias in node.names:  # `from monitor import config` names a module, not an attribute
                sub = f"{target}.{alias.name}"
                where = root.parent / sub.replace(".", "/")
                is_module = where.with_suffix(".py").exists() or where.is_dir()
                found.append((node.lineno, sub if is_module else target))
    return found


def violations(root: Path, ranks: dict[str, int]) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        source = concern_of(module_name(path, root))
        if source not in ranks:
            out.append(f"{path.relative_to(root.parent)}: concern {source!r} has no rank; place it in RANKS")
            continue
        for line, target in imported_modules(path, root):
            dest = concern_of(target)
            if dest == source:
                continue
            if dest not in ranks or ranks[dest] >= ranks[source]:
                out.append(f"{path.relative_to(root.parent)}:{line}: {source} (rank {ranks[source]}) imports "
                           f"{target} ({dest}, rank {ranks.get(dest)})")
    return out


def test_every_import_points_down_the_layers() -> None:
    assert violations(PACKAGE, RANKS) == []


def test_every_concern_in_the_package_has_a_rank_and_every_rank_a_concern() -> None:
    present = {concern_of(module_name(p, PACKAGE)) for p in PACKAGE.rglob("*.py")}
    assert present == set(RANKS)


@pytest.mark.parametrize("folder", sorted(p.name for p in PACKAGE.iterdir()
                                          if p.is_dir() and (p / "__init__.py").exists()))
def test_each_package_says_what_lives_there_in_its_docstring(folder: str) -> None:
    tree = ast.parse((PACKAGE / folder / "__init__.py").read_text(encoding="utf-8"))
    doc = ast.get_docstring(tree)
    assert doc and len(doc.split()) >= 8, f"monitor/{folder}/__init__.py: say what lives there"


def test_the_checker_catches_an_upward_import_relative_absolute_and_lazy(tmp_path: Path) -> None:
    root = tmp_path / "monitor"
    for folder in ("canary", "daemon", "store", "reports"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text('"""x"""\n')
    (root / "__init__.py").write_text("")
    (root / "daemon" / "service.py").write_text("from monitor.canary import probe\n")  # down: fine
    (root / "canary" / "probe.py").write_text("from ..daemon import service\n")  # up, relative
    (root / "store" / "sqlite.py").write_text("def f():\n    import monitor.reports.build\n")  # up, lazy
    (root / "reports" / "build.py").write_text("from monitor.store.sqlite import x\n")  # down: fine
    found = violations(root, {"__init__": 0, "canary": 2, "store": 4, "reports": 5, "daemon": 7})
    assert found == [
        "monitor/canary/probe.py:1: canary (rank 2) imports monitor.daemon.service (daemon, rank 7)",
        "monitor/store/sqlite.py:2: store (rank 4) imports monitor.reports.build (reports, rank 5)",
    ]

"""YAML -> plain data, remembering the line of every key, with ${VAR} expansion.

Errors become ConfigProblems that name the file, the line and the key path, so that a user reads
``checks.yaml:14: resources[0].deployments[2].interval: ...`` and never a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from monitor.errors import ConfigError, ConfigProblem

Path = tuple[str | int, ...]

_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MAX_NODES = 100_000
_MAX_DEPTH = 50  # a config is a few levels deep; PyYAML itself recurses (and fails) near 250


def path_str(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Document:
    """Plain data plus where each part of it was written."""

    file: str
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)
    empty_vars: dict[Path, str] = field(default_factory=dict)  # value came from an unset/empty ${VAR:-}
    written: dict[Path, str] = field(default_factory=dict)  # text before ${VAR} expansion (shown in errors)

    def line_of(self, path: Path) -> int | None:
        """The line of ``path``, or of its nearest written ancestor (a missing key is on its parent)."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.lines:
                return self.lines[path[:n]]
        return None

    def as_written(self, path: Path, value: str) -> str:
        """The text at ``path`` as the file has it: a ${VAR} stays a reference, never what it expands to
        (an error message must not print a value that came from the environment)."""
        return self.written.get(path, value)

    def problem(self, path: Path, message: str) -> ConfigProblem:
        return ConfigProblem(self.file, self.line_of(path), path_str(path), message)


def load_document(text: str, file: str, env: Mapping[str, str] | None = None) -> Document:
    """Parse ``text``; raise ConfigError on YAML syntax errors or unresolvable ${VAR}s."""
    env = os.environ if env is None else env
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except RecursionError:
        raise ConfigError([ConfigProblem(file, None, "", "invalid YAML: lists or mappings nested too "
                                                         "deeply")]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if exc.context_mark is not None and re.search(r"end of stream|<stream end>", exc.problem or ""):
            mark = exc.context_mark  # an unclosed quote or bracket: the line where it was opened
        line = mark.line + 1 if mark is not None else None
        what = ", ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise ConfigError([ConfigProblem(file, line, "", f"invalid YAML: {what}")]) from None
    except yaml.reader.ReaderError as exc:  # a control character: no mark, but a position in the text
        line = text.count("\n", 0, exc.position) + 1
        what = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
        raise ConfigError([ConfigProblem(file, line, "", f"invalid YAML: {what}")]) from None
    except yaml.YAMLError as exc:  # any other error without a mark
        raise ConfigError([ConfigProblem(file, None, "", f"invalid YAML: {exc}")]) from None
    doc = Document(file, {})
    if root is None:
        raise ConfigError([ConfigProblem(file, 1, "", "the file is empty; see checks.yaml for an example")])
    builder = _Builder(doc, env)
    doc.data = builder.build(root, ())
    if builder.problems:
        raise ConfigError(builder.problems)
    return doc


class _Builder:
    def __init__(self, doc: Document, env: Mapping[str, str]) -> None:
        self.doc = doc
        self.env = env
        self.problems: list[ConfigProblem] = []
        self.count = 0
        self.constructor = yaml.SafeLoader("")
        self.open: set[int] = set()  # ids of the collection nodes being built (to spot `&a [*a]`)

    def build(self, node: yaml.Node, path: Path) -> Any:
        self.count += 1
        if self.count > _MAX_NODES:
            raise ConfigError([self.doc.problem(path, f"the document has more than {_MAX_NODES} values")])
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if id(node) in self.open:
            raise ConfigError([self.doc.problem(path, "an alias (*name) refers to a list or mapping that "
                                                      "contains it")])
        if len(path) > _MAX_DEPTH:
            raise ConfigError([self.doc.problem(path, f"nested more than {_MAX_DEPTH} levels deep")])
        if not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            return self._scalar(node, path)
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        finally:
            self.open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        out: dict[str, Any] = {}
        try:
            self.constructor.flatten_mapping(node)  # YAML merge keys (<<)
        except yaml.MarkedYAMLError as exc:
            self.problems.append(self.doc.problem(path, f"invalid merge key: {exc.problem}"))
            return out
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.problems.append(self.doc.problem(path, "keys must be plain words, not lists or maps"))
                continue
            key = str(key_node.value)
            child = (*path, key)
            if key in out:
                self.problems.append(
                    ConfigProblem(self.doc.file, key_node.start_mark.line + 1, path_str(child),
                                  f"duplicate key (first written on line {self.doc.lines[child]})")
                )
                continue
            self.doc.lines[child] = key_node.start_mark.line + 1
            out[key] = self.build(value_node, child)
        return out

    def _scalar(self, node: yaml.Node, path: Path) -> Any:
        if node.tag == "tag:yaml.org,2002:str" or not isinstance(node, yaml.ScalarNode):
            return self._expand(str(node.value), path)
        try:
            return self.constructor.construct_object(node, deep=True)
        except Exception:  # noqa: BLE001 - odd timestamps etc. stay text; the schema says what it wanted
            return str(node.value)

    def _expand(self, text: str, path: Path) -> str:
        if "$" not in text:
            return text

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$${":
                return "${"
            name, default = m.group(1), m.group(2)
            value = self.env.get(name)
            if value is None and f"{name}_FILE" in self.env:
                value = self._read_secret_file(self.env[f"{name}_FILE"], name, path)
            if value is None or (value == "" and default is not None):
                if default is None:
                    self.problems.append(
                        self.doc.problem(path, f"environment variable {name} is not set (this key needs it;"
                                               f" or set {name}_FILE to a file holding the value)")
                    )
                    return ""
                if default == "":
                    self.doc.empty_vars[path] = name
                return default
            return value

        expanded = _VAR.sub(sub, text)
        if expanded != text:
            self.doc.written[path] = text
        return expanded

    def _read_secret_file(self, file_path: str, name: str, path: Path) -> str | None:
        try:
            with open(file_path, encoding="utf-8") as fh:
                return fh.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            self.problems.append(self.doc.problem(path, f"cannot read {name}_FILE ({file_path}): {why}"))
            return ""

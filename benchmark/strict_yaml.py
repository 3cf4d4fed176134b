"""YAML for files a person writes (configs, timelines, SLURM profiles): safe, and strict about mistakes.

`yaml.safe_load` never builds Python objects from `!!python/...` tags, but it takes a duplicated key silently
(the last one wins, so a generator can change window without a word) and it raises a bare ValueError, naming
neither file nor key, for a date-like value that is no date (`2020-13-45`). This loader refuses duplicated keys
with both line numbers and leaves such a value as the string it is, for the reader to report with its key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode


class StrictSafeLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicated mapping keys and keeps impossible dates as strings."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        if isinstance(node, MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeLoader's own error says so below
                    continue
                if first is not None:
                    raise ConstructorError(
                        "while reading a mapping", node.start_mark,
                        f"found the key {key!r} twice (first on line {first.line + 1}); keep one",
                        key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node):
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:  # e.g. 2020-13-45: looks like a date, is none; the reader names the key
            return self.construct_scalar(node)


StrictSafeLoader.add_constructor("tag:yaml.org,2002:timestamp", StrictSafeLoader.construct_yaml_timestamp)


def load_text(text: str) -> Any:
    """Parse YAML text strictly (yaml.YAMLError on a syntax error, a `!!python` tag or a duplicated key)."""
    return yaml.load(text, Loader=StrictSafeLoader)  # noqa: S506 - a SafeLoader subclass


def error_line(e: yaml.YAMLError) -> str:
    """A YAML error in one line: what is wrong and where (line, column), without the echoed source text."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = ": ".join(x for x in (e.context, e.problem) if x)
        return f"{where}{what}"
    return " ".join(str(e).split())


def load_file(path: Path | str) -> Any:
    """Parse a YAML file strictly; OSError and yaml.YAMLError are left to the caller, who names the file's role."""
    return load_text(Path(path).read_text(encoding="utf-8"))


def read_file(path: Path | str, role: str, error: type[Exception]) -> Any:
    """`load_file` with every failure (unreadable, not UTF-8, bad YAML) raised as one `error` line naming the
    file's role and path: "cannot read <role> <path>: <why>"."""
    try:
        return load_file(path)
    except OSError as e:
        raise error(f"cannot read {role} {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise error(f"cannot read {role} {path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except yaml.YAMLError as e:
        raise error(f"cannot read {role} {path}: {error_line(e)}") from e

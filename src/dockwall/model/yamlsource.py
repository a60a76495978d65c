"""Read YAML into plain data, remembering the line of every value for error messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from dockwall.errors import PolicyError, Problem

Path = tuple[str | int, ...]
_SCALARS = yaml.constructor.SafeConstructor()
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~5x faster
# Bounds, so that a hostile or broken file is a clear error in bounded time and memory: an
# alias is a reference to a node, and "billion laughs" aliases expand when walked.
MAX_BYTES = 8 * 1024 * 1024
MAX_VALUES = 200_000  # values walked, aliases counted each time they are used
MAX_DEPTH = 32  # nesting of lists and mappings


@dataclass
class Located:
    """Plain data (dicts, lists, scalars) with the 1-based line of each path in it."""

    data: Any
    filename: str
    lines: dict[Path, int] = field(default_factory=dict)
    walked: int = 0  # values converted so far

    def where(self, path: Path) -> str:
        """file:line of the deepest known path prefix."""
        for cut in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:cut]))
            if line is not None:
                return f"{self.filename}:{line}"
        return self.filename


def load(text: str, filename: str) -> Located:
    """Parse text as YAML (safe subset). Duplicate keys are an error, not a silent overwrite.
    Too large, too deep or too many values (aliases counted where used) is an error too."""
    if len(text) > MAX_BYTES:
        raise PolicyError([Problem(filename, f"policy file is larger than {MAX_BYTES} bytes")])
    try:
        node = yaml.compose(text, Loader=_LOADER)
        located = Located(None, filename)
        if node is not None:
            located.data = _convert(node, (), located)
    except RecursionError:
        raise PolicyError([Problem(filename, "not valid YAML: nested too deeply")]) from None
    except yaml.YAMLError as exc:  # also from converting a scalar ("=" has no constructor)
        mark = getattr(exc, "problem_mark", None)
        where = f"{filename}:{mark.line + 1}" if mark else filename
        raise PolicyError([Problem(where, f"not valid YAML: {exc}")]) from None
    finally:
        # The constructor remembers each node it made a value of: let the nodes go (a
        # policy of 10,000 addresses held 4 MB of them, and every reload added its own).
        _SCALARS.constructed_objects.clear()
        _SCALARS.recursive_objects.clear()
    return located


def _convert(node: yaml.Node, path: Path, out: Located) -> Any:
    out.walked += 1
    where = f"{out.filename}:{node.start_mark.line + 1}"
    if out.walked > MAX_VALUES:
        raise PolicyError([Problem(where, f"more than {MAX_VALUES} values (aliases expanded)")])
    if len(path) > MAX_DEPTH:
        raise PolicyError([Problem(where, f"nested deeper than {MAX_DEPTH} levels")])
    out.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        return _mapping(node, path, out)
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), out) for i, item in enumerate(node.value)]
    return _SCALARS.construct_object(node, deep=True)


def _mapping(node: yaml.MappingNode, path: Path, out: Located) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = str(_SCALARS.construct_object(key_node, deep=True))
        key_line = key_node.start_mark.line + 1
        if key in result:
            raise PolicyError([Problem(f"{out.filename}:{key_line}", f"key {key!r} appears twice")])
        result[key] = _convert(value_node, (*path, key), out)
        out.lines[(*path, key)] = key_line
    return result

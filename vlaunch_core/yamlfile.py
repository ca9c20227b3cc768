"""Reading YAML of the user (job spec, registry, profiles, override values): `yaml.safe_load`'s
constructors only, with bounded work: the file's size, the size of the document once its
aliases are expanded (a "billion laughs" of nested aliases is a few hundred bytes and
expands to billions of nodes), and the nesting depth. Every failure is one user error naming
the file (and line)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from vlaunch_core.errors import UserError

MAX_YAML_BYTES = 4 << 20
"""A spec, registry or profiles file is a few KB; anything bigger is refused unread."""
MAX_YAML_NODES = 100_000
"""Scalars, sequences and mappings of a document with every alias expanded."""
MAX_YAML_DEPTH = 200
"""Nesting of sequences and mappings (a spec nests about six deep)."""


class _Bounded(yaml.SafeLoader):
    """SafeLoader whose composer refuses documents nested deeper than MAX_YAML_DEPTH."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        depth = getattr(self, "_vl_depth", 0)
        if depth >= MAX_YAML_DEPTH:
            raise UserError(
                f"nested more than {MAX_YAML_DEPTH} levels deep",
                hint="a job spec, registry or profiles file nests a few levels",
            )
        self._vl_depth = depth + 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._vl_depth = depth


def _expanded_size(root: yaml.Node) -> int:
    """Nodes of the document with every alias expanded (a shared node counts each time it
    is used), computed without expanding: each node's size is memoised. A node that contains
    itself (a recursive alias) is refused."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    # iterative post-order walk: deep documents must not hit Python's recursion limit
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            total = 1
            for child in _children(node):
                total += sizes[id(child)]
                if total > MAX_YAML_NODES:
                    raise UserError(
                        f"the document expands to more than {MAX_YAML_NODES:,} values "
                        "(aliases repeated inside aliases)",
                        hint="write the values out, or use fewer nested aliases (*name)",
                    )
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise UserError(
                "an alias refers to the collection it is in (a recursive document)",
                hint="remove the recursive alias (*name inside &name)",
            )
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise UserError(
                    "an alias refers to the collection it is in (a recursive document)",
                    hint="remove the recursive alias (*name inside &name)",
                )
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def load_yaml_text(text: str, where: str) -> Any:
    """`yaml.safe_load(text)` with the bounds above; errors name `where` (a file or key)."""
    loader = _Bounded(text)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _expanded_size(node)
            return loader.construct_document(node)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
            problem = getattr(e, "problem", None) or str(e)
            raise UserError(
                f"{at}: invalid YAML: {problem}", hint="fix the syntax at that line"
            ) from None
        except UserError as e:
            raise UserError(f"{where}: {e.message}", hint=e.hint) from None
        except RecursionError:
            raise UserError(
                f"{where}: nested too deeply to read",
                hint="a job spec, registry or profiles file nests a few levels",
            ) from None
    finally:
        loader.dispose()


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Read and `load_yaml_text` a file, turning I/O and syntax errors into one user error."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file", hint="check the path of the job spec")
    try:
        if p.stat().st_size > MAX_YAML_BYTES:
            raise UserError(
                f"{p}: {p.stat().st_size} bytes is too big for a vlaunch YAML file (at most "
                f"{MAX_YAML_BYTES >> 20} MiB)",
                hint="give the YAML file itself (job spec, registry or profiles)",
            )
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: cannot read: {e}") from None
    return load_yaml_text(text, str(p))

"""Bounded readers for files a user hands in: everything is measured before any work starts.

A YAML file is composed into its node graph and walked once, iteratively, before anything is
constructed: that walk refuses an alias that refers to itself, an alias explosion ("billion
laughs": nine levels of nine aliases is 9**9 nodes), nesting deeper than any real scenario and
integers too long to convert. JSON lines get the same treatment (line size, nesting depth,
numbers). Each refusal is one ``BoundedInputError`` naming the file and line, raised in well
under a second whatever the file holds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import yaml

MAX_YAML_BYTES = 16 * 1024 * 1024  # the largest built-in bank is ~0.2 MiB
MAX_YAML_NODES = 200_000  # nodes after alias expansion
MAX_YAML_ALIASES = 10_000
MAX_DEPTH = 64
MAX_INT_DIGITS = 18  # fits a 64-bit integer; anything longer is a typo or an attack
MAX_JSONL_LINE_BYTES = 16 * 1024 * 1024
INT_TAG = "tag:yaml.org,2002:int"


class BoundedInputError(ValueError):
    """A user file exceeds a bound; the message names the file (and line) and the bound (exit code 2)."""


def check_size(path: Path, limit: int, what: str) -> None:
    size = os.path.getsize(path)
    if size > limit:
        raise BoundedInputError(f"{path}: {what} is {size / 2**20:.1f} MiB, more than the {limit / 2**20:.0f} MiB allowed")


def load_yaml(path: Path, text: str) -> tuple[object, yaml.Node | None]:
    """Parse YAML text after bounding its node graph; returns (data, root node or None)."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_YAML_BYTES:
        raise BoundedInputError(f"{path}: larger than the {MAX_YAML_BYTES // 2**20} MiB a YAML file may be")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_yaml_graph(path, node)
        return loader.construct_document(node), node
    finally:
        loader.dispose()


def _check_yaml_graph(path: Path, root: yaml.Node) -> None:
    """Measure the tree the node graph expands to without expanding it: each distinct node is
    visited once and its expanded size and height are memoised, so a billion-laughs file costs
    as much as its text. Refuses cycles, explosions, deep nesting and over-long integers."""
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    on_path: set[int] = set()
    aliases = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key, line = id(node), node.start_mark.line + 1
        if finished:
            children = _children(node)
            size[key] = 1 + sum(size[id(child)] for child in children)
            height[key] = 1 + max((height[id(child)] for child in children), default=0)
            on_path.discard(key)
            if size[key] > MAX_YAML_NODES:
                raise BoundedInputError(
                    f"{path}:{line}: aliases expand to more than {MAX_YAML_NODES:,} values (an alias bomb?)"
                )
            if height[key] > MAX_DEPTH:
                raise BoundedInputError(f"{path}:{line}: nested deeper than {MAX_DEPTH} levels")
        elif key in size:  # measured already: this is an alias to it
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise BoundedInputError(f"{path}:{line}: more than {MAX_YAML_ALIASES:,} aliases")
        elif key in on_path:
            raise BoundedInputError(f"{path}:{line}: an alias refers to a value that contains it (a cycle)")
        elif isinstance(node, yaml.ScalarNode):
            if node.tag == INT_TAG and sum(c.isdigit() for c in node.value) > MAX_INT_DIGITS:
                raise BoundedInputError(f"{path}:{line}: the number {node.value[:12]}... is too large")
            size[key] = height[key] = 1
        else:
            on_path.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return node.value if isinstance(node, yaml.SequenceNode) else []


def parse_json_line(raw: bytes, where: str) -> object:
    """One JSON value from one line, bounded in size, nesting and number length."""
    if len(raw) > MAX_JSONL_LINE_BYTES:
        raise BoundedInputError(f"{where}: line is longer than {MAX_JSONL_LINE_BYTES // 2**20} MiB")
    return parse_json(raw, where)


def read_json_file(path: Path, max_bytes: int = MAX_JSONL_LINE_BYTES) -> object:
    """A whole JSON file (a manifest, a model's config.json), bounded like a JSON line."""
    check_size(path, max_bytes, "the JSON file")
    return parse_json(path.read_bytes(), str(path))


def parse_json(raw: bytes, where: str) -> object:
    """JSON bounded in nesting and number length; every failure is a BoundedInputError."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BoundedInputError(f"{where}: not valid UTF-8") from None
    if text.count("[") + text.count("{") > MAX_DEPTH and _json_depth(text) > MAX_DEPTH:
        raise BoundedInputError(f"{where}: nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_int=_bounded_int, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise BoundedInputError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
    except ValueError as error:  # raised by the hooks below
        raise BoundedInputError(f"{where}: {error}") from None


def read_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, value) for every non-blank line of a JSONL file, each bounded."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():
                yield number, parse_json_line(raw, f"{path}:{number}")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"the number {text[:12]}... is too large")
    return int(text)


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _json_depth(text: str) -> int:
    """Deepest bracket nesting outside strings: measured before json.loads can recurse."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest

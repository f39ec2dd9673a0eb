"""Reading a YAML spec that may be hostile: size, encoding, alias bombs, deep nesting, tags, duplicate keys.

``yaml.safe_load`` already refuses python tags, but it happily builds a "billion laughs" document whose
aliases share nodes: the load is quick and the blow-up happens later, when pydantic walks it. So the
document is first *composed* (nodes, no Python objects), its expanded size is counted with the shared
nodes counted as often as they are used (linear time, memoised), and only a small tree is constructed.
Every problem is one ``SpecError`` line naming the file. Light module: imports neither torch nor ray.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from sweeper.errors import SpecError

MAX_BYTES = 1 << 20  # 1 MiB: a sweep spec is a page of YAML
MAX_NODES = 100_000  # nodes after expanding aliases (a real spec has a few hundred)
MAX_DEPTH = 64  # nesting levels (a real spec has 4)
# Keys that would put a secret into a spec (and from there into trials/ and reports/).
SECRET_KEY = re.compile(r"(^|_)(api_?token|token|password|secret|api_?key)$", re.IGNORECASE)


def load_yaml(path: Path) -> Any:
    """The Python data of a YAML file, or SpecError naming the file and the problem."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SpecError(f"{path}: the file is {size} bytes, over the {MAX_BYTES}-byte limit for a spec: "
                            "is it the right file?")  # fmt: skip
        data = path.read_bytes()
    except OSError as exc:  # PermissionError, a vanished file, an I/O error
        raise SpecError(f"{path}: could not be read ({exc.strerror or type(exc).__name__}): check the path and "
                        "its permissions") from None  # fmt: skip
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise SpecError(f"{path}: the file is UTF-16 text: save it as UTF-8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}): "
                        "save it as UTF-8") from None  # fmt: skip
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: {_where(exc)}invalid YAML: {_problem(exc)}: fix the syntax") from None
    except RecursionError:
        raise SpecError(f"{path}: invalid YAML: nested too deeply (over {MAX_DEPTH} levels)") from None
    if node is None:
        return None
    check_tree(node, str(path))
    try:
        return yaml.SafeLoader(text).get_single_data()
    except yaml.YAMLError as exc:  # python tags and other constructors safe_load refuses
        raise SpecError(f"{path}: {_where(exc)}invalid YAML: {_problem(exc)}: a sweep spec is plain YAML "
                        "(no tags, no complex keys)") from None  # fmt: skip


def check_tree(root: yaml.Node, source: str) -> None:
    """Reject alias bombs, recursive aliases, deep nesting and duplicate mapping keys."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int, path: tuple[int, ...]) -> int:
        if depth > MAX_DEPTH:
            raise SpecError(f"{source}: line {node.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep: "
                            "a sweep spec needs a few")  # fmt: skip
        if id(node) in path:
            raise SpecError(f"{source}: line {node.start_mark.line + 1}: a recursive alias (an anchor used inside "
                            "itself): remove it")  # fmt: skip
        if id(node) in sizes:
            return sizes[id(node)]
        total = 1
        for child in _children(node, source):
            total += size(child, depth + 1, (*path, id(node)))
            if total > MAX_NODES:
                raise SpecError(f"{source}: expands to over {MAX_NODES} values through anchors and aliases "
                                "(an alias bomb?): write the values out or use fewer aliases")  # fmt: skip
        sizes[id(node)] = total
        return total

    size(root, 0, ())


def _children(node: yaml.Node, source: str) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                line = key.start_mark.line + 1
                if key.value in seen:
                    raise SpecError(f"{source}: line {line}: key '{key.value}' given twice (first on line "
                                    f"{seen[key.value]}): YAML keeps only the last; remove one")  # fmt: skip
                seen[key.value] = line
                if SECRET_KEY.search(key.value):
                    raise SpecError(f"{source}: line {line}: '{key.value}': secrets never go in a spec (it is copied "
                                    "to trials/ and reports/): set NEPTUNE_API_TOKEN (or the tool's variable) in "
                                    "the environment")  # fmt: skip
            yield key
            yield value


def _where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"line {mark.line + 1}: " if mark is not None else ""


def _problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return " ".join(str(problem).split())[:200]

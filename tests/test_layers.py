"""The import layers of ARCHITECTURE.md section 3: no cycles, (almost) no upward imports, no huge functions.

The graph is built with ``ast`` from every module under src/saro; imports at module level and inside functions
both count (a function-level import is still a dependency, only a later one). Imports under
``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import saro

ROOT = Path(saro.__file__).resolve().parent

# Layer order, lowest first (ARCHITECTURE.md section 3): a module may import its own layer or lower ones.
# Keyed by the top-level module or package name under saro: a whole package sits on one layer (no submodule is
# placed apart from its package), as the structure tool (`farm-studio look src/saro`) draws it.
LAYERS: list[set[str]] = [
    # 0: foundations that know nothing of models or stages; the stage table and the suite definitions are data
    {
        "errors",
        "paths",
        "console",
        "progress",
        "records",
        "reasoning",
        "reasoning_stream",
        "policy",
        "stages",
        "stats",
        "masking",
        "suites",
    },
    # 1: the typed recipe and the stage contract every stage module implements (StageContext, RunDir, hashes)
    {"recipe", "stage", "fingerprint"},
    # 2: model loading/generation, embeddings
    {"models", "embeddings"},
    # 3: judges (they read answers; labels and the expected label of a prompt kind live in judges/base.py)
    {"judges"},
    # 4: prompt sources and the prompts stage (attacks are built for the judges' inputs)
    {"prompts"},
    # 5: data synthesis
    {"synth"},
    # 6: training
    {"train"},
    # 7: evaluation and analyses, and the human labels of a run's answers (they read the eval's files)
    {"evaluate", "analysis", "labels"},
    # 8: the report (eval numbers, labels, analyses)
    {"report"},
    # 9: orchestration (hashing, skip/redo, status)
    # (standalone: `saro eval --model ...` builds a recipe and runs the prompts/eval/report stages through it)
    {"pipeline", "standalone"},
    # 10: serving, interactive chat and the test helpers
    {"serve", "chat", "testing"},
    # 11: entry points
    {"cli", "__init__", "__main__"},
]
# the one arrow back up: the prompts stage rephrases with an answer model (prompts.prompts -> synth.answers)
MAX_UPWARD_IMPORTS = 1
MAX_FUNCTION_LINES = 100


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    out: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return out


def _resolve(name: str) -> str | None:
    """The saro module a dotted name refers to (the longest known prefix), or None outside saro."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(mod: str) -> set[str]:
    path = MODULES[mod]
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                pkg = package.split(".")
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            targets = [f"{base}.{a.name}" for a in node.names]
        found.update(t for t in map(_resolve, targets) if t and t != mod)
    return found


GRAPH: dict[str, set[str]] = {m: _imports(m) for m in MODULES}


def _room(mod: str) -> str:
    """The top-level module or package a module belongs to ("saro.prompts.prompts" -> "prompts")."""
    return (mod.split(".")[1:] or ["__init__"])[0]


def _layer(mod: str) -> int:
    room = _room(mod)
    for i, names in enumerate(LAYERS):
        if room in names:
            return i
    raise AssertionError(f"{mod}: not in LAYERS; add it to tests/test_layers.py (ARCHITECTURE.md section 3)")


# the package-level graph: an arrow from one top-level module or package to another
ROOMS: dict[str, set[str]] = {}
for _m, _targets in GRAPH.items():
    ROOMS.setdefault(_room(_m), set()).update(_room(t) for t in _targets if _room(t) != _room(_m))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_relative_and_function_level_imports_are_seen():
    assert "saro.errors" in GRAPH["saro.cli"]  # module level
    assert "saro.pipeline" in GRAPH["saro.cli"]  # only imported inside commands


def test_every_module_has_a_layer():
    for mod in MODULES:
        _layer(mod)


def test_no_import_cycles():
    assert _cycles(GRAPH) == []


def test_at_most_one_upward_import():
    upward = sorted(
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, targets in GRAPH.items()
        for t in targets
        if _layer(t) > _layer(m)
    )
    assert len(upward) <= MAX_UPWARD_IMPORTS, "\n".join(upward)


def test_packages_have_no_import_cycles_and_at_most_one_arrow_back_up():
    """The same at the level of packages (``prompts`` -> ``synth`` is one arrow however many modules import):
    no two packages import each other through any path, once the allowed upward arrows are set aside."""
    upward = sorted(
        f"{a} -> {b}" for a, bs in ROOMS.items() for b in bs if _layer(f"saro.{b}") > _layer(f"saro.{a}")
    )
    assert len(upward) <= MAX_UPWARD_IMPORTS, "\n".join(upward)
    down = {a: {b for b in bs if _layer(f"saro.{b}") <= _layer(f"saro.{a}")} for a, bs in ROOMS.items()}
    assert _cycles(down) == []


def test_no_function_over_100_lines():
    long = []
    for path in MODULES.values():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name} ({n} lines)")
    assert long == [], "\n".join(long)

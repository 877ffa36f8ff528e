"""The core's layers: every module imports only modules of its own layer or below, at any depth, with no circle.

Imports are read from the source (function-level ones included; ``if TYPE_CHECKING:`` blocks excluded, since they
never run), so a lower layer cannot come to know a higher one through an import tucked inside a function.
docs/architecture.md draws these layers.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top; a module belongs to the layer of the longest prefix that names it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("guide_core.files", "guide_core.progress", "guide_core.flags", "guide_core.precision",
              "guide_core.config", "guide_core.devices", "guide_core.tables")),
    ("weights", ("guide_core.weights",)),
    ("networks", ("guide_core.eg3d", "guide_core.encoders", "guide_core.identity", "guide_core.perceptual",
                  "guide_core.faces", "guide_core.faces_ffhq", "guide_core.world", "guide_core.stylegan2")),
    ("backends", ("guide_core.backends",)),
    ("bundle", ("guide_core.bundle",)),
    ("inversion", ("guide_core.inversion", "guide_core.typical")),
    ("engine", ("guide_core.engine",)),
    ("methods", ("guide_core.methods",)),
    ("evaluation", ("guide_core.audit", "guide_core.ladder", "guide_core.metrics")),
    ("runs", ("guide_core.runs",)),
    ("catalogue", ("guide_core.registry", "guide_core.released", "guide_core.sg2", "guide_core.world.bundle",
                   "guide_core.publish", "guide_core.fetching", "guide_core.testing")),
    ("interface", ("guide_core.cli", "guide_core.__main__", "demo", "app")),
]


# The one import that reaches up, on purpose: the public loading contract of the pSp / e4e files is
# guide_core.weights.load_inversion_checkpoint, and the networks it returns live in the encoders. No other may be added.
ALLOWED_UPWARD = {("guide_core.weights", "guide_core.encoders.inversion")}


def module_files() -> dict[str, Path]:
    """Every module of the package, the studio and the app, by dotted name."""
    files = {"app": ROOT / "app.py"}
    for package in ("guide_core", "demo"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    return files


def layer_of(module: str) -> int:
    """Index of a module's layer: the layer of the longest matching prefix (the package's face is base)."""
    if module == "guide_core":
        return 0
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise AssertionError(f"module {module} belongs to no layer: add it to LAYERS")
    return best


def _runtime_nodes(tree: ast.AST):
    """Every node except those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules a module imports, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def test_every_import_points_down_or_sideways():
    graph = import_graph()
    upward = [f"{src} ({LAYERS[layer_of(src)][0]}) imports {dst} ({LAYERS[layer_of(dst)][0]})"
              for src, targets in graph.items() for dst in sorted(targets)
              if layer_of(dst) > layer_of(src) and (src, dst) not in ALLOWED_UPWARD]
    assert not upward, "imports that reach up a layer:\n" + "\n".join(upward)
    allowed = {(src, dst) for src, targets in graph.items() for dst in targets if (src, dst) in ALLOWED_UPWARD}
    assert allowed == ALLOWED_UPWARD, f"an allowed upward import is gone; shrink ALLOWED_UPWARD: {ALLOWED_UPWARD - allowed}"


def test_no_module_imports_itself_in_a_circle():
    graph = import_graph()
    circles, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_runtime_never_imports_the_world_trainers():
    graph = import_graph()
    reaching = [src for src, targets in graph.items() if any(t.startswith("tools") for t in targets)]
    assert not reaching, f"runtime modules import tools/: {reaching}"


@pytest.mark.parametrize("source, expected", [
    ("from guide_core.runs import chain_links\n", "guide_core.runs"),
    ("def f():\n    from guide_core import audit\n", "guide_core.audit"),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from guide_core.runs import x\n", None),
])
def test_the_import_reader_sees_function_level_imports_and_skips_type_checking(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    found = imports_of("guide_core.bundle", path, {"guide_core.runs", "guide_core.audit", "guide_core.bundle"})
    assert found == ({expected} if expected else set())


def test_a_lower_layer_reaching_up_is_caught():
    assert layer_of("guide_core.weights.download") < layer_of("guide_core.released")
    assert layer_of("guide_core.world.bundle") > layer_of("guide_core.world.generator")

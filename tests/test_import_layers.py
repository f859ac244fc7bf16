"""The package's import graph, read from the source with ast (imports inside functions count too): no cycles,
and the lower layers import nothing from the upper ones."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "datagen"

# The layers, bottom first: a module may import from its own package and from any layer below its own, never
# from a package beside it or above it. A module in no layer fails the test, so a new package must be placed here.
LAYERS: list[set[str]] = [
    {"datagen", "datagen.errors", "datagen.redaction", "datagen.files", "datagen.formats"},
    {"datagen.source"},
    {"datagen.quality"},
    {"datagen.tasks"},
    {"datagen.teachers"},
    {"datagen.run"},
    {"datagen.data", "datagen.judge", "datagen.train", "datagen.testing", "datagen.curate"},
    {"datagen.eval"},
    {"datagen.api"},
    {"datagen.cli_flags"},
    {"datagen.cli"},
]
# The base layer's parts may use each other (errors names the disk's failures, files raises InputError).
SHARED_LAYERS = {0}


def unit_of(module: str) -> str:
    """The package (or top-level module) a module belongs to: datagen.run.pipeline -> datagen.run."""
    parts = module.split(".")
    return ".".join(parts[:2])


def layer_of(module: str) -> int | None:
    unit = unit_of(module)
    return next((index for index, units in enumerate(LAYERS) if unit in units), None)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                # `from datagen.train import cli` names a module; `from datagen.run.pipeline import Run` a name in one.
                targets.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names)
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_finder_sees_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_module_sits_in_a_layer() -> None:
    assert [module for module in import_graph() if layer_of(module) is None] == []


def test_each_layer_imports_only_what_lies_below() -> None:
    graph = import_graph()
    wrong = []
    for module, targets in sorted(graph.items()):
        layer = layer_of(module)
        assert layer is not None
        for target in sorted(targets):
            target_layer = layer_of(target)
            assert target_layer is not None
            same_unit = unit_of(target) == unit_of(module)
            if not same_unit and (target_layer > layer or (target_layer == layer and layer not in SHARED_LAYERS)):
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_the_layer_rule_sees_an_upward_import() -> None:
    assert layer_of("datagen.run.pipeline") == 5 and layer_of("datagen.source.coco") == 1
    assert layer_of("datagen.newthing.x") is None
    assert unit_of("datagen.teachers.cache") != unit_of("datagen.run.items")


def test_nothing_imports_the_command_line() -> None:
    graph = import_graph()
    assert [module for module, targets in graph.items() if "datagen.cli" in targets] == []


def test_every_module_imports() -> None:
    """A name moved or renamed in a refactor shows here, not first in the command that happens to use it."""
    import importlib
    import importlib.util

    needs_torch = ("datagen.train", "datagen.eval")
    for name in sorted(import_graph()):
        if name.endswith(".__main__") or (name.startswith(needs_torch) and importlib.util.find_spec("torch") is None):
            continue  # a __main__ runs its command when imported
        importlib.import_module(name)

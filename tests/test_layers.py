"""The layers as docs/development.md draws them: no lossmix module imports a higher layer.

Every ``import`` and ``from ... import`` in a module counts, at module level or inside a
function (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from importlib import resources
from pathlib import Path

import pytest

# Lowest first. A module may import its own layer and the layers below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "leaves",
        ("lossmix.errors", "lossmix.utilities", "lossmix.registry.nodes", "lossmix.registry.allowlist"),
    ),
    ("kernels", ("lossmix.functional",)),
    ("reduction", ("lossmix.reduction",)),
    ("registry", ("lossmix.registry",)),
    ("losses", ("lossmix.losses",)),
    (
        "components",
        (
            "lossmix.samplers",
            "lossmix.mix.normalizers",
            "lossmix.mix.routing",
            "lossmix.mtl.functional",
            "lossmix.mtl.weighting",
            "lossmix.mtl.shared_generator",
            "lossmix.mtl.aggregators",
            "lossmix.mtl.scalarizers",
        ),
    ),
    ("engine", ("lossmix.mix", "lossmix.mtl")),
    ("schedules", ("lossmix.schedules",)),
    ("loops", ("lossmix.loops",)),
    ("lightning", ("lossmix.lightning",)),
    ("app", ("lossmix.app", "lossmix.extend", "lossmix.train", "lossmix.demo", "lossmix.conf")),
]


def layer_of(module: str) -> int:
    for index, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer; add it to LAYERS (and to docs/development.md)")


def modules() -> list[tuple[str, Path]]:
    root = Path(str(resources.files("lossmix")))
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found.append((name, path))
    return found


def imports_of(module: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names}
    return {name for name in found if name == "lossmix" or name.startswith("lossmix.")}


def _known(name: str) -> str | None:
    """The module an imported name refers to (``lossmix.losses.FocalLoss`` → the package)."""
    for _, prefixes in LAYERS:
        for prefix in prefixes:
            if name == prefix or name.startswith(prefix + "."):
                return name
    return None


@pytest.mark.parametrize(("module", "path"), modules(), ids=lambda v: str(v))
def test_no_module_imports_a_higher_layer(module, path):
    if module == "lossmix":
        return  # the package's front door re-exports every layer
    own = layer_of(module)
    for name in imports_of(module, path):
        if name == "lossmix" or (name.startswith("lossmix.") and _known(name) is None):
            other = len(LAYERS) - 1  # the package's front door: only the apps may use it
        else:
            other = layer_of(name)
        assert other <= own, f"{module} (layer {LAYERS[own][0]}) imports {name} (layer {LAYERS[other][0]})"


def test_every_module_is_in_a_layer():
    for module, _ in modules():
        if module != "lossmix":
            layer_of(module)


def test_the_docs_list_the_layers_in_this_order():
    readme = (Path(__file__).parent.parent / "docs" / "development.md").read_text()
    section = readme.split("## Layers", 1)[1].split("\n## ", 1)[0]
    positions = [section.find(f"`{prefixes[0].removeprefix('lossmix.')}") for _, prefixes in LAYERS]
    assert all(p >= 0 for p in positions), positions
    assert positions == sorted(positions)


def test_no_import_cycle():
    """No lossmix module reaches itself through its imports (lazy and type-only ones count)."""
    found = dict(modules())
    graph = {m: sorted(i for i in imports_of(m, p) if i in found and i != m) for m, p in found.items()}
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = " -> ".join([*path[path.index(module) :], module])
            raise AssertionError(f"import cycle: {cycle}")
        if module in done:
            return
        for other in graph[module]:
            if other != "lossmix":  # the front door re-exports every layer
                visit(other, [*path, module])
        done.add(module)

    for module in graph:
        if module != "lossmix":
            visit(module, [])

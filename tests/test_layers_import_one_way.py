"""DESIGN §2 and STYLE §6: imports point one way. The compiler imports neither the runtime nor
the backends, the backends nothing of the other two, and neither those three nor the runtime
the front door (nnrun/); the one shared module is nnrun/notices.py, which imports nothing of
nnrun's (a style review found the compiler importing it from backends/, and the runtime a
helper of nnrun/__init__.py)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = "nnrun.notices"
# each layer: the layers of nnrun's it may not import
FORBIDDEN = {
    "compiler": ("nnrun.runtime", "nnrun.backends"),
    "backends": ("nnrun.compiler", "nnrun.runtime"),
    "runtime": (),
}
FRONT_DOOR = "nnrun"  # nnrun/__init__.py and the command line: above every layer


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, relative ones made absolute."""
    package = "nnrun." + ".".join(path.relative_to(ROOT).parent.parts)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module or "") if part)
            if module == FRONT_DOOR:  # `from nnrun import x`: x may be a module of nnrun/
                found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, module))
    return found


def _breaks(module: str, forbidden: tuple[str, ...]) -> bool:
    if module == SHARED or not (module == FRONT_DOOR or module.startswith(FRONT_DOOR + ".")):
        return False
    layers = ("nnrun.compiler", "nnrun.runtime", "nnrun.backends")
    if not any(module == layer or module.startswith(layer + ".") for layer in layers):
        return True  # the front door: nnrun/__init__.py, cli.py and the other commands
    return any(module == layer or module.startswith(layer + ".") for layer in forbidden)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_imports_only_the_layers_below_it(layer):
    wrong = [f"{path.relative_to(ROOT)}:{line}: {module}"
             for path in sorted((ROOT / layer).rglob("*.py"))
             for line, module in _imports(path) if _breaks(module, FORBIDDEN[layer])]
    assert wrong == []


def test_the_shared_notices_import_nothing_of_nnruns():
    modules = [module for _, module in _imports(ROOT / "nnrun" / "notices.py")]
    assert not [module for module in modules if module.split(".")[0] == "nnrun"]

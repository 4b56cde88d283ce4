"""The import direction of docs/architecture.rst, checked on every module of the package.

Data flows one way: _utils <- attr <- robust.discrepancy <- robust.attacks <- robust.regularizers
<- robust.evaluation, cli. A module may import from its own layer and the layers below it, never
from a layer above (function-level imports included; docstring examples are strings and do not
count). The side modules: models and data use only _utils; training may use data and models;
visualization may use attr and models.
"""

import ast
from pathlib import Path

import pytest

import captum_robust

PACKAGE = Path(captum_robust.__file__).parent

# the layer of a module, by the longest matching dotted prefix; a module may import layers <= its own
LAYERS = {
    "captum_robust": 0,
    "captum_robust._utils": 0,
    "captum_robust.models": 1,
    "captum_robust.data": 1,
    "captum_robust.attr": 2,
    "captum_robust.robust.discrepancy": 3,
    "captum_robust.robust.attacks": 4,
    "captum_robust.robust.stability": 4,
    "captum_robust.robust.regularizers": 5,
    "captum_robust.training": 5,
    "captum_robust.visualization": 5,
    "captum_robust.robust.evaluation": 6,
    "captum_robust.robust": 6,  # the package's __init__
    "captum_robust.cli": 7,
}
ROOT = "captum_robust"  # the package's own __init__ (``__version__``): layer 0, matched exactly
# pairs on the same or a lower layer that still must not import each other
FORBIDDEN = {
    ("captum_robust.models", "captum_robust.data"),
    ("captum_robust.data", "captum_robust.models"),
    ("captum_robust.attr", "captum_robust.models"),
    ("captum_robust.attr", "captum_robust.data"),
    ("captum_robust.robust.discrepancy", "captum_robust.models"),
    ("captum_robust.robust.attacks", "captum_robust.models"),
    ("captum_robust.robust.attacks", "captum_robust.data"),
    ("captum_robust.robust.regularizers", "captum_robust.models"),
    ("captum_robust.robust.regularizers", "captum_robust.data"),
    ("captum_robust.robust.regularizers", "captum_robust.training"),
    ("captum_robust.robust.regularizers", "captum_robust.visualization"),
}


def _layer_key(module: str) -> str:
    if module == ROOT:
        return ROOT
    matches = [k for k in LAYERS if k != ROOT and (module == k or module.startswith(k + "."))]
    if not matches:
        raise ValueError(f"{module} belongs to no layer of LAYERS; add it to the architecture (and this test)")
    return max(matches, key=len)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, module: str):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield name, node.lineno


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    assert len(MODULES) > 30
    for path in MODULES:
        _layer_key(_module_name(path))  # raises ValueError if a module has no layer
    with pytest.raises(ValueError, match="no layer"):
        _layer_key("captum_robust.newthing")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path):
    module = _module_name(path)
    own = _layer_key(module)
    wrong = []
    for name, line in _imports(path, module):
        if not name.startswith("captum_robust"):
            continue
        other = _layer_key(name)
        if LAYERS[other] > LAYERS[own] or (own, other) in FORBIDDEN:
            wrong.append(f"line {line}: {name} ({other}, layer {LAYERS[other]})")
    assert not wrong, f"{module} (layer {LAYERS[own]}) imports from above or across: " + "; ".join(wrong)


def test_the_check_catches_an_upward_import(tmp_path):
    """The checker itself: an attr module importing the attacks is reported."""
    fake = PACKAGE / "attr" / "_core" / "cam.py"
    source = "from captum_robust.robust.attacks import PGD\n"
    probe = tmp_path / "probe.py"
    probe.write_text(source)
    names = [n for n, _ in _imports(probe, _module_name(fake))]
    assert names == ["captum_robust.robust.attacks"]
    assert LAYERS[_layer_key(names[0])] > LAYERS[_layer_key(_module_name(fake))]

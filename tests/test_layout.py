"""Package layout: one version, declared dependencies, an import graph without cycles."""

import ast
import importlib.metadata
import pathlib
import re
import sys

import pytest

import sklearn_convkernel

PACKAGE = "sklearn_convkernel"
DIST = "sklearn-convkernel"
ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE_DIR = pathlib.Path(sklearn_convkernel.__file__).resolve().parent


def _modules():
    """{module name: parsed source} of every module of the package."""
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def _imports(name, tree):
    """Absolute names of the modules imported anywhere in a module (relative ones resolved)."""
    package = name if tree_is_package(name) else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant)):
            out.add(node.args[0].value)  # importlib.import_module("...")
    return out


def tree_is_package(name):
    return (PACKAGE_DIR.parent / name.replace(".", "/") / "__init__.py").exists()


# ---------------------------------------------------------------------------
# version and dependencies
# ---------------------------------------------------------------------------


def test_version_is_written_once():
    assert sklearn_convkernel.__version__ == importlib.metadata.version(DIST)
    pyproject = ROOT / "pyproject.toml"
    meson = ROOT / "meson.build"
    if not (pyproject.exists() and meson.exists()):
        pytest.skip("not run from a source checkout")
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads(pyproject.read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    written = re.search(r"^\s*version:\s*'([^']+)'", meson.read_text(), re.M).group(1)
    assert written == sklearn_convkernel.__version__


def test_every_third_party_import_is_a_declared_dependency():
    declared = {re.split(r"[\s;<>=!~\[]", req, maxsplit=1)[0].lower()
                for req in importlib.metadata.requires(DIST)}
    providers = importlib.metadata.packages_distributions()
    missing = set()
    for name, tree in _modules().items():
        for mod in _imports(name, tree):
            top = mod.split(".")[0]
            if not top or top == PACKAGE or top in sys.stdlib_module_names or top == "__future__":
                continue
            dists = {d.lower() for d in providers.get(top, [top])}
            if not dists & declared:
                missing.add((name, top))
    assert not missing, f"imports of undeclared distributions: {sorted(missing)}"
    requires = importlib.metadata.requires(DIST)
    assert any(re.fullmatch(r"joblib\s*>=\s*1\.4.*", r) for r in requires), requires


def test_test_oracles_live_in_the_testing_module():
    import sklearn_convkernel.testing as testing

    for name in ("sample_network", "empirical_kernel", "FiniteNetwork"):
        assert name in testing.__all__ and callable(getattr(testing, name))
        assert name not in sklearn_convkernel.__all__
        assert not hasattr(sklearn_convkernel, name)

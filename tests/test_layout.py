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


# ---------------------------------------------------------------------------
# the import graph
# ---------------------------------------------------------------------------


def import_graph():
    """{module: modules of the package it imports}, from every import statement.

    Imports inside functions count too (a lazy import hides a cycle, it does
    not remove it); an import of a package the module lives in does not (it
    is always already imported).
    """
    modules = _modules()
    graph = {}
    for name, tree in modules.items():
        targets = set()
        for mod in _imports(name, tree):
            while mod and mod not in modules:
                mod = mod.rpartition(".")[0]
            if mod and mod != name and not name.startswith(mod + "."):
                targets.add(mod)
        graph[name] = targets
    return graph


def find_cycle(graph):
    """A list of modules [m0, m1, ..., m0] forming an import cycle, or None."""
    state = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_find_cycle_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_the_package_import_graph_has_no_cycle():
    graph = import_graph()
    assert f"{PACKAGE}._base" in graph and f"{PACKAGE}.arch" in graph[f"{PACKAGE}._base"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)

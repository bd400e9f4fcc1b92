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


# ---------------------------------------------------------------------------
# each layer class owns its meaning (docs/developer.rst, "Adding a layer")
# ---------------------------------------------------------------------------

#: the drivers that must call the layer's own methods instead of testing its type
DRIVERS = ("_plan", "_reference", "_finite", "_augment")
#: a layer's methods, one per driver
LAYER_METHODS = ("_lower", "_oracle", "_finite")


def layer_type_checks(tree):
    """``isinstance``/``issubclass`` calls of a module on a concrete layer type of ``arch``.

    Returns a list of (line, type name).  The arch module may be imported
    under any alias, or the type by name; ``isinstance(x, arch.Layer)`` (a
    check of user input) is allowed.
    """
    from sklearn_convkernel import arch

    aliases, names = set(), {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            for alias in node.names:
                if alias.name == "arch" and module.split(".")[-1] in ("", PACKAGE):
                    aliases.add(alias.asname or alias.name)
                elif module.split(".")[-1] == "arch":
                    names[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == f"{PACKAGE}.arch" and alias.asname:
                    aliases.add(alias.asname)

    def layer_type(node):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id in aliases:
            name = node.attr
        elif isinstance(node, ast.Name) and node.id in names:
            name = names[node.id]
        else:
            return None
        obj = getattr(arch, name, None)
        if isinstance(obj, type) and issubclass(obj, arch.Layer) and obj is not arch.Layer:
            return name
        return None

    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("isinstance", "issubclass") and len(node.args) == 2):
            types = node.args[1]
            for t in (types.elts if isinstance(types, ast.Tuple) else [types]):
                name = layer_type(t)
                if name:
                    found.append((node.lineno, name))
    return found


def test_layer_type_check_detector_finds_chains():
    chain = ast.parse(
        "from sklearn_convkernel import arch as A\n"
        "from .arch import Conv as C\n"
        "def f(layer):\n"
        "    if isinstance(layer, A.Sequential): pass\n"
        "    elif isinstance(layer, (A.Flatten, C)): pass\n"
        "    elif isinstance(layer, A.Layer): pass\n"
    )
    assert layer_type_checks(chain) == [(4, "Sequential"), (5, "Flatten"), (5, "Conv")]


@pytest.mark.parametrize("driver", DRIVERS)
def test_drivers_do_not_dispatch_on_layer_types(driver):
    tree = _modules()[f"{PACKAGE}.{driver}"]
    found = layer_type_checks(tree)
    assert not found, (
        f"{driver}.py tests layer types {found}: put the rule in the layer class's own "
        "method (_lower / _oracle / _finite, see docs/developer.rst)"
    )


def _public_layer_classes():
    from sklearn_convkernel import arch

    return sorted({getattr(arch, n) for n in arch.__all__
                   if isinstance(getattr(arch, n), type) and issubclass(getattr(arch, n), arch.Layer)
                   and getattr(arch, n) is not arch.Layer}, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", _public_layer_classes(), ids=lambda c: c.__name__)
def test_every_public_layer_implements_its_rules(cls):
    from sklearn_convkernel import arch

    assert cls.output_shape is not arch.Layer.output_shape
    for method in LAYER_METHODS:
        overridden = getattr(cls, method) is not getattr(arch.Layer, method)
        assert overridden or method in cls._unsupported, (
            f"{cls.__name__} neither implements {method} nor declares it in _unsupported"
        )
    if issubclass(cls, arch._Nonlinearity):
        # one place per nonlinearity: its core code, its dual, its random features
        fn, degree, sigma = cls()._core_params()
        assert isinstance(fn, int) and fn >= 0
        assert (cls._dual is not arch._Nonlinearity._dual
                or cls._oracle is not arch._Nonlinearity._oracle)
        assert (cls._features is not arch._Nonlinearity._features
                or cls._feature_map is not arch._Nonlinearity._feature_map)
    if issubclass(cls, arch._Pool):
        assert (cls._oracle_matrix is not arch._Pool._oracle_matrix
                or cls._oracle is not arch._Pool._oracle)


def test_core_function_codes_are_distinct():
    from sklearn_convkernel import arch

    layers = [arch.ReLU(), arch.Erf(), arch.ExpKernel(), arch.ArcCosKernel(0),
              arch.ArcCosKernel(1), arch.PolyKernel(), arch.LinearKernel()]
    codes = [layer._core_params()[0] for layer in layers]
    assert len(set(codes)) == len(codes) == len({type(x) for x in layers}) + 1


def test_a_layer_without_rules_fails_clearly_in_every_driver():
    import numpy as np

    from sklearn_convkernel import arch
    from sklearn_convkernel._finite import FiniteNetwork
    from sklearn_convkernel._plan import make_plan
    from sklearn_convkernel._reference import reference_gram

    class Bare(arch.Layer):
        def output_shape(self, shape):
            return (1, 1)

        def __repr__(self):
            return "Bare()"

    net = arch.Sequential(arch.Conv(1), Bare())
    with pytest.raises(arch.ArchitectureError, match=r"Bare\(\)"):
        make_plan(net, (3, 3, 1))
    X = np.ones((1, 3, 3, 1))
    with pytest.raises(TypeError, match=r"Bare\(\)"):
        reference_gram(X, architecture=net)
    with pytest.raises(TypeError, match=r"Bare\(\)"):
        FiniteNetwork(net, 1, 2, random_state=0)(X)

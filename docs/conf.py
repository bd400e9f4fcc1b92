"""Sphinx configuration for sklearn-convkernel.

Builds offline: optional extensions (numpydoc, sphinx-gallery) are used only
when importable, and nothing is fetched at build time (no intersphinx).  The
documentation tools are not dependencies of the package:

    pip install sphinx numpydoc sphinx-gallery matplotlib
    python3 -m sphinx -W --keep-going -b html docs docs/_build/html

The gallery runs every ``examples/plot_*.py`` (a few minutes on 2 cores);
``-D plot_gallery=0`` builds the pages without running them.
"""

import importlib.util
import os
import sys

# Document the *installed* package (the source tree has no compiled _core).
# ``python3 -m sphinx`` run from the checkout root puts the root (as "" or its
# path) first on sys.path, which would make the gallery import the uncompiled
# source tree: drop it.  Set SKLEARN_CONVKERNEL_DOCS_SRC=1 to put the checkout
# first on sys.path instead (for an in-place build).
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.environ.get("SKLEARN_CONVKERNEL_DOCS_SRC"):
    sys.path.insert(0, _ROOT)
else:
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _ROOT]
# (end of the sys.path setup: tests/test_docs_setup.py runs the lines above)

project = "sklearn-convkernel"
author = "sklearn-convkernel developers"
copyright = "sklearn-convkernel developers"
try:
    from importlib.metadata import version as _version

    release = _version("sklearn-convkernel")
except Exception:  # not installed: the version written in meson.build
    import re

    with open(os.path.join(os.path.dirname(__file__), "..", "meson.build")) as _f:
        release = re.search(r"^\s*version:\s*'([^']+)'", _f.read(), re.M).group(1)
version = ".".join(release.split(".")[:2])


def _have(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
if _have("numpydoc"):
    extensions.append("numpydoc")
    numpydoc_show_class_members = False
else:
    extensions.append("sphinx.ext.napoleon")
    napoleon_google_docstring = False
    napoleon_numpy_docstring = True

if _have("sphinx_gallery"):
    extensions.append("sphinx_gallery.gen_gallery")
    sphinx_gallery_conf = {
        "examples_dirs": "../examples",
        "gallery_dirs": "auto_examples",
        "filename_pattern": r"/plot_",
        "download_all_examples": False,
        "within_subsection_order": "sphinx_gallery.sorting.FileNameSortKey",
        "abort_on_example_error": True,
        "show_memory": False,
        "min_reported_time": 1,
    }
else:
    # keep the toctree entry valid without sphinx-gallery (auto_examples/ is a
    # generated, git-ignored directory)
    _stub = os.path.join(os.path.dirname(os.path.abspath(__file__)), "auto_examples")
    if not os.path.exists(os.path.join(_stub, "index.rst")):
        os.makedirs(_stub, exist_ok=True)
        with open(os.path.join(_stub, "index.rst"), "w") as f:
            f.write(
                "Examples\n========\n\nThe gallery is built by sphinx-gallery "
                "(``pip install sphinx-gallery matplotlib``); the scripts are in "
                "``examples/``.\n"
            )

autosummary_generate = True
# sklearn_convkernel.kervolution.KernelConv2d subclasses torch.nn.Conv2d:
# without PyTorch (an optional dependency) autodoc documents it against a
# mocked torch, and the kervolution example only prints a message.
if not _have("torch"):
    autodoc_mock_imports = ["torch"]
# classes list their methods through docs/_templates/autosummary/class.rst
autodoc_default_options = {}

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
master_doc = "index"
html_theme = "alabaster"
html_static_path = []

"""Sphinx configuration for sklearn-convkernel.

Builds offline: optional extensions (numpydoc, sphinx-gallery) are used only
when importable, and nothing is fetched at build time (no intersphinx).

    pip install sphinx numpydoc sphinx-gallery   # optional extras
    sphinx-build -b html docs docs/_build/html
"""

import importlib.util
import os
import sys

# Document the *installed* package (the source tree has no compiled _core).
# Set SKLEARN_CONVKERNEL_DOCS_SRC=1 to put the checkout first on sys.path.
if os.environ.get("SKLEARN_CONVKERNEL_DOCS_SRC"):
    sys.path.insert(0, os.path.abspath(".."))

project = "sklearn-convkernel"
author = "sklearn-convkernel developers"
copyright = "sklearn-convkernel developers"
try:
    from importlib.metadata import version as _version

    release = _version("sklearn-convkernel")
except Exception:  # not installed
    release = "0.1.0"
version = ".".join(release.split(".")[:2])


def _have(module):
    return importlib.util.find_spec(module) is not None


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
    }

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
master_doc = "index"
html_theme = "alabaster"
html_static_path = []

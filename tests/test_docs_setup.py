"""The README's docs command imports the installed package, not the source tree."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF = os.path.join(ROOT, "docs", "conf.py")
MARKER = "# (end of the sys.path setup"


def test_docs_conf_imports_the_compiled_package_from_the_checkout_root():
    """``python3 -m sphinx ... docs`` from the root puts the root on sys.path;
    conf.py must drop it so that the gallery finds the compiled ``_core``."""
    with open(CONF) as f:
        text = f.read()
    assert MARKER in text
    setup = text.split(MARKER)[0]
    code = (
        "import sys\n"
        "sys.path.insert(0, '')\n"  # what python3 -m does
        f"__file__ = {CONF!r}\n"
        + setup
        + "\nimport sklearn_convkernel._core\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "SKLEARN_CONVKERNEL_DOCS_SRC"}
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().endswith("ok")

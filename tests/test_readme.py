"""Every Python snippet of README.md runs on its own, as shown."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _snippets():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_no_internal_issue_references():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    assert not re.search(r"\bissue \d+", text, flags=re.I)
    for name in ("CKNFeatures", "SupervisedCKNClassifier", "kervolution",
                 "KernelCache.load", ".save("):
        assert name in text, name


@pytest.mark.parametrize("index", range(len(_snippets())))
def test_readme_snippet_runs_on_its_own(index, tmp_path):
    code = _snippets()[index]
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, f"snippet {index}:\n{code}\n{res.stderr[-3000:]}"

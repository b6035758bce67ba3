"""The layer rule (pyproject.toml's import-linter contracts): the tree keeps it, and a backward import breaks it."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"


def lint(package_parent: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(package_parent), "PATH": str(LINT.parent)}
    return subprocess.run([str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=package_parent,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def copy_of_srum(tmp_path_factory) -> Path:
    """The package's Python files in a folder of their own, to break without touching the tree."""
    parent = tmp_path_factory.mktemp("layers")
    shutil.copytree(ROOT / "srum", parent / "srum", ignore=lambda d, names: [n for n in names if n.endswith(".safetensors")])
    return parent


def test_the_tree_keeps_the_layers(copy_of_srum):
    out = lint(copy_of_srum)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 kept, 0 broken" in out.stdout


@pytest.mark.parametrize("module, backward", [
    ("srum/models/janus/model.py", "from ...learner import objective  # noqa"),  # a model that knows the objective
    ("srum/learner/learner.py", "from .. import stages  # noqa"),  # the learner reaching up to the stages
    ("srum/config.py", "from . import models  # noqa"),  # the configuration is a leaf
])
def test_a_backward_import_breaks_them(copy_of_srum, module, backward):
    f = copy_of_srum / module
    original = f.read_text()
    try:
        f.write_text(original + f"\n{backward}\n")
        out = lint(copy_of_srum)
    finally:
        f.write_text(original)
    assert out.returncode != 0 and "BROKEN" in out.stdout.upper(), out.stdout

"""What we install and what we leave on `sys.path` must not shadow other projects' modules.

transformers >= 5.25 imports Hugging Face's top-level `kernels` package; a top-level `kernels`
of ours (round 1 had one) made `import transformers` models fail from our checkout and from
site-packages. These tests import transformers' model classes in fresh interpreters: once with
the checkout first on `sys.path` (how `python -m experiments.run` and pytest run), once with
k15-jax installed by pip into a target folder that comes first.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
# Model classes our tests and interop use; resolving each triggers transformers' lazy import
# of its modeling module, which is where hub_kernels imports `kernels`.
PROBE = """
import importlib.util, sys
import transformers
for name in ("Qwen2ForCausalLM", "LlamaForCausalLM", "SiglipVisionModel"):
    getattr(transformers, name)
spec = importlib.util.find_spec("kernels")
print("kernels from", spec.origin if spec else None)
"""


def _probe(path_first: Path, cwd: Path) -> str:
    code = f"import sys; sys.path.insert(0, {str(path_first)!r})\n" + PROBE
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_transformers_models_import_with_checkout_first_on_path():
    out = _probe(ROOT, ROOT)
    assert str(ROOT / "kernels") not in out


def test_checkout_has_no_generic_top_level_package_that_is_installed():
    # Every importable top-level name in the checkout: only `k15_jax` is ours to install.
    # `experiments` and `tests` are run from the checkout (python -m / pytest) and
    # must stay out of the installed set, which the next test checks.
    tops = {
        p.name
        for p in ROOT.iterdir()
        if p.is_dir() and (p / "__init__.py").exists() and not p.name.startswith(".")
    }
    assert "kernels" not in tops
    assert tops <= {"k15_jax", "experiments", "tests"}, tops


def test_pip_install_leaves_transformers_working(tmp_path):
    # Build from a copy of what packaging reads, so setuptools' build/ and egg-info stay
    # out of the checkout.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "k15_jax", src / "k15_jax", ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    installed = {p.name for p in target.iterdir() if not p.name.endswith((".dist-info", "bin"))}
    assert installed == {"k15_jax"}, f"top-level names installed: {sorted(installed)}"
    # The installed library carries its non-Python files (sandbox problems, the C helper).
    assert (target / "k15_jax/sandbox/problems/sum_array/problem.json").exists()
    assert (target / "k15_jax/kernels/flash_attention.py").exists()
    # From a folder outside the checkout, with the installed copy first on sys.path.
    out = _probe(target, tmp_path)
    assert "kernels from" in out and str(target) not in out.split("kernels from")[1]
    check = "import k15_jax.kernels as k, k15_jax; print(k15_jax.__file__)"
    proc = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {check}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().startswith(str(target))

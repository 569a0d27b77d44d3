"""The core install needs no scikit-learn, scipy or mnist1d (issue 10, item 11)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from nnrun.backends import get_backend
from nnrun.runtime.data import DataError
from nnrun.runtime.data import sources

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("sklearn", "scipy", "mnist1d", "matplotlib", "onnx", "onnxruntime")
# Core dependencies that only `nnrun data fetch` needs. The GPU machine lacks them: an import
# of pooch on the training path stopped every GPU test there at collection.
DOWNLOAD_ONLY = ("pooch", "requests")

# Blocks the heavy packages (an ImportError on import), then does what the quickstart does.
QUICKSTART_WITHOUT_HEAVY_PACKAGES = f"""
import sys
for name in {HEAVY + DOWNLOAD_ONLY!r}:
    sys.modules[name] = None
import numpy as np
import nnrun
from nnrun.backends import get_backend
from nnrun.runtime.data import load_dataset
from nnrun.compiler.frontend import check, load_spec
check(load_spec({str(ROOT / 'specs' / 'quickstart.yaml')!r}))
data = load_spec({str(ROOT / 'specs' / 'quickstart.yaml')!r}).spec.data
from pathlib import Path
dataset = load_dataset(data, spec_dir=Path('.'), seed=0)
assert len(dataset.test) == 360, len(dataset.test)
x = np.linspace(-3, 3, 7)
assert abs(get_backend("numpy").erf(x)[-1] - 0.9999779095030014) < 1e-15
import nnrun.cli, nnrun.data_cli, nnrun.runtime.train, nnrun.runtime.captured
"""


def test_quickstart_path_imports_no_heavy_package():
    result = subprocess.run([sys.executable, "-c", QUICKSTART_WITHOUT_HEAVY_PACKAGES],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_core_dependencies_leave_out_the_heavy_packages():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    for heavy in ("scikit-learn", "scipy", "mnist1d", "matplotlib"):
        assert heavy not in core
    assert any("scikit-learn" in d for d in project["optional-dependencies"]["datasets"])


def test_shipped_digits_equal_scikit_learns_split():
    datasets = pytest.importorskip("sklearn.datasets")
    selection = pytest.importorskip("sklearn.model_selection")
    bunch = datasets.load_digits()
    x_train, x_test, y_train, y_test = selection.train_test_split(
        bunch.images[:, None], bunch.target, test_size=0.2, random_state=0, stratify=bunch.target)
    shipped = sources.load_digits(None, Path("."))
    np.testing.assert_array_equal(shipped.x_train, x_train)
    np.testing.assert_array_equal(shipped.y_test, y_test)
    np.testing.assert_array_equal(shipped.x_test, x_test)
    np.testing.assert_array_equal(shipped.y_train, y_train)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_erf_without_scipy_is_exact(monkeypatch, dtype):
    backend = get_backend("numpy")
    monkeypatch.setattr(type(backend), "fast_erf", None)
    x = np.linspace(-6, 6, 2001).astype(dtype)
    got = backend.erf(x)
    expected = np.array([math.erf(v) for v in x.astype(np.float64)])
    assert got.dtype == dtype
    tolerance = 1e-15 if dtype == np.float64 else 1e-7
    np.testing.assert_allclose(got, expected.astype(dtype), rtol=tolerance, atol=0)


@pytest.mark.parametrize("dataset, module", [("blobs", "sklearn.datasets"),
                                             ("mnist1d", "mnist1d.data")])
def test_missing_generator_names_the_extra(monkeypatch, dataset, module):
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setattr(sources, "read_npz_cache", lambda path: None)
    with pytest.raises(DataError) as excinfo:
        sources.LOADERS[dataset](None, Path("."))
    message = str(excinfo.value)
    assert "\n" not in message and "pip install 'nnrun[datasets]'" in message


@pytest.mark.parametrize("dataset, module, classes", [("blobs", "sklearn", 3),
                                                      ("mnist1d", "mnist1d", 10)])
def test_validate_warns_where_a_datasets_generator_is_missing(monkeypatch, dataset, module,
                                                              classes, tmp_path):
    """validate said ok, then train refused the dataset for want of the package."""
    from invoking import invoke

    import importlib.util

    from nnrun.runtime.data import locations

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == module else found(name, *args))
    cache = tmp_path / "mnist1d-default.npz"  # none: a set once generated is read without it
    monkeypatch.setattr(locations, "mnist1d_cache_file", lambda: cache)
    spec = tmp_path / "s.yaml"
    spec.write_text(f"data: {{dataset: {dataset}}}\nmodel:\n  layers:\n"
                    f"    - {{type: flatten}}\n    - {{type: dense, units: {classes}}}\n")
    result = invoke("validate", spec)
    assert result.exit_code == 0, result.output
    assert f"{spec}:1:17: warning: data.dataset: generating it needs the" in result.stderr
    assert "pip install 'nnrun[datasets]'" in result.stderr
    assert invoke("validate", spec, "--strict").exit_code == 1
    cache.write_bytes(b"")
    assert "generating it needs" not in invoke("validate", spec).stderr or dataset != "mnist1d"


def test_a_generator_installed_but_failing_to_import_is_said_so(monkeypatch):
    """scikit-learn 1.3, built for NumPy 1, fails to import on NumPy 2: train said it was not
    installed, and the install it advised left it as it was (the install audit)."""
    import importlib

    from nnrun.runtime.data import DataError
    from nnrun.runtime.data.sources import import_extra

    pytest.importorskip("sklearn")
    real = importlib.import_module

    def broken(name, *args):
        if name.startswith("sklearn"):
            raise ImportError("cannot import name 'ComplexWarning' from 'numpy.core.numeric'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(DataError) as raised:
        import_extra("blobs")
    assert "installed here but failing to import (cannot import name 'ComplexWarning'" \
        in str(raised.value) and str(raised.value).endswith("pip install -U scikit-learn")

# Import names whose distribution is named otherwise.
DISTRIBUTION_OF = {"yaml": "pyyaml", "sklearn": "scikit-learn", "cupy": "cupy-cuda13x",
                   "cupyx": "cupy-cuda13x", "pydantic_core": "pydantic-core",
                   "cuda": "cupy-cuda13x",  # cuda.pathfinder: CuPy 14's own dependency
                   "google": "protobuf"}


def test_every_third_party_import_is_declared():
    import ast
    import re

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [
        requirement for extra in project["optional-dependencies"].values() for requirement in extra]
    declared = {re.split(r"[<>=!\[; ]", requirement)[0].lower() for requirement in requirements}
    imported = set()
    for folder in ("compiler", "runtime", "backends", "nnrun"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    imported |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    imported.add(node.module.split(".")[0])
    third_party = imported - set(sys.stdlib_module_names) - {"nnrun"}
    undeclared = {name for name in third_party
                  if DISTRIBUTION_OF.get(name, name).lower() not in declared}
    assert not undeclared


# What the GPU machine lacks of what the tests here import: its preinstalled set (see
# ../shared/device/stage) plus the staged wheels has no downloader, JSON Schema checker, ONNX
# or MPI. Every GPU test is collected there from the whole tree (`pytest -m gpu tests`), so one
# module that imports them unguarded stops the run before any GPU test starts.
NOT_ON_THE_GPU_MACHINE = ("pooch", "requests", "jsonschema", "onnx", "onnxruntime", "mpi4py")

WITHOUT_THOSE_PACKAGES = f"""
import importlib.util, sys
BLOCKED = {NOT_ON_THE_GPU_MACHINE!r}


class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Absent())
found = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name.split(".")[0] in BLOCKED else found(name, package))
"""


def test_the_gpu_tests_are_collected_without_the_packages_the_gpu_machine_lacks(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(WITHOUT_THOSE_PACKAGES)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "--collect-only", "-p",
         "no:cacheprovider", "tests"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert result.returncode == 0 and "error" not in result.stdout.lower(), result.stdout[-3000:]
    assert "tests collected" in result.stdout

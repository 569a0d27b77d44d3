import os

# torch's OpenMP threads otherwise spin after each op and slow NumPy's BLAS in the same process.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Hypothesis keeps an example database and caches in ./.hypothesis by default: the suite writes
# nothing outside its temporary directories, so it runs without the database and keeps the
# caches in a temporary directory of its own (the libraries' caches too, below).
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

from hypothesis import settings  # noqa: E402
from hypothesis.configuration import set_hypothesis_home_dir  # noqa: E402

_SUITE_TEMP = tempfile.mkdtemp(prefix="nnrun-tests-")
atexit.register(shutil.rmtree, _SUITE_TEMP, ignore_errors=True)
set_hypothesis_home_dir(_SUITE_TEMP)
settings.register_profile("nnrun", database=None)
settings.load_profile("nnrun")

# The libraries the tests call directly (onnxruntime's sessions, matplotlib) keep files of
# their own under XDG_CACHE_HOME, else ~/.cache, and MPLCONFIGDIR, else ~/.config/matplotlib:
# in a temporary directory of the suite's, where the environment chose no place.
for _variable in ("XDG_CACHE_HOME", "MPLCONFIGDIR"):
    os.environ.setdefault(_variable, os.path.join(_SUITE_TEMP, _variable.lower()))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def cupy_backend():
    """The CuPy backend for GPU tests; they skip, saying why, without CuPy or a CUDA device."""
    from nnrun.backends import BackendUnavailable, get_backend

    try:
        return get_backend("cupy")
    except BackendUnavailable as error:
        pytest.skip(str(error))

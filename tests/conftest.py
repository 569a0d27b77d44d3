import os

# torch's OpenMP threads otherwise spin after each op and slow NumPy's BLAS in the same process.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Hypothesis keeps an example database in ./.hypothesis by default: the suite writes nothing
# outside its temporary directories, so it runs without one.
from hypothesis import settings  # noqa: E402

settings.register_profile("nnrun", database=None)
settings.load_profile("nnrun")

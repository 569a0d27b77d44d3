import os

# torch's OpenMP threads otherwise spin after each op and slow NumPy's BLAS in the same process.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

"""Backends: `get_backend("numpy" | "cupy")`. CuPy is imported only when asked for."""

from __future__ import annotations


class BackendUnavailable(Exception):
    pass


def get_backend(name: str = "numpy"):
    if name == "numpy":
        from .numpy_backend import NumpyBackend

        return NumpyBackend()
    if name == "cupy":
        try:
            from .cupy_backend import CupyBackend
        except ImportError as error:
            raise BackendUnavailable(
                f"backend 'cupy' is not available ({error}); install nnrun[cupy] on a machine "
                "with a CUDA GPU, or use --backend numpy"
            ) from None
        return CupyBackend()
    raise BackendUnavailable(f"unknown backend '{name}'; use numpy or cupy")


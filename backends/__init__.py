"""Backends: `get_backend("numpy" | "cupy")`. CuPy is imported only when asked for."""

from __future__ import annotations


class BackendUnavailable(Exception):
    """CuPy missing, no usable CUDA device, or an unknown backend name: one line for the user."""


class CaptureUnavailable(Exception):
    """Why a backend cannot capture a step as a device graph here, known before trying."""


def get_backend(name: str = "numpy"):
    if name == "numpy":
        from .numpy_backend import NumpyBackend

        return NumpyBackend()
    if name == "cupy":
        try:
            from .cupy_backend import CupyBackend
        except ImportError as error:
            raise BackendUnavailable(
                f"backend 'cupy' needs CuPy, which is not installed ({error}): install "
                "nnrun[cuda13] (CUDA 13 drivers) or nnrun[cuda12] (CUDA 12), or use --backend numpy"
            ) from None
        return CupyBackend()
    raise BackendUnavailable(f"unknown backend '{name}'; use numpy or cupy")

